"""``brainseg-report``: the HTML report of an evaluation folder.

::

    brainseg-report --input EVAL_DIR --output report.html [--thumbs DIR] [--baseline CSV]

``EVAL_DIR`` is the Detectron2 evaluator's output folder or ``brainseg-evaluate``'s
(which writes its ``report.html`` itself). The page: :mod:`brainseg_d2.report`.
``--eval-dir`` and ``--out`` are the old spellings of ``--input`` and ``--output``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from brainseg_d2.evaluation.results_files import (
    EVALUATOR_FILES,
    NIFTI_FILES,
    find_result_files,
    load_cases,
)
from brainseg_d2.report import DEFAULT_TITLE, find_thumbnails, write_report
from brainseg_d2.utils.cli import ArgumentParser, deprecated_alias, print_error

__all__ = ["build_parser", "main"]


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-report``."""
    p = ArgumentParser(
        prog="brainseg-report",
        description="Write the HTML report of a brainseg evaluation (the Detectron2 "
        "evaluator's output folder or brainseg-evaluate's).",
    )
    p.add_argument(
        "--input",
        "--eval-dir",
        required=True,
        type=Path,
        action=deprecated_alias("--eval-dir"),
        help=f"evaluation output folder ({EVALUATOR_FILES.cases}, {EVALUATOR_FILES.summary}, "
        f"or brainseg-evaluate's {NIFTI_FILES.cases}, {NIFTI_FILES.summary})",
    )
    p.add_argument(
        "--output",
        "--out",
        required=True,
        type=Path,
        action=deprecated_alias("--out"),
        help="HTML file to write (an existing file only if it is an earlier report)",
    )
    p.add_argument(
        "--thumbs",
        type=Path,
        help="folder of overlays: <id>.png, <id>/montage.png (demo output) or <id>_montage.png",
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="per-case CSV of a baseline scored by the same code (e.g. the demo's "
        "eval/baseline_cases.csv)",
    )
    p.add_argument("--title", default=DEFAULT_TITLE, help="page title and heading")
    p.add_argument(
        "--num-extremes", type=int, default=3,
        help="number of worst and of best cases shown (0: none)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        if args.num_extremes < 0:
            raise ValueError(f"--num-extremes must be >= 0, got {args.num_extremes}")
        thumbs = None
        if args.thumbs is not None:
            if not args.thumbs.is_dir():
                raise ValueError(f"--thumbs {args.thumbs} is not a folder")
            ids = sorted({r["case_id"] for r in load_cases(find_result_files(args.input).cases)})
            thumbs = find_thumbnails(args.thumbs, ids)
        out = write_report(
            args.input, args.output, thumbs, args.title, num_extremes=args.num_extremes,
            baseline=args.baseline,
        )  # fmt: skip
    except ValueError as e:
        print_error(e)
        return 2
    except OSError as e:
        print_error(e)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
