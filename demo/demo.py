#!/usr/bin/env python
"""Detectron2-style demo: overlays of predicted tumour masks on MRI.

Two kinds of input:

* 2D slice images (PNG/JPEG files or globs, e.g. a converted dataset's
  ``images/val/<volume>/*.png``, N channel tiles): the model on each slice,
  resized as ``DefaultPredictor`` does; the dense head's category masks at the
  score threshold drawn as the case pictures are (``BRAINSEG.MASK_SOURCE``
  semantic), else ``Visualizer.draw_instance_predictions``, into ``--output``;
* a case: a BraTS case folder (or a folder of them; a Decathlon or nnU-Net task), or
  one volume's channel files (``*_flair.nii.gz *_t1ce.nii.gz ...``, or in the
  dataset's channel order): ``VolumePredictor`` on the whole volume, then
  ``<output>/<case>/slice_<s>.png`` (ground truth | prediction), ``montage.png``
  and ``volume.gif``. Ground truth comes from ``--gt`` or a case folder's seg file.

::

    python demo/demo.py --config-file CFG --output out/ \\
        --input datasets/phantom/images/val/X/*.png MODEL.WEIGHTS model_final.pth
    python demo/demo.py --config-file CFG --input BraTS2021_00000/ --output out/ \\
        --dataset-info datasets/brats/dataset.json MODEL.WEIGHTS model_final.pth

Config overrides are trailing ``KEY VALUE`` pairs, as for every command here, or
follow ``--opts`` as in Detectron2's demo. The weights must fit the model exactly
(every parameter, with its shape; :func:`brainseg_d2.checkpoint.load_strict`).
Pictures never replace an input or a file of the user's: an output that is or lies
in an input is an error, a 2D ``--output`` file must not exist, and a folder's
pictures replace only earlier pictures of this script (:data:`MARKER` lists them;
a case folder is re-drawn whole). Needs the package importable (``pip install -e .``).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from brainseg_d2.utils.cli import ArgumentParser, print_error, quiet_third_party_warnings

quiet_third_party_warnings()  # before torch and Detectron2 are imported: they warn on import

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from brainseg_d2.config import setup_cfg as brainseg_setup_cfg  # noqa: E402
from brainseg_d2.data.ground_truth import label_map_masks  # noqa: E402
from brainseg_d2.data.sources import BRATS_STYLES, Case, find_cases, is_task_input  # noqa: E402
from brainseg_d2.data.volume_io import VolumeError  # noqa: E402
from brainseg_d2.engine.cfg_checks import check_cfg_values  # noqa: E402
from brainseg_d2.labels import detect_convention, get_target  # noqa: E402
from brainseg_d2.postprocessing import PostprocessParams, masks_and_seeds_from_output  # noqa: E402
from brainseg_d2.structures import DatasetInfo  # noqa: E402
from brainseg_d2.utils.paths import (  # noqa: E402
    check_not_input,
    check_own_files,
    check_replaceable,
    is_empty_folder,
    record_own_files,
    write_marker,
)
from brainseg_d2.visualization import (  # noqa: E402
    auto_scale,
    display_image,
    draw_instances,
    make_metadata,
    overlay_masks,
    render_prediction,
)

logger = logging.getLogger("brainseg_d2.demo")

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def get_parser() -> ArgumentParser:
    """Command-line interface of ``demo/demo.py``."""
    p = ArgumentParser(description="brainseg_d2 demo: tumour overlays on MRI")
    p.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    p.add_argument("--input", nargs="+", required=True,
                   help="2D slice images or globs; or a case folder; or one volume's channel files")
    p.add_argument("--output", required=True, help="output folder (or file, for one 2D image)")
    p.add_argument("--confidence-threshold", type=float,
                   help="minimum score of shown pixels (dense head) or instances: "
                   "BRAINSEG.POSTPROCESS.SCORE_THRESH for every category, and "
                   "ROI_HEADS.SCORE_THRESH_TEST (default: the config's post-processing ones)")
    p.add_argument("--dataset-info", metavar="JSON",
                   help="dataset.json of the training dataset (categories, channels, label "
                   "convention); default: the registered DATASETS.TRAIN[0]")
    p.add_argument("--gt", metavar="LABELS", help="ground-truth label map of the case")
    p.add_argument("--raw", action="store_true", help="cases: draw masks before post-processing")
    p.add_argument("--no-gif", action="store_true", help="cases: skip the animated GIF")
    p.add_argument("--composite", action="store_true",
                   help="draw on the RGB channel composite instead of the first channel in grey")
    p.add_argument("--opts", dest="opts_flag", default=[], nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs, as Detectron2's demo takes them; "
                   "the same as trailing KEY VALUE pairs")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model_final.pth (also after --input)")
    return p


#: A config key (``MODEL.WEIGHTS``): where trailing overrides start after ``--input``.
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Arguments of :func:`get_parser`, with every ``KEY VALUE`` override in ``opts``.

    ``--input`` takes several paths, so overrides that follow it arrive among the
    inputs: they start at the first config key.
    """
    args = get_parser().parse_args(argv)
    start = next((i for i, p in enumerate(args.input) if CONFIG_KEY.fullmatch(p)), None)
    if start is not None:
        args.opts = [*args.input[start:], *args.opts]
        args.input = args.input[:start]
        if not args.input:
            get_parser().error("--input needs at least one path before the config overrides")
    args.opts = [*args.opts, *args.opts_flag]
    return args


def setup_cfg(args: argparse.Namespace):
    """Frozen config from ``--config-file`` and ``--opts``; one score threshold for both paths.

    Raises:
        ValueError: bad config file or key, empty ``MODEL.WEIGHTS``, or a value that
            cannot work here (``MODEL.DEVICE cuda`` with no GPU, ...).
    """
    threshold = []
    if args.confidence_threshold is not None:
        threshold = ["BRAINSEG.POSTPROCESS.SCORE_THRESH", args.confidence_threshold,
                     "BRAINSEG.POSTPROCESS.CATEGORY_SCORE_THRESH", "()"]  # one for all
    cfg = brainseg_setup_cfg(args.config_file, [*args.opts, *threshold], freeze=False)
    # The 2D overlays show what volume inference keeps.
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.BRAINSEG.POSTPROCESS.SCORE_THRESH
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS model_final.pth`")
    check_cfg_values(cfg, SimpleNamespace(config_file=args.config_file, opts=args.opts,
                                          eval_only=True))  # fmt: skip
    return cfg


def read_slice(path: str, num_channels: int):
    """A 2D slice as ``(H, W, N)`` uint8, as a viewer shows it (EXIF orientation applied).

    A converted slice (in ``images/<split>/<volume>/`` under a ``dataset.json``) holds N
    channel tiles; another 8-bit image is repeated when grey, else must have N channels.

    Raises:
        ValueError: the file cannot give ``num_channels`` 8-bit channels (the model's input).
    """
    from brainseg_d2.data.io.png import read_channel_png

    parents = Path(path).resolve().parents
    if num_channels > 1 and len(parents) > 3 and (parents[3] / "dataset.json").is_file():
        return read_channel_png(path, num_channels)  # the converter's channel tiles
    image = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ValueError(f"{path}: cannot read image")
    if image.dtype != np.uint8:
        raise ValueError(f"{path}: {image.dtype} pixels; the model reads 8-bit slices "
                         "(convert the images with brainseg-convert)")  # fmt: skip
    image = image[..., None] if image.ndim == 2 else image[..., 2::-1]  # BGR -> RGB
    if image.shape[2] == 1:
        image = np.repeat(image, num_channels, axis=2)
    if image.shape[2] != num_channels:
        raise ValueError(
            f"{path}: {image.shape[2]} channels but the model takes {num_channels} "
            "(give slices converted by brainseg-convert)"
        )
    return image


def dataset_info(args: argparse.Namespace, cfg, *, required: bool) -> DatasetInfo | None:
    """dataset.json from --dataset-info, else from the registered training dataset."""
    from brainseg_d2.data.datasets import dataset_root, register_all
    from brainseg_d2.inference.dataset_info import dataset_info_from_cfg

    if args.dataset_info:
        return DatasetInfo.load(args.dataset_info)
    register_all(dataset_root(cfg.BRAINSEG.DATASET_ROOT))
    try:
        return dataset_info_from_cfg(cfg)
    except ValueError:
        if required:
            raise
        return None


def category_names(info: DatasetInfo | None, num_classes: int) -> list[str]:
    """Category names from dataset info; else the target with that many categories."""
    if info is not None:
        return get_target(info.target).category_names
    guess = {1: "binary", 3: "labels"}.get(num_classes)
    if guess is None:
        return [f"class {i}" for i in range(num_classes)]
    logger.warning("no dataset info: assuming target '%s' for the class names", guess)
    return get_target(guess).category_names


def split_inputs(inputs: Sequence[str]) -> tuple[str, list[str]]:
    """(kind, paths): ``case`` (folders), ``volume`` (channel files) or ``images``."""
    if any(os.path.isdir(p) for p in inputs):
        if not all(os.path.isdir(p) for p in inputs):
            raise ValueError("give either case folders or files, not both")
        return "case", list(inputs)
    paths: list[str] = []
    for pattern in inputs:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise ValueError(f"--input {pattern}: no such file")
        paths += matches
    if all(p.lower().endswith(VOLUME_SUFFIXES) for p in paths):
        return "volume", paths
    if any(p.lower().endswith(VOLUME_SUFFIXES) for p in paths):
        raise ValueError("give either 2D images or volume files, not both")
    return "images", paths


def volume_case(paths: Sequence[str], channels: Sequence[str], convention: str) -> Case:
    """A Case from one volume's channel files: BraTS names, else the dataset's channel order."""
    by_suffix = {}
    for _, (sep, suffixes) in BRATS_STYLES.items():
        for suffix, logical in suffixes.items():
            by_suffix[f"{sep}{suffix}"] = logical
    stems = [Path(p).name.split(".")[0] for p in paths]
    found: dict[str, str] = {}
    case_id = stems[0]
    for path, stem in zip(paths, stems):
        for ending, logical in by_suffix.items():
            if stem.endswith(ending) and logical != "seg":
                found[logical] = path
                case_id = stem[: -len(ending)]
    if not set(channels) <= set(found):
        if len(paths) != len(channels):
            raise ValueError(
                f"cannot tell which file is which channel: name them <case>_<channel>.nii.gz "
                f"or give {len(channels)} files in the order {list(channels)}"
            )
        found = dict(zip(channels, paths))
    return Case(case_id, case_id, found, None, convention)


#: Lists the pictures this script wrote into a folder; only those are ever replaced.
MARKER = ".brainseg-pictures"
TOOL = "demo/demo.py"


def run_images(args: argparse.Namespace, cfg, paths: Sequence[str]) -> int:
    import torch
    from detectron2.data import transforms as T

    from brainseg_d2.data.transforms import apply_image_transform, image_to_tensor
    from brainseg_d2.inference.ensemble import load_model

    out = Path(args.output)
    to_folder = len(paths) > 1 or out.is_dir() or not out.suffix
    targets = [out / f"{Path(p).stem}.png" if to_folder else out for p in paths]
    for target in targets:
        check_not_input(target, paths, "--output")
    if to_folder:
        check_own_files(out, [t.name for t in targets], MARKER, TOOL, "--output")
    elif os.path.lexists(out):
        raise ValueError(f"--output {out} exists; nothing was written: choose another file")
    images = [read_slice(path, len(cfg.MODEL.PIXEL_MEAN)) for path in paths]  # bad input first
    info = dataset_info(args, cfg, required=False)
    names = category_names(info, cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    metadata = make_metadata(names)
    model = load_model(cfg)
    # What volume prediction reads: the dense head's category masks (BRAINSEG.MASK_SOURCE
    # semantic) at the score threshold, drawn as the case pictures are; else the instances.
    dense = cfg.BRAINSEG.MASK_SOURCE == "semantic"
    params = PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS)
    resize = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    if to_folder:
        out.mkdir(parents=True, exist_ok=True)
        record_own_files(out, [t.name for t in targets], MARKER, TOOL)
    for path, target, image in zip(paths, targets, images):
        resized = apply_image_transform(resize.get_transform(image), image)
        inputs = {"image": image_to_tensor(resized), "height": image.shape[0],
                  "width": image.shape[1]}  # fmt: skip
        with torch.no_grad():
            output = model([inputs])[0]
        shown, scale = display_image(image, None if args.composite else 0), auto_scale(image.shape)
        if dense:
            masks, _ = masks_and_seeds_from_output(output, len(names), params)
            drawn = overlay_masks(shown, masks, names, scale=scale, legend=True,
                                  title="dense head, score >= " + "/".join(
                                      f"{t:g}" for t in params.score_thresholds(len(names))))
            found = ", ".join(f"{n} {int(m.sum())}" for n, m in zip(names, masks))
        else:
            instances = output["instances"].to("cpu")
            drawn = draw_instances(shown, instances, metadata, scale=scale)
            found = f"{len(instances)} instances"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(target), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
            raise ValueError(f"cannot write {target}")
        print(f"{path}: {found} -> {target}")
    return 0


def run_cases(args: argparse.Namespace, cfg, kind: str, paths: Sequence[str]) -> int:
    from brainseg_d2.inference.volume_predictor import VolumePredictor

    info = dataset_info(args, cfg, required=True)
    predictor = VolumePredictor(cfg, dataset_info=info)
    own = predictor.label_convention
    default_convention = "brats2021" if own == "mixed" else own
    if kind == "case":
        cases = [c for p in paths
                 for c in find_cases(p, "decathlon" if is_task_input(p) else "brats")]  # fmt: skip
    else:
        cases = [volume_case(paths, predictor.channels, default_convention)]
    if args.gt and len(cases) != 1:
        raise ValueError(f"--gt needs exactly one case, the input holds {len(cases)}")
    if os.path.lexists(args.output) and not os.path.isdir(args.output):
        raise ValueError(f"--output {args.output} exists and is not a folder; nothing was written")
    for case in cases:  # pictures go to <output>/<case>/: never into an input folder
        folder = Path(args.output) / case.case_id
        check_not_input(folder, [*case.files(), *paths], "--output folder")
        if not is_empty_folder(folder):  # missing, or the script's alone
            check_replaceable(folder, MARKER, TOOL, "case folder")
    for case in cases:
        prediction = predictor.predict(case)
        gt_path = args.gt or case.mask
        gt = None
        if gt_path:
            # The file's own convention: from its BraTS name, else the case's.
            convention = detect_convention(gt_path) or case.label_convention
            gt = label_map_masks(
                gt_path, prediction.preprocessed.geometry, predictor.target, convention
            )
        folder = Path(args.output) / case.case_id
        if os.path.lexists(folder / MARKER):
            shutil.rmtree(folder)  # an earlier drawing of this case (checked above)
        folder.mkdir(parents=True)  # marked unfinished first: an interrupted run is replaced
        write_marker(folder, MARKER, TOOL, finished=False)
        rendered = render_prediction(
            prediction,
            folder,
            gt_masks=gt,
            raw=args.raw,
            display_channel=None if args.composite else 0,
            gif=not args.no_gif,
        )
        write_marker(folder, MARKER, TOOL)
        print(f"{case.case_id}: {len(rendered.slices)} slice overlays, montage"
              f"{', GIF' if rendered.gif else ''} in {rendered.folder}"
              + ("" if gt is not None else " (no ground truth)"))  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = setup_cfg(args)
        kind, paths = split_inputs(args.input)
        if kind == "images":
            if args.gt:
                raise ValueError("--gt applies to cases (volumes), not to 2D images")
            return run_images(args, cfg, paths)
        return run_cases(args, cfg, kind, paths)
    except (ValueError, VolumeError) as e:
        print_error(e)
        return 2
    except OSError as e:
        print_error(e)
        return 1
    except KeyboardInterrupt:  # a case folder being drawn stays marked unfinished: redrawn
        print("interrupted; run the same command again to draw every case", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
