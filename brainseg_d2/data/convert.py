"""Convert MRI volumes or 2D slice folders + labels into a COCO dataset of 2D slices.

Layout of the result: ``datasets/README.md``. This module is the library entry
(:func:`convert_dataset`) and the ``brainseg-convert`` CLI (:func:`main`); the
work is in

* :mod:`~brainseg_d2.data.convert_plan`: options, their defaults, patient splits;
* :mod:`~brainseg_d2.data.convert_case`: one case -> PNGs + a record;
* :mod:`~brainseg_d2.data.png_writer`: PNG encoding on threads, overlapped with reading;
* :mod:`~brainseg_d2.data.coco_writer`: records -> COCO files, volumes.json, dataset.json.

Cases run in parallel (one whole case per worker process). With one worker the
case is a three-stage pipeline on threads: the next case is read and
normalised while the current one is annotated and the previous one's PNGs are
encoded, so at most three cases are in memory. Each case writes its
PNGs and a small JSON record into a work folder ``<out>.tmp-convert`` beside
the output; the records are then assembled into the COCO files and the work
folder is renamed to ``<out>``. An interrupted run leaves the work folder
behind and the next run with the same options reuses every finished case. A
bad input stops the run with one line naming the case and file and leaves
nothing behind (or, with ``skip_bad``, is listed in ``dataset.json`` under
``skipped``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from brainseg_d2.data.coco_writer import assemble_dataset
from brainseg_d2.data.convert_case import (
    cached_record,
    case_error,
    case_key,
    check_case_headers,
    load_case,
    process_case,
    slice_annotations,
    volume_id,
)
from brainseg_d2.data.convert_plan import (
    SPLITS,
    UNLABELLED_SPLIT,
    ConversionError,
    ConvertOptions,
    assign_splits,
    resolve_options,
    tool_version,
)
from brainseg_d2.data.png_writer import PngWriteError, PngWriter
from brainseg_d2.data.preprocess import CANONICAL_ORIENTATION
from brainseg_d2.data.sources import LAYOUTS, Case, SourceError, find_cases
from brainseg_d2.data.sources_2d import SliceCase
from brainseg_d2.env import library_threads
from brainseg_d2.labels import CONVENTIONS, TARGETS

__all__ = [
    "SPLITS",
    "UNLABELLED_SPLIT",
    "WORK_SUFFIX",
    "ConversionError",
    "ConvertOptions",
    "assign_splits",
    "build_parser",
    "check_case_headers",
    "convert_dataset",
    "main",
    "process_case",
    "resolve_options",
    "slice_annotations",
    "tool_version",
    "volume_id",
]

WORK_SUFFIX = ".tmp-convert"


def _run_case(args: tuple, ahead: Future | None = None) -> tuple[str, dict | str]:
    """Worker entry: ("ok", record) or ("error", one-line message) for bad input.

    Args:
        args: :func:`process_case` arguments.
        ahead: the case being read by :func:`load_case` on another thread.
    """
    try:
        # Looked up here (not bound at import) so tests can wrap process_case.
        if ahead is not None:
            return "ok", process_case(*args, ahead.result())
        return "ok", process_case(*args)
    except PngWriteError:
        raise  # not a bad case: stop the run
    except (ValueError, OSError) as exc:
        return "error", case_error(args[0], exc)


@dataclass
class _Run:
    records: dict[str, dict] = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)


def convert_dataset(
    cases: Sequence[Case | SliceCase],
    out_dir: str | os.PathLike,
    options: ConvertOptions | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
    skip_bad: bool = False,
    name: str | None = None,
    source_options: Mapping | None = None,
    progress: bool = True,
) -> dict:
    """Convert cases into a COCO slice dataset at ``out_dir`` (atomically).

    Args:
        cases: from :mod:`brainseg_d2.data.sources` (3D) or
            :mod:`brainseg_d2.data.sources_2d` (2D slices).
        out_dir: dataset folder to create.
        options: conversion options (None: ``ConvertOptions()``; defaults are
            resolved from the cases).
        workers: worker processes (1 = in this process).
        overwrite: replace an existing ``out_dir``.
        skip_bad: skip cases with bad input (listed in ``dataset.json``) instead of failing.
        name: dataset name (default: the folder name).
        source_options: how the cases were found (input, layout, ...), recorded.
        progress: show a tqdm progress bar.

    Returns:
        the content of ``dataset.json``.

    Raises:
        ConversionError: output exists, no cases, or a bad case (without
            ``skip_bad``); nothing is left at ``out_dir`` (or its work folder).
    """
    out = Path(out_dir).resolve()
    if out.exists() and not overwrite:
        raise ConversionError(f"output {out} exists; pass --overwrite to replace it")
    if not cases:
        raise ConversionError("no cases to convert")
    vids = {}
    for case in cases:
        vid = volume_id(case.case_id)
        if vid in vids:
            raise SourceError(f"duplicate case id '{case.case_id}' (also '{vids[vid]}')")
        vids[vid] = case.case_id
    options = resolve_options(cases, options or ConvertOptions())
    split_of = assign_splits(cases, options)
    run = _Run()
    todo = []
    for case in cases:
        try:
            check_case_headers(case, options)
        except (ValueError, OSError) as exc:
            if not skip_bad:
                raise ConversionError(case_error(case, exc)) from None
            run.skipped.append({"case_id": case.case_id, "error": case_error(case, exc)})
            continue
        todo.append(case)
    work = out.with_name(out.name + WORK_SUFFIX)
    work.mkdir(parents=True, exist_ok=True)
    try:
        _convert_all(todo, split_of, options, work, workers, skip_bad, progress, run)
    except ConversionError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not run.records:
        shutil.rmtree(work, ignore_errors=True)
        raise ConversionError("no case could be converted: " + run.skipped[0]["error"])
    name = out.name if name is None else name
    info = assemble_dataset(work, name, options, run.records, run.skipped, source_options)
    shutil.rmtree(work / "cases")
    if out.exists():
        old = out.with_name(out.name + ".tmp-old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out, old)
        os.rename(work, out)
        shutil.rmtree(old)
    else:
        os.rename(work, out)
    return info


def _convert_all(
    cases: Sequence[Case | SliceCase],
    split_of: Mapping[str, str],
    options: ConvertOptions,
    work: Path,
    workers: int,
    skip_bad: bool,
    progress: bool,
    run: _Run,
) -> None:
    tasks = []
    for case in cases:
        key = case_key(case, split_of[case.case_id], options)
        cached = cached_record(work, volume_id(case.case_id), key)
        if cached is not None:
            run.records[cached["volume_id"]] = cached
        else:
            tasks.append((case, split_of[case.case_id], options, str(work), key))
    bar = tqdm(
        total=len(cases),
        initial=len(cases) - len(tasks),
        disable=not progress,
        desc="converting",
        unit="case",
    )

    def collect(task: tuple, result: tuple[str, dict | str]) -> None:
        status, value = result
        if status == "ok":
            run.records[value["volume_id"]] = value
        elif skip_bad:
            run.skipped.append({"case_id": task[0].case_id, "error": value})
        else:
            raise ConversionError(value)
        bar.update(1)

    try:
        if workers <= 1:
            # Reading case k + 1, annotating case k and encoding case k - 1's
            # PNGs overlap (zlib, ITK, numpy and OpenCV release the GIL).
            with (
                # OpenCV's own pool would only add threads that spin beside ours.
                library_threads(cv2.getNumThreads, cv2.setNumThreads, 1),
                PngWriter(lookahead=1) as writer,
                ThreadPoolExecutor(1) as reader,
            ):

                def read_ahead(task: tuple | None) -> Future | None:
                    return None if task is None else reader.submit(load_case, task[0], task[2])

                upcoming = read_ahead(tasks[0] if tasks else None)
                for task, following in zip(tasks, [*tasks[1:], None]):
                    current, upcoming = upcoming, read_ahead(following)
                    collect(task, _run_case((*task, writer), current))
            return
        with ProcessPoolExecutor(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            futures = {pool.submit(_run_case, t): t for t in tasks}
            try:
                for future in as_completed(futures):
                    collect(futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``brainseg-convert``."""
    p = argparse.ArgumentParser(
        prog="brainseg-convert",
        description="Convert MRI volumes or 2D slices + labels into a COCO dataset of 2D slices.",
    )
    d = ConvertOptions()
    p.add_argument("--input", help="input folder (or CSV manifest, or VIA JSON file)")
    p.add_argument("--out", required=True, help="dataset folder to create")
    p.add_argument(
        "--layout",
        choices=["auto", *LAYOUTS],
        default="auto",
        help="auto: csv/pairs when --manifest/--images are given, else whichever of "
        "brats, tcga_lgg, via the folder holds (an error if several)",
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
        choices=sorted(CONVENTIONS),
        help="raw label convention (default: detected for BraTS and VIA, else binary)",
    )
    p.add_argument(
        "--patient-pattern",
        metavar="REGEX",
        help="regex on the case id giving the patient id (group 1 or whole match)",
    )
    p.add_argument(
        "--channels",
        nargs="+",
        metavar="NAME",
        help="source channels for R, G, B (default flair t1ce t2 for BraTS)",
    )
    p.add_argument(
        "--target", choices=sorted(TARGETS), help="default labels (binary masks: binary)"
    )
    p.add_argument("--slice-axis", choices=sorted(CANONICAL_ORIENTATION), default=d.slice_axis)
    p.add_argument("--lower-percentile", type=float, default=d.lower_percentile)
    p.add_argument("--upper-percentile", type=float, default=d.upper_percentile)
    p.add_argument(
        "--split",
        nargs=3,
        type=float,
        default=list(d.split),
        metavar=("TRAIN", "VAL", "TEST"),
        help="patient ratios (default 0.7 0.15 0.15)",
    )
    p.add_argument("--folds", type=int, help="K-fold split over patients (fold I = val)")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--empty-ratio",
        type=float,
        default=d.empty_ratio,
        help="fraction of empty brain slices kept in train (default 0.2)",
    )
    p.add_argument("--min-area", type=int, default=d.min_area, help="min component area in px")
    p.add_argument("--connectivity", type=int, choices=[4, 8], default=d.connectivity)
    p.add_argument(
        "--png-compression",
        type=int,
        default=d.png_compression,
        help="PNG deflate level 0-9: 0 stored, 1 fast (default), 2-9 zlib, smaller and slower",
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes, one case each")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--skip-bad", action="store_true", help="skip bad cases and list them")
    p.add_argument("--name", help="dataset name (default: the --out folder name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter CLI; returns 0, 2 on bad input, 130 when interrupted."""
    args = build_parser().parse_args(argv)
    if not args.input and not args.manifest:
        print("error: give --input (or --manifest)", file=sys.stderr)
        return 2
    try:
        cases = find_cases(
            args.input or args.manifest,
            args.layout,
            image_globs=args.images,
            mask_glob=args.masks,
            manifest=args.manifest,
            label_convention=args.label_convention,
            patient_pattern=args.patient_pattern,
        )
        options = ConvertOptions(
            channels=tuple(args.channels) if args.channels else None,
            target=args.target,
            slice_axis=args.slice_axis,
            lower_percentile=args.lower_percentile,
            upper_percentile=args.upper_percentile,
            split=tuple(args.split),
            folds=args.folds,
            fold=args.fold,
            seed=args.seed,
            empty_ratio=args.empty_ratio,
            min_area=args.min_area,
            connectivity=args.connectivity,
            png_compression=args.png_compression,
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
            args.out,
            options,
            workers=args.workers,
            overwrite=args.overwrite,
            skip_bad=args.skip_bad,
            name=args.name,
            source_options=source,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
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
    print(f"wrote {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
