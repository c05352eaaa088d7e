#!/usr/bin/env python
"""The main job, end to end, on the built-in MRI phantom (``make demo``).

Generates phantom cases, converts them, trains the CPU phantom config from
scratch, evaluates on held-out phantom cases (another seed) next to a
non-learned baseline, predicts every held-out volume to NIfTI, and writes
overlays, a GIF and an HTML report. Ends by printing where everything is and the
headline volume Dice per region.

    tools/run_demo.py [--output output/demo] [--quick] [KEY VALUE ...]

``--output`` is replaced only if a previous demo wrote it (it holds
``.brainseg-demo``), and never when it holds the config or the weights in use.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from brainseg_d2.utils.cli import ArgumentParser, print_error, quiet_third_party_warnings

quiet_third_party_warnings()  # before torch and Detectron2 are imported: they warn on import

from detectron2.utils.logger import setup_logger  # noqa: E402

from brainseg_d2.pipeline import DEMO_CONFIG, DemoOptions, run  # noqa: E402
from brainseg_d2.structures import NORMALIZATIONS  # noqa: E402
from brainseg_d2.utils.paths import check_not_input  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICK = {"train_cases": 4, "heldout_cases": 2, "spacing": 3.0}


def build_parser() -> ArgumentParser:
    """Command-line interface of ``tools/run_demo.py``."""
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config-file",
        type=Path,
        default=REPO / DEMO_CONFIG,
        metavar="FILE",
        help="training config",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=DemoOptions.output,
        help="folder for every artefact (replaced only if a previous demo wrote it)",
    )
    p.add_argument(
        "--train-cases",
        type=int,
        default=DemoOptions.train_cases,
        help="phantom cases for training and validation",
    )
    p.add_argument(
        "--heldout-cases",
        type=int,
        default=DemoOptions.heldout_cases,
        help="phantom cases (another seed) for the held-out test",
    )
    p.add_argument(
        "--spacing", type=float, default=DemoOptions.spacing, help="phantom voxel size in mm"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that generate and convert the phantom (default: the CPU count, at "
        "most 8; the data is the same for any number)",
    )
    p.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        default=DemoOptions.normalization,
        help="the converter's intensity normalisation (default: zscore, the brain's mean "
        "-3/+3.5 SD to 0/255)",
    )
    p.add_argument(
        "--target",
        choices=("regions", "labels"),
        default=DemoOptions.target,
        help="what the model learns: the nested BraTS regions WT/TC/ET, or the disjoint "
        "tissues NCR/ED/ET with the regions derived (an ablation)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: {train_cases} + {heldout_cases} cases at {spacing:g} mm, 4 "
        "iterations (no accuracy)".format(**QUICK).replace("%", "%%"),
    )
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides, e.g. SOLVER.MAX_ITER 200",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    opts = DemoOptions(config=args.config_file, output=args.output, train_cases=args.train_cases,
                       heldout_cases=args.heldout_cases, spacing=args.spacing, opts=args.opts)
    opts.normalization, opts.target = args.normalization, args.target
    if args.workers is not None:
        if args.workers < 1:
            print_error(ValueError(f"--workers must be >= 1, got {args.workers}"))
            return 2
        opts.workers = args.workers
    if args.quick:
        opts.train_cases, opts.heldout_cases, opts.spacing = (
            QUICK["train_cases"], QUICK["heldout_cases"], QUICK["spacing"]
        )
        opts.opts = ["SOLVER.MAX_ITER", "4", "SOLVER.WARMUP_ITERS", "2", "SOLVER.STEPS", "()",
                     "TEST.EVAL_PERIOD", "0", *opts.opts]
    weights = [v for k, v in zip(opts.opts[0::2], opts.opts[1::2]) if k == "MODEL.WEIGHTS"]
    setup_logger(name="brainseg_d2")
    logging.getLogger("brainseg_d2").setLevel(logging.INFO)
    try:
        # The output folder is emptied first: it must hold none of the inputs.
        check_not_input(opts.output, [opts.config, *weights], "--output")
        summary = run(opts)
    except ValueError as e:
        print_error(e)
        return 2
    print("\n=== brainseg_d2 demo finished in {:.0f} s ===".format(summary["total_s"]))
    for name, path in summary["outputs"].items():
        print(f"  {name:<12} {path}")
    print("  summary      " + str(opts.output / "summary.json"))
    print_headline(summary)
    return 0


def print_headline(summary: dict) -> None:
    """Per region: volume Dice over all held-out cases (BraTS: both empty = 1) beside the
    Dice over the n cases that hold the region, raw -> post-processed, and lesion-wise Dice."""
    vd, ld, present = summary["volume_dice"], summary["lesion_dice"], summary["num_present"]
    n_all = summary["num_volumes"]
    print(f"\nHeld-out volume Dice, raw -> post-processed ({n_all} cases; post-processing "
          f"chosen on validation: {'yes' if summary['postprocess_tuned'] else 'no'}):")
    columns = ("all cases (BraTS)", 22), ("cases with the region", 30), ("lesion-wise", 0)
    print("      " + "".join(f"{name:<{width}}" for name, width in columns))
    for region in ("WT", "TC", "ET"):
        if f"volume_dice_{region}_raw" not in vd:
            continue
        brats = f"{vd[f'volume_dice_{region}_raw']:.3f} -> {vd[f'volume_dice_{region}_post']:.3f}"
        n = present.get(region, 0)
        with_region = (
            f"{vd[f'volume_dice_present_{region}_raw']:.3f} -> "
            f"{vd[f'volume_dice_present_{region}_post']:.3f} (n={n})" if n else "none (n=0)"
        )
        lesion = f"{ld[f'lesion_dice_{region}_raw']:.3f} -> {ld[f'lesion_dice_{region}_post']:.3f}"
        print(f"  {region:<4}{brats:<22}{with_region:<30}{lesion}")
    b = summary["baseline_flair_wt_dice"]
    print(f"  baseline (FLAIR > mean + 2 SD) WT: {b['raw']:.3f} -> {b['post']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
