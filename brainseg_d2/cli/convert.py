"""``brainseg-convert``: MRI volumes or 2D slice folders + labels -> a COCO dataset of slices.

::

    brainseg-convert --input CASES --output datasets/NAME [--layout ...] [options]

The work is :func:`brainseg_d2.data.convert.convert_dataset`; this module turns
the command line into its arguments. ``--out`` is the old spelling of ``--output``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from brainseg_d2.data.convert import MARKER, ConvertOptions, convert_dataset
from brainseg_d2.data.sources import LAYOUTS, find_cases
from brainseg_d2.labels import CONVENTIONS, TARGETS, register_convention, resolve_convention
from brainseg_d2.structures import CANONICAL_ORIENTATION, NORMALIZATIONS
from brainseg_d2.utils.cli import ArgumentParser, deprecated_alias, print_error

__all__ = ["build_parser", "main"]


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-convert``."""
    p = ArgumentParser(
        prog="brainseg-convert",
        description="Convert MRI volumes or 2D slices + labels into a COCO dataset of 2D slices.",
    )
    d = ConvertOptions()
    p.add_argument("--input", help="input folder (or CSV manifest, or VIA JSON file)")
    p.add_argument(
        "--output",
        "--out",
        required=True,
        action=deprecated_alias("--out"),
        help=f"dataset folder to create (never inside the input; gets a {MARKER} marker file)",
    )
    p.add_argument(
        "--layout",
        choices=["auto", *LAYOUTS],
        default="auto",
        help="auto: csv/pairs when --manifest/--images are given, else whichever of "
        "brats, decathlon, tcga_lgg, via the folder holds (an error if several)",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[],
        metavar="[NAME=]GLOB",
        help="pairs layout: one glob per channel, relative to --input",
    )
    p.add_argument("--masks", metavar="GLOB", help="pairs layout: glob of label maps")
    p.add_argument("--manifest", metavar="CSV", help="csv layout: manifest file")
    p.add_argument(
        "--label-convention",
        metavar="NAME_OR_FILE",
        help=f"raw label convention: one of {sorted(CONVENTIONS)}, or a .json/.yaml file of "
        "your own (labels, regions, tissue; recorded in dataset.json, and used for every case, "
        "BraTS-named ones too) (default: detected for BraTS and VIA, else binary)",
    )
    p.add_argument(
        "--patient-pattern",
        metavar="REGEX",
        help="regex on the case id giving the patient id (group 1 or whole match; "
        "default: patient id = case id)",
    )
    p.add_argument(
        "--channels",
        nargs="+",
        metavar="NAME",
        help="source channels, one image channel each, in order (default for BraTS: "
        "flair t1 t1ce t2)",
    )
    p.add_argument(
        "--target",
        choices=sorted(TARGETS),
        help="what the categories are: nested BraTS regions WT/TC/ET, disjoint tissue "
        "labels, or one tumour class (default: binary for binary masks, labels for VIA "
        "polygons named by tissue, else regions)",
    )
    p.add_argument(
        "--slice-axis",
        choices=sorted(CANONICAL_ORIENTATION),
        default=d.slice_axis,
        help="axis the volumes are cut along into 2D slices",
    )
    p.add_argument(
        "--lower-percentile",
        type=float,
        default=d.lower_percentile,
        help="intensity percentile inside the brain mapped to 0",
    )
    p.add_argument(
        "--upper-percentile",
        type=float,
        default=d.upper_percentile,
        help="intensity percentile inside the brain mapped to 255",
    )
    p.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        default=d.normalization,
        help="zscore: the brain's mean -3 and +3.5 SD to 0 and 255 (default); percentile: "
        "the two percentiles above to 0 and 255",
    )
    p.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=list(d.split),
        metavar=("TRAIN", "VAL", "TEST"),
        help="patient ratios; a split with a non-zero ratio must get a patient",
    )
    p.add_argument(
        "--folds", type=int, help="K-fold split over patients instead of --split (fold I = val)"
    )
    p.add_argument("--fold", type=int, default=d.fold, help="which fold is val, with --folds")
    p.add_argument(
        "--seed", type=int, default=d.seed, help="seed of the patient split and empty-slice pick"
    )
    p.add_argument(
        "--empty-ratio",
        type=float,
        default=d.empty_ratio,
        help="fraction of empty brain slices kept in train",
    )
    p.add_argument(
        "--min-area",
        type=int,
        default=d.min_area,
        help="training annotations drop label components smaller than this many pixels "
        "(val/test keep every labelled pixel)",
    )
    p.add_argument(
        "--connectivity",
        type=int,
        choices=[4, 8],
        default=d.connectivity,
        help="pixel connectivity of label components",
    )
    p.add_argument(
        "--png-compression",
        type=int,
        default=d.png_compression,
        help="PNG deflate level 0-9: 0 stored, 1 fast, 2-9 zlib, smaller and slower",
    )
    p.add_argument(
        "--context-slices",
        type=int,
        default=d.context_slices,
        metavar="K",
        help="also write the images of the K slices on each side of every kept slice "
        "(for models that see neighbouring slices, BRAINSEG.INPUT.CONTEXT_SLICES)",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes, one case each")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing --output, only if brainseg-convert wrote it ({MARKER}) and "
        "it holds no file of yours",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="convert the good cases, list the bad ones (default: any bad case is an error)",
    )
    p.add_argument(
        "--name",
        help="name recorded in dataset.json and the COCO files (default: the --output folder "
        "name); Detectron2 registers a dataset under its folder name either way",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter CLI; returns 0, 2 on bad input, 1 on a system error, 130 interrupted."""
    args = build_parser().parse_args(argv)
    if not args.input and not args.manifest:
        print("error: give --input (or --manifest)", file=sys.stderr)
        return 2

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    try:
        convention = None
        if args.label_convention:
            # A user's file becomes a convention known by its name (workers get it
            # through the options' label_conventions).
            resolved = resolve_convention(args.label_convention)
            untissued = [n for v, n in sorted(resolved.classes.items())
                         if v not in resolved.raw_to_tissue]  # fmt: skip
            if untissued:  # once for the file, not once per case that holds them
                raise ValueError(f"--label-convention {args.label_convention}: classes "
                                 f"{untissued} have no tissue code, which training needs; "
                                 "give them one under 'tissue'")  # fmt: skip
            convention = register_convention(resolved).name
        cases = find_cases(
            args.input or args.manifest,
            args.layout,
            image_globs=args.images,
            mask_glob=args.masks,
            manifest=args.manifest,
            label_convention=convention,
            patient_pattern=args.patient_pattern,
            on_warning=warn,
        )
        options = ConvertOptions(
            channels=tuple(args.channels) if args.channels else None,
            target=args.target,
            slice_axis=args.slice_axis,
            lower_percentile=args.lower_percentile,
            upper_percentile=args.upper_percentile,
            normalization=args.normalization,
            split=tuple(args.split),
            folds=args.folds,
            fold=args.fold,
            seed=args.seed,
            empty_ratio=args.empty_ratio,
            min_area=args.min_area,
            connectivity=args.connectivity,
            png_compression=args.png_compression,
            context_slices=args.context_slices,
        )
        source = {
            "input": str(Path(args.input or args.manifest).resolve()),
            "layout": args.layout,
            "images": list(args.images),
            "masks": args.masks,
            "manifest": args.manifest,
            "label_convention": args.label_convention,
            "patient_pattern": args.patient_pattern,
        }
        info = convert_dataset(
            cases,
            args.output,
            options,
            workers=args.workers,
            overwrite=args.overwrite,
            skip_bad=args.skip_bad,
            name=args.name,
            source_options=source,
            progress=not args.no_progress,
            on_warning=warn,
        )
    except ValueError as exc:
        print_error(exc)
        return 2
    except OSError as exc:  # disk full, permissions: not the input's fault
        print_error(exc)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    for split, counts in sorted(info["counts"].items()):
        print(
            f"{split}: {counts['volumes']} volumes, {counts['images']} images, "
            f"{counts['annotations']} annotations"
        )
    for skipped in info["skipped"]:
        print(f"skipped: {skipped['error']}", file=sys.stderr)
    print(f"wrote {Path(args.output).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
