"""``brainseg-predict``: label maps for whole volumes with a trained model.

::

    brainseg-predict --config-file CFG --input CASE_DIR --output OUT MODEL.WEIGHTS model.pth
    brainseg-predict --config-file CFG --input FOLDER_OF_CASES --output OUT_DIR \\
        --dataset-info datasets/brats/dataset.json --batch-size 8 MODEL.DEVICE cuda
    brainseg-predict --config-file CFG --input scans/ --images 'flair=*_flair.mha' \\
        't1=*_t1.mha' 't1ce=*_t1ce.mha' 't2=*_t2.mha' --output OUT_DIR MODEL.WEIGHTS model.pth
    brainseg-predict --config-file CFG --input cases.csv --output OUT_DIR MODEL.WEIGHTS model.pth
    brainseg-predict --config-file CFG --input FOLDER_OF_CASES --output OUT_DIR \\
        --weights fold0/model_final.pth fold1/model_final.pth fold2/model_final.pth

What is written, checked and refused: :mod:`brainseg_d2.inference.case_files`.
The weights must fit the model exactly (:func:`brainseg_d2.checkpoint.load_strict`);
several ``--weights`` are an ensemble (:mod:`brainseg_d2.inference.ensemble`).

Exit status: 0 success; 1 some cases skipped by ``--skip-bad`` (the others were
predicted), or a system error; 2 bad input/config, bad weights or refused
overwrite; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import SimpleNamespace

from brainseg_d2.labels import CONVENTIONS
from brainseg_d2.utils.cli import (
    ArgumentParser,
    print_error,
    quiet_third_party_warnings,
    weights_opts,
)

__all__ = ["build_parser", "main", "setup_cfg"]


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-predict``."""
    p = ArgumentParser(
        prog="brainseg-predict",
        description="Predict tumour label maps for whole volumes: BraTS case folders, "
        "Decathlon or nnU-Net task folders, volume files paired by globs, or a CSV manifest.",
    )
    p.add_argument("--config-file", required=True, metavar="CFG", help="model config (YAML)")
    p.add_argument(
        "--input",
        required=True,
        help="a BraTS case folder, or a folder of case folders; a Decathlon or nnU-Net task "
        "folder, or its imagesTr or imagesTs folder; with --layout pairs a folder of volume "
        "files (NIfTI, MHA, NRRD, DICOM folders); with csv a manifest",
    )
    p.add_argument(
        "--layout",
        choices=["auto", "brats", "decathlon", "pairs", "csv"],
        default="auto",
        help="auto (default): csv for a .csv --input, pairs with --images, decathlon for a "
        "task folder, else brats; pairs and csv cases are written in the training data's "
        "label convention",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="NAME=GLOB",
        help="pairs layout: one glob per channel the model reads, relative to --input "
        "(e.g. flair='*_flair.mha' t1='*_t1.mha' ...)",
    )
    p.add_argument(
        "--weights",
        nargs="+",
        action="extend",
        metavar="PTH",
        help="the model's weights (sets MODEL.WEIGHTS, and replaces the ensemble a tuned "
        "config records); several (one per fold or seed, one config) are an ensemble "
        "(BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS): their dense heads' probabilities are "
        "averaged before post-processing",
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
        help="predict the good cases, list the bad ones, exit 1 (default: a bad case is an "
        "error; one found from its headers stops the run before any prediction, one whose "
        "voxels are bad, e.g. a truncated file, stops it there)",
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
        ValueError: bad config file or key, empty ``MODEL.WEIGHTS``, or a value that
            cannot work here (``MODEL.DEVICE cuda`` with no GPU, ...).
    """
    from brainseg_d2.config import setup_cfg as config_setup
    from brainseg_d2.engine.cfg_checks import check_cfg_values

    raw = ["BRAINSEG.POSTPROCESS.ENABLED", False] if args.raw else []
    weights = weights_opts(args)  # first: it moves trailing overrides into args.opts
    cfg = config_setup(args.config_file, [*args.opts, *raw, *weights])
    if not cfg.MODEL.WEIGHTS and not cfg.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS:
        raise ValueError("MODEL.WEIGHTS is empty: add `MODEL.WEIGHTS path/to/model_final.pth`")
    from brainseg_d2.inference.ensemble import ensemble_members

    ensemble_members(cfg)  # an override that the config's ensemble would ignore
    check_cfg_values(cfg, SimpleNamespace(config_file=args.config_file, opts=args.opts,
                                          eval_only=True))  # fmt: skip
    return cfg


def run(args: argparse.Namespace) -> int:
    """Predict every case of ``args.input``; raises ValueError on bad input.

    Returns:
        0, or 1 when ``--skip-bad`` left cases out (they are listed on stderr).
    """
    from brainseg_d2.inference.case_files import predict_cases

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    existing = "overwrite" if args.overwrite else "skip" if args.skip_existing else "refuse"
    return predict_cases(
        setup_cfg(args),
        args.input,
        args.output,
        dataset_info=args.dataset_info,
        batch_size=args.batch_size,
        label_convention=args.label_convention,
        existing=existing,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        layout=_layout(args),
        image_globs=args.images,
    )


def _layout(args: argparse.Namespace) -> str:
    if args.layout != "auto":
        return args.layout
    if str(args.input).lower().endswith(".csv"):
        return "csv"
    if args.images:
        return "pairs"
    from brainseg_d2.data.sources.decathlon import is_task_input

    return "decathlon" if is_task_input(args.input) else "brats"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``brainseg-predict``; returns 0, 1 (cases skipped), 2 (bad input), 130 (interrupted)."""
    quiet_third_party_warnings()
    args = build_parser().parse_args(argv)
    # "--images NAME=GLOB ..." takes every word after it, trailing KEY VALUE overrides
    # too; a glob is always named (NAME=GLOB) and a config key never holds "=".
    named = next((i for i, item in enumerate(args.images) if "=" not in item), len(args.images))
    args.images, args.opts = args.images[:named], [*args.images[named:], *args.opts]
    try:
        if args.opts and any(c in args.opts[0] for c in "*?["):  # a glob, not a config key
            raise ValueError(f"--images takes NAME=GLOB, one per channel (e.g. "
                             f"flair='*_flair.mha'); got {args.opts[0]!r}")  # fmt: skip
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
