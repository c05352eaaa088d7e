"""``brainseg-evaluate``: score a folder of label maps against references.

::

    brainseg-evaluate --pred PRED_DIR --ref REF_DIR --output OUT_DIR [--workers 4]

What is matched, scored and written: :mod:`brainseg_d2.evaluation.nifti_evaluation`.
Exit status: 0 success; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from brainseg_d2.data.sources.common import SourceError
from brainseg_d2.data.sources.decathlon import task_labels
from brainseg_d2.evaluation.case_scores import ScoringSettings
from brainseg_d2.evaluation.label_map_files import unlabelled_case_folders
from brainseg_d2.evaluation.lesion_metrics import BRATS2023_LESION_SETTINGS, LesionSettings
from brainseg_d2.evaluation.nifti_evaluation import EvaluationError, evaluate_folders
from brainseg_d2.evaluation.results_files import NIFTI_FILES, REPORT_FILE
from brainseg_d2.labels import CONVENTIONS
from brainseg_d2.utils.cli import print_error

__all__ = ["build_parser", "main"]


def file_list(paths: Sequence[str], most: int = 5) -> str:
    """File names, comma-separated; past ``most`` of them, how many more (all in summary.json)."""
    names = [Path(p).name for p in paths]
    if len(names) <= most:
        return ", ".join(names)
    return ", ".join(names[:most]) + f" and {len(names) - most} more (summary.json lists them)"


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``brainseg-evaluate``."""
    p = argparse.ArgumentParser(
        prog="brainseg-evaluate",
        description=(
            "Score label maps (NIfTI, MHA/MHD, NRRD) from any tool against reference label "
            "maps: Dice, IoU, "
            "HD95 (MONAI and panoptica conventions), sensitivity, specificity, precision, "
            "volume difference, BraTS 2023 lesion-wise Dice/HD95 and BraTS 2024+ RQ/SQ/PQ, "
            "per region and class."
        ),
    )
    p.add_argument("--pred", required=True, type=Path, help="folder of predicted label maps")
    p.add_argument(
        "--ref",
        required=True,
        type=Path,
        help="folder of reference label maps (BraTS case folders of any year included), or a "
        "Decathlon or nnU-Net task folder (its labelsTr, in the labels its dataset.json names)",
    )
    p.add_argument("--output", required=True, type=Path, help="folder for the CSV and JSON")
    p.add_argument(
        "--pattern",
        help="regex giving the case id of a file, searched in its name, then in its path "
        "below --pred/--ref (group 'id', else group 1, else the match); default: BraTS ids, "
        "else the stem less _seg/_pred-like suffixes (a bare seg.nii.gz: its folder's name)",
    )
    p.add_argument(
        "--label-convention",
        help=f"one of {sorted(CONVENTIONS)} or a .json/.yaml convention file "
        "(default: from each reference's BraTS name or BraTS 2013-2015 folder)",
    )
    p.add_argument(
        "--pred-label-convention",
        help="the predictions' own convention where it is not the references' (e.g. "
        "brats2021 for another tool's ET = 4 against BraTS 2023 files): their classes "
        "are rewritten by name; default: the references' convention",
    )
    p.add_argument(
        "--challenge",
        choices=sorted(BRATS2023_LESION_SETTINGS),
        help="BraTS 2023 lesion-wise settings for every case (default: from each case's name, "
        "GLI for others)",
    )
    p.add_argument(
        "--lesion-dilation",
        type=int,
        help="BraTS 2023 lesion dilation iterations (overrides --challenge)",
    )
    p.add_argument(
        "--lesion-min-volume",
        type=float,
        help="BraTS 2023: ignore lesions of at most this volume in mm^3 (overrides --challenge)",
    )
    p.add_argument(
        "--hd95-penalty",
        type=float,
        default=ScoringSettings().hd95_penalty,
        help="HD95 in mm where one side is empty, for missed and false-positive lesions "
        "and missing predictions (default: %(default)s, BraTS 2023)",
    )
    p.add_argument("--workers", type=int, default=1, help="cases scored at once (processes)")
    p.add_argument(
        "--no-progress", "--quiet", dest="quiet", action="store_true",
        help="no progress bar (--quiet: the same; --no-progress as in the other commands)",
    )  # fmt: skip
    p.add_argument("--no-report", action="store_true", help=f"do not write {REPORT_FILE}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 2 on bad input (one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.workers < 1:
            raise EvaluationError(f"--workers must be >= 1, got {args.workers}")
        lesion = BRATS2023_LESION_SETTINGS[args.challenge] if args.challenge else None
        if args.lesion_dilation is not None or args.lesion_min_volume is not None:
            base = lesion or BRATS2023_LESION_SETTINGS["GLI"]
            lesion = LesionSettings(
                dilation_iters=(
                    base.dilation_iters if args.lesion_dilation is None else args.lesion_dilation
                ),
                min_lesion_volume=(
                    base.min_lesion_volume
                    if args.lesion_min_volume is None
                    else args.lesion_min_volume
                ),
            )
            if lesion.dilation_iters < 0:
                raise EvaluationError(
                    f"--lesion-dilation must be >= 0, got {lesion.dilation_iters}"
                )
        if not 0 <= args.hd95_penalty < float("inf"):  # a distance, written to summary.json
            raise EvaluationError("--hd95-penalty must be a distance: need a finite value "
                                  f">= 0 mm, got {args.hd95_penalty}")
        # A Decathlon or nnU-Net task: its labelsTr, labelled as its dataset.json says.
        try:
            ref, convention = task_labels(args.ref, args.label_convention)
        except SourceError as exc:
            raise EvaluationError(str(exc)) from None
        summary = evaluate_folders(
            args.pred,
            ref,
            args.output,
            pattern=args.pattern,
            label_convention=convention,
            pred_label_convention=args.pred_label_convention,
            lesion=lesion,
            settings=ScoringSettings(hd95_penalty=args.hd95_penalty),
            workers=args.workers,
            progress=not args.quiet,
            report=not args.no_report,
        )
    except EvaluationError as exc:
        print_error(exc)
        return 2
    for line in summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if summary["missing_predictions"]:
        print(
            f"warning: {len(summary['missing_predictions'])} reference(s) without prediction, "
            f"scored Dice 0 / HD95 {summary['settings']['hd95_penalty_mm']:g} mm: "
            + file_list(summary["missing_predictions"]),
            file=sys.stderr,
        )
    if summary["unmatched_predictions"]:
        print(
            f"warning: {len(summary['unmatched_predictions'])} prediction(s) without reference: "
            + file_list(summary["unmatched_predictions"]),
            file=sys.stderr,
        )
    unlabelled = unlabelled_case_folders(ref)
    if unlabelled:
        shown = ", ".join(str(p) for p in unlabelled[:3])
        more = f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        print(f"warning: {len(unlabelled)} case folder(s) under --ref hold images but no label "
              f"map, so they are not scored: {shown}{more}", file=sys.stderr)  # fmt: skip
    if Path(args.pred).resolve() == Path(args.ref).resolve():
        print("warning: --pred and --ref are one folder: every case is scored against itself",
              file=sys.stderr)  # fmt: skip
    for entry in summary["names"]:
        mean, exists = entry["mean"], entry["mean_exists"]
        over = (f"{exists['dice']:.4f} over n={entry['n_exists']} with it" if entry["n_exists"]
                else "no case has it")  # fmt: skip
        print(
            f"{entry['name']:>16}  Dice {mean['dice']:.4f} (n={entry['n_cases']}; {over})  "
            f"HD95 {mean['hd95']:.2f} mm  lesion Dice {mean['lesion_dice']:.4f}  "
            f"PQ {mean['pq']:.4f}"
        )
    written = [NIFTI_FILES.cases, NIFTI_FILES.summary] + ([] if args.no_report else [REPORT_FILE])
    print(f"wrote {', '.join(str(Path(args.output) / f) for f in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
