"""Predicting folders of cases to label-map files: what ``brainseg-predict`` does.

:func:`predict_cases` takes a config and paths, not a command line
(:mod:`brainseg_d2.cli.predict` is the command). Each case becomes
``<output>/<case>_pred.nii.gz`` (for one case, ``output`` may itself end with
``.nii.gz``) on the input's voxel grid, labels in the case's own convention
(BraTS 2023+ names: ET = 3; 2013-2021 names: ET = 4; a Decathlon task: 3; see
:func:`~brainseg_d2.inference.volume_inputs.case_convention`) unless
``label_convention`` names one; a convention with a class the model cannot write
is a bad case. Everything that can be checked without the model is checked first
(cases, channels, file headers, label conventions, existing outputs; every bad
case is listed, one line each), so a bad input costs no model loading and leaves
nothing behind. Each file is written under a temporary name and renamed into
place: an output is complete or absent, so an interrupted run resumes with
``existing="skip"``. Only the ``<case>_pred.nii.gz`` files (or the one output
file) are ever written or replaced, and never when one of them would be an input
file.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainseg_d2.data.sources import Case, case_error, find_brats_cases, find_cases
from brainseg_d2.data.sources.decathlon import is_task_input, task_folder
from brainseg_d2.labels import (
    check_nothing_lost,
    check_writable,
    get_target,
    prediction_convention,
    register_convention,
    register_dataset_conventions,
    resolve_convention,
)
from brainseg_d2.structures import DatasetInfo
from brainseg_d2.utils.cli import ProblemList
from brainseg_d2.utils.paths import OutputError, check_not_input

__all__ = [
    "EXISTING",
    "OUTPUT_SUFFIXES",
    "check_case",
    "check_outputs",
    "output_paths",
    "predict_cases",
    "write_image",
]

OUTPUT_SUFFIXES = (".nii.gz", ".nii")
#: Image files that the predictor does not write: an --output named so is an error.
OTHER_IMAGE_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".png", ".jpg", ".tif")
#: What to do with outputs that exist: refuse to run, replace them, or leave those
#: cases alone (resume an interrupted run).
EXISTING = ("refuse", "overwrite", "skip")


def output_paths(cases: Sequence[Case], output: str | os.PathLike) -> dict[str, Path]:
    """Case id -> output file; ``output`` is a file name only for a single case.

    Raises:
        ValueError: a file name for several cases.
    """
    output = Path(output)
    if output.name.lower().endswith(OTHER_IMAGE_SUFFIXES):  # not a folder name either
        raise ValueError(f"--output {output}: predictions are written as NIfTI; give a .nii.gz "
                         "or .nii file name, or a folder")
    if output.name.lower().endswith(OUTPUT_SUFFIXES):
        if len(cases) != 1:
            raise ValueError(
                f"--output {output} is a file name but the input holds {len(cases)} cases; "
                "give a folder"
            )
        return {cases[0].case_id: output}
    paths = {case.case_id: output / f"{case.case_id}_pred.nii.gz" for case in cases}
    for case_id, path in paths.items():  # a case id is never a way out of the folder
        if not os.path.abspath(path).startswith(os.path.join(os.path.abspath(output), "")):
            raise ValueError(f"case id {case_id!r} would write {path}, outside --output {output}")
    return paths


def check_outputs(
    cases: Sequence[Case], outputs: Mapping[str, Path], root: str | os.PathLike | None = None
) -> None:
    """Refuse outputs that are, or lie inside, the input (``root``, a case's folder or
    file), or that are not files.

    Raises:
        OutputError: naming the output and the input.
    """
    files = [p for case in cases for p in case.files()]
    inputs = [*files, *dict.fromkeys(str(Path(f).parent) for f in files), root]
    for path in outputs.values():
        check_not_input(path, inputs, "--output")
        if os.path.lexists(path) and not path.is_file():
            raise OutputError(f"output {path} exists and is not a file; nothing was written")
        parent = next((p for p in path.parents if os.path.lexists(p)), None)
        if parent is not None and not parent.is_dir():
            raise OutputError(f"cannot write {path}: {parent} is a file, not a folder")


def check_case(case: Case, channels: Sequence[str]) -> None:
    """Pre-flight for one case: every channel present, headers readable, 3D, one grid.

    Raises:
        VolumeError: naming the case and the channel or file.
    """
    case.check(channels, all_files=False)


def write_image(image, path: Path) -> None:
    """Write compressed, under a temporary name renamed into place (complete or absent)."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = next(s for s in OUTPUT_SUFFIXES if path.name.lower().endswith(s))
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.partial-{uuid.uuid4().hex[:8]}{suffix}")
    try:
        sitk.WriteImage(image, str(tmp), True)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dataset_info(cfg, dataset_info: str | os.PathLike | None) -> DatasetInfo:
    from brainseg_d2.inference.dataset_info import dataset_info_from_cfg

    if dataset_info:
        return DatasetInfo.load(dataset_info)
    from brainseg_d2.data.datasets import dataset_root, register_all

    register_all(dataset_root(cfg.BRAINSEG.DATASET_ROOT))
    return dataset_info_from_cfg(cfg)


def predict_cases(
    cfg,
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    dataset_info: str | os.PathLike | None = None,
    batch_size: int | None = None,
    label_convention: str | None = None,
    existing: str = "refuse",
    skip_bad: bool = False,
    progress: bool = True,
    layout: str = "brats",
    image_globs: Sequence[str] = (),
) -> int:
    """Predict every case of ``input`` into label-map files (module doc).

    Args:
        cfg: frozen config with ``MODEL.WEIGHTS`` (:func:`brainseg_d2.config.setup_cfg`).
        input: a BraTS case folder, or a folder of case folders; a folder of
            any volume files with ``layout="pairs"``; a CSV manifest with ``csv``.
        output: a folder (``<case>_pred.nii.gz`` per case), or a ``.nii.gz`` file
            for one case.
        dataset_info: path of the training dataset's ``dataset.json``;
            None: the registered ``DATASETS.TRAIN[0]`` under the datasets root.
        batch_size: slices per forward pass (None: ``BRAINSEG.INFERENCE.BATCH_SIZE``).
        label_convention: write labels in this convention (a built-in name or a
            JSON/YAML file); None: each case's own.
        existing: one of :data:`EXISTING`.
        skip_bad: predict the good cases and list the bad ones on stderr (False:
            a case found bad before predicting, from its headers, is an error and
            nothing is predicted; one whose voxels turn out bad, e.g. a truncated
            file, stops the run there, the cases before it written).
        progress: a progress bar for several cases.
        layout: how cases lie on disk: ``brats``, ``decathlon`` (a Decathlon or
            nnU-Net task folder), ``pairs`` (``image_globs``, channel names as the
            model's), ``csv`` (``image_<channel>`` columns) or ``auto``
            (:func:`~brainseg_d2.data.sources.find_cases`). Outside ``brats`` and
            ``decathlon`` a case's label convention is the training dataset's.
        image_globs: ``NAME=GLOB`` per channel, for ``pairs``.

    Returns:
        0, or 1 when ``skip_bad`` left cases out.

    Raises:
        ValueError: bad input (every bad case listed, :class:`ProblemList`), or an
            output that exists with ``existing="refuse"``.
    """
    from tqdm import tqdm

    from brainseg_d2.inference.volume_inputs import case_convention
    from brainseg_d2.inference.volume_predictor import VolumePredictor

    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    info = None  # read when needed: resuming a finished run needs no dataset at all
    root = input  # what no output may lie in
    if layout == "auto" and is_task_input(input):
        layout = "decathlon"
    if layout == "brats":
        cases = find_brats_cases(input)
    elif layout == "decathlon":  # labelled as its dataset.json says, or as asked
        asked = None
        if label_convention:  # a task of other labels is read by the one written
            asked = register_convention(resolve_convention(label_convention)).name
        cases = find_cases(input, layout, label_convention=asked)
        root = task_folder(input)[0]  # never write into the task (its labelsTr above all)
    else:  # written as the training data was labelled, unless asked otherwise
        info = _dataset_info(cfg, dataset_info)
        register_dataset_conventions(info.to_json())  # a user's own, known by name
        own = "brats2021" if info.label_convention == "mixed" else info.label_convention
        cases = find_cases(input, layout, image_globs=image_globs, label_convention=own)
    outputs = output_paths(cases, output)
    check_outputs(cases, outputs, root)
    present = [c for c in cases if os.path.lexists(outputs[c.case_id])]
    if present and existing == "skip":
        print(f"skipping {len(present)} of {len(cases)} cases whose output exists")
        cases = [c for c in cases if c not in present]
        if not cases:
            return 0
    elif present and existing == "refuse":
        first = outputs[present[0].case_id]
        more = f" (and {len(present) - 1} more)" if len(present) > 1 else ""
        raise ValueError(
            f"output {first}{more} exists; pass --overwrite to replace it, "
            "or --skip-existing to resume"
        )
    info = info or _dataset_info(cfg, dataset_info)
    channels = list(dict.fromkeys(info.preprocess_options.channels))
    register_dataset_conventions(info.to_json())
    target = get_target(info.target)
    requested = None
    if label_convention:
        requested = resolve_convention(label_convention)
        check_writable(target, requested)
        check_nothing_lost(target, info.label_convention, requested)
    bad: dict[str, str] = {}
    for case in cases:  # every case, so that every bad one is listed
        try:
            check_case(case, channels)
            prediction_convention(
                target, case_convention(case, info.label_convention), requested
            )
        except (ValueError, OSError) as exc:
            bad[case.case_id] = case_error(case, exc)
    if bad and (not skip_bad or len(bad) == len(cases)):
        extra = ["no case to predict"] if skip_bad else []
        raise ProblemList([*bad.values(), *extra], what="bad cases")
    cases = [c for c in cases if c.case_id not in bad]
    predictor = VolumePredictor(
        cfg, dataset_info=info, batch_size=batch_size, label_convention=requested
    )
    single_case = len(cases) == 1 and Path(input).resolve().name == cases[0].case_id
    bar = tqdm(cases, desc="predicting", unit="case", disable=single_case or not progress)
    for case in bar:
        try:
            prediction = predictor.predict(case)
        except ValueError as exc:  # bad voxels (NaN, truncated file, ...)
            if not skip_bad:
                raise ValueError(case_error(case, exc)) from None
            bad[case.case_id] = case_error(case, exc)
            continue
        write_image(prediction.label_image, outputs[case.case_id])
        (print if single_case else tqdm.write)(f"wrote {outputs[case.case_id]}")
    for message in bad.values():
        print(f"skipped: {message}", file=sys.stderr)
    return 1 if bad else 0
