"""``brainseg-predict``: label maps for BraTS case folders with a trained model.

::

    brainseg-predict --config-file CFG --input CASE_DIR --output OUT MODEL.WEIGHTS model.pth
    brainseg-predict --config-file CFG --input FOLDER_OF_CASES --output OUT_DIR \\
        --dataset-info datasets/brats/dataset.json --batch-size 8 MODEL.DEVICE cuda

Each case becomes ``OUT/<case>_pred.nii.gz`` (for one case, ``OUT`` may itself end
with ``.nii.gz``) on the input's voxel grid, labels in the case's own convention
(BraTS 2023+ names: ET = 3; 2018-2021 names: ET = 4; see
:func:`~brainseg_d2.inference.volume_predictor.case_convention`) unless
``--label-convention`` names one (a built-in name or a JSON/YAML file); a
convention with a class the model cannot write is a bad case.
Everything that can be checked without the model is checked first (cases,
channels, file headers, label conventions, existing outputs; every bad case is
listed, one line each), so a bad input costs no model loading and leaves nothing
behind. The weights must fit the model exactly
(:func:`brainseg_d2.checkpoint.load_strict`).
Each file is written under a temporary name and renamed into place: an output is
complete or absent, so an interrupted run resumes with ``--skip-existing``.

Only the ``<case>_pred.nii.gz`` files (or the one ``--output`` file) are ever
written or replaced (``--overwrite``), and never when one of them would be an
input file.

Exit status: 0 success; 1 some cases skipped by ``--skip-bad`` (the others were
predicted), or a system error; 2 bad input/config, bad weights or refused
overwrite; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from brainseg_d2.data.sources import Case, case_error, find_brats_cases
from brainseg_d2.labels import (
    CONVENTIONS,
    check_writable,
    get_target,
    prediction_convention,
    register_dataset_conventions,
    resolve_convention,
)
from brainseg_d2.utils.cli import (
    ArgumentParser,
    ProblemList,
    print_error,
    quiet_third_party_warnings,
)
from brainseg_d2.utils.paths import OutputError, check_not_input

OUTPUT_SUFFIXES = (".nii.gz", ".nii")


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-predict``."""
    p = ArgumentParser(
        prog="brainseg-predict",
        description="Predict tumour label maps for BraTS case folders (whole volumes).",
    )
    p.add_argument("--config-file", required=True, metavar="CFG", help="model config (YAML)")
    p.add_argument(
        "--input", required=True, help="a BraTS case folder, or a folder of case folders"
    )
    p.add_argument(
        "--dataset-info",
        metavar="JSON",
        help="dataset.json of the training dataset (default: from the registered "
        "DATASETS.TRAIN[0] under the datasets root)",
    )
    p.add_argument(
        "--output",
        required=True,
        help="output folder (<case>_pred.nii.gz per case), or a .nii.gz file for one case",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="slices per forward pass (default: BRAINSEG.INFERENCE.BATCH_SIZE)",
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--overwrite", action="store_true", help="replace existing <case>_pred.nii.gz outputs"
    )
    what.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave cases whose output exists alone (resume an interrupted run)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="predict the good cases, list the bad ones, exit 1 (default: any bad case "
        "is an error and nothing is predicted)",
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="write the raw masks (score threshold only) instead of post-processed ones",
    )
    p.add_argument(
        "--label-convention",
        metavar="NAME_OR_FILE",
        help=f"write labels in this convention: one of {sorted(CONVENTIONS)} or a .json/.yaml "
        "convention file (default: each case's own, from its BraTS file names, else the "
        "training dataset's)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar for a folder of cases"
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cuda",
    )
    return p


def setup_cfg(args: argparse.Namespace):
    """Frozen config from ``--config-file``, the trailing opts and ``--raw``.

    Raises:
        ValueError: bad config file or key, or empty ``MODEL.WEIGHTS``.
    """
    from brainseg_d2.config import setup_cfg as config_setup

    raw = ["BRAINSEG.POSTPROCESS.ENABLED", False] if args.raw else []
    cfg = config_setup(args.config_file, [*args.opts, *raw])
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model_final.pth`")
    return cfg


def output_paths(cases: Sequence[Case], output: str | os.PathLike) -> dict[str, Path]:
    """Case id -> output file; ``output`` is a file name only for a single case.

    Raises:
        ValueError: a file name for several cases.
    """
    output = Path(output)
    if output.name.lower().endswith(OUTPUT_SUFFIXES):
        if len(cases) != 1:
            raise ValueError(
                f"--output {output} is a file name but the input holds {len(cases)} cases; "
                "give a folder"
            )
        return {cases[0].case_id: output}
    return {case.case_id: output / f"{case.case_id}_pred.nii.gz" for case in cases}


def check_outputs(cases: Sequence[Case], outputs: Mapping[str, Path]) -> None:
    """Refuse outputs that are input files (or inside DICOM folders), or not files.

    Raises:
        OutputError: naming the output and the input.
    """
    inputs = [p for case in cases for p in case.files()]
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


def _dataset_info(args: argparse.Namespace, cfg) -> Mapping:
    from brainseg_d2.inference.volume_predictor import dataset_info_from_cfg, load_dataset_info

    if args.dataset_info:
        return load_dataset_info(args.dataset_info)
    from brainseg_d2.data.datasets import dataset_root, register_all

    register_all(dataset_root(cfg.BRAINSEG.DATASET_ROOT))
    return dataset_info_from_cfg(cfg)


def run(args: argparse.Namespace) -> int:
    """Predict every case of ``args.input``; raises ValueError on bad input.

    Returns:
        0, or 1 when ``--skip-bad`` left cases out (they are listed on stderr).
    """
    from tqdm import tqdm

    from brainseg_d2.inference.volume_predictor import (
        VolumePredictor,
        case_convention,
        preprocess_options_from_info,
    )

    cfg = setup_cfg(args)
    cases = find_brats_cases(args.input)
    outputs = output_paths(cases, args.output)
    check_outputs(cases, outputs)
    existing = [c for c in cases if os.path.lexists(outputs[c.case_id])]
    if existing and args.skip_existing:
        print(f"skipping {len(existing)} of {len(cases)} cases whose output exists")
        cases = [c for c in cases if c not in existing]
        if not cases:
            return 0
    elif existing and not args.overwrite:
        first = outputs[existing[0].case_id]
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ValueError(
            f"output {first}{more} exists; pass --overwrite to replace it, "
            "or --skip-existing to resume"
        )
    info = _dataset_info(args, cfg)
    channels = list(dict.fromkeys(preprocess_options_from_info(info).preprocess().channels))
    register_dataset_conventions(info)
    target = get_target(info.get("target", "labels"))
    requested = None
    if args.label_convention:
        requested = resolve_convention(args.label_convention)
        check_writable(target, requested)
    bad: dict[str, str] = {}
    for case in cases:  # every case, so that every bad one is listed
        try:
            check_case(case, channels)
            prediction_convention(
                target, case_convention(case, info.get("label_convention", "brats2021")), requested
            )
        except (ValueError, OSError) as exc:
            bad[case.case_id] = case_error(case, exc)
    if bad and (not args.skip_bad or len(bad) == len(cases)):
        extra = ["no case to predict"] if args.skip_bad else []
        raise ProblemList([*bad.values(), *extra], what="bad cases")
    cases = [c for c in cases if c.case_id not in bad]
    predictor = VolumePredictor(
        cfg, dataset_info=info, batch_size=args.batch_size, label_convention=requested
    )
    single_case = len(cases) == 1 and Path(args.input).resolve().name == cases[0].case_id
    bar = tqdm(cases, desc="predicting", unit="case", disable=single_case or args.no_progress)
    for case in bar:
        try:
            prediction = predictor.predict(case)
        except ValueError as exc:  # bad voxels (NaN, truncated file, ...)
            if not args.skip_bad:
                raise ValueError(case_error(case, exc)) from None
            bad[case.case_id] = case_error(case, exc)
            continue
        write_image(prediction.label_image, outputs[case.case_id])
        (print if single_case else tqdm.write)(f"wrote {outputs[case.case_id]}")
    for message in bad.values():
        print(f"skipped: {message}", file=sys.stderr)
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``brainseg-predict``; returns 0, 1 (cases skipped), 2 (bad input), 130 (interrupted)."""
    quiet_third_party_warnings()
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except ValueError as exc:
        print_error(exc)
        return 2
    except OSError as exc:
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run again with --skip-existing to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
