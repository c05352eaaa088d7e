"""``brainseg-phantom``: write built-in MRI phantom cases in the BraTS 2021 layout.

::

    brainseg-phantom --output DIR --num-cases N [--spacing MM] [--seed S] [--overwrite]
    brainseg-phantom --output DIR --num-cases N --p-empty 0 --p-low-grade 1   # low-grade only

The cases are :func:`brainseg_d2.data.phantom.generate_dataset`'s; this module
turns the command line into its arguments and marks each case folder it writes
(:data:`CLI_MARKER`), so that ``--overwrite`` replaces only those. ``--out`` is
the old spelling of ``--output``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg_d2.data import phantom
from brainseg_d2.data.phantom import PhantomCase, PhantomParams, generate_dataset
from brainseg_d2.data.phantom_plan import check_spacing
from brainseg_d2.utils.cli import ArgumentParser, deprecated_alias
from brainseg_d2.utils.paths import check_replaceable

__all__ = ["CLI_MARKER", "build_parser", "main"]

#: Written into each case folder the command writes; ``--overwrite`` replaces only those.
CLI_MARKER = ".brainseg-phantom"


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-phantom``."""
    parser = ArgumentParser(prog="brainseg-phantom", description=phantom.__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        "--out",
        required=True,
        action=deprecated_alias("--out"),
        help="output folder (missing or empty)",
    )
    parser.add_argument("--num-cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=1.0,
        help="isotropic voxel size in mm, 1-4 (default 1; the demo uses 1.5)",
    )
    parser.add_argument(
        "--p-empty", type=float, default=0.1, help="probability of a tumour-free case (default 0.1)"
    )
    parser.add_argument(
        "--p-low-grade",
        type=float,
        help=f"share of tumour cases that are low-grade, most without enhancement (default "
        f"{phantom.P_LOW_GRADE}); 1 with --p-empty 0 writes a test set for false enhancing calls",
    )
    parser.add_argument("--prefix", default="Phantom", help="case id prefix (default Phantom)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes generating cases at once (default 1; the files are the same for any "
        "number)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder, replacing same-named cases that "
        f"brainseg-phantom wrote ({CLI_MARKER})",
    )
    return parser


def check_options(args) -> None:
    """Raise ValueError naming the option (not the library's parameter) that is out of range."""
    for option, value in (("--num-cases", args.num_cases), ("--workers", args.workers)):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    for option, value in (("--p-empty", args.p_empty), ("--p-low-grade", args.p_low_grade)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"{option} must be between 0 and 1, got {value}")
    try:
        check_spacing(args.spacing)
    except ValueError as e:  # "spacing must be between ..."
        raise ValueError(f"--{e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``brainseg-phantom``). Returns the exit status (2: bad input)."""
    parser = build_parser()

    def report(path: Path, case: PhantomCase) -> None:
        seg = sitk.GetArrayViewFromImage(case.seg)
        ml = np.count_nonzero(seg) * float(np.prod(case.seg.GetSpacing())) / 1000.0
        print(f"{path}  {case.kind}  tumour {ml:.1f} ml", flush=True)

    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (one line printed) or --help
        return int(exc.code or 0)
    try:
        check_options(args)
        for i in range(args.num_cases) if args.overwrite else ():
            folder = Path(args.output) / f"{args.prefix}_{i:05d}"
            check_replaceable(folder, CLI_MARKER, "brainseg-phantom", "case folder")
        params = None
        if args.p_low_grade is not None:
            default = PhantomParams()
            params = replace(default, tumour=replace(default.tumour, p_low_grade=args.p_low_grade))
        paths = generate_dataset(
            args.output,
            args.num_cases,
            seed=args.seed,
            spacing=args.spacing,
            p_empty=args.p_empty,
            prefix=args.prefix,
            overwrite=args.overwrite,
            on_case=report,
            params=params,
            workers=args.workers,
            marker=(CLI_MARKER, "brainseg-phantom"),  # inside each case before it appears
        )
    except (ValueError, FileExistsError, ImportError, OSError) as exc:
        print(f"brainseg-phantom: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("brainseg-phantom: interrupted; every case folder there is complete (each "
              "appears whole or not at all); run again with --overwrite to write the rest",
              file=sys.stderr)  # fmt: skip
        return 130
    print(f"wrote {len(paths)} cases to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
