"""Convert MRI volumes or 2D slice folders + labels into a COCO dataset of 2D slices.

Layout of the result: ``datasets/README.md``. This module is the library entry
(:func:`convert_dataset`; the ``brainseg-convert`` command is
:mod:`brainseg_d2.cli.convert`); the work is in

* :mod:`~brainseg_d2.data.convert_plan`: options, their defaults, patient splits;
* :mod:`~brainseg_d2.data.convert_case`: one case -> PNGs + a record;
* :mod:`~brainseg_d2.data.io.png`: PNG encoding on threads, overlapped with reading;
* :mod:`~brainseg_d2.data.coco_writer`: records -> COCO files, volumes.json, dataset.json.

Cases run in parallel (one whole case per worker process). With one worker the
case is a three-stage pipeline on threads: the next case is read and
normalised while the current one is annotated and the previous one's PNGs are
encoded, so at most three cases are in memory. Each case writes its
PNGs and a small JSON record into a work folder ``<out>.tmp-convert`` beside
the output; the records are then assembled into the COCO files and the work
folder is renamed to ``<out>``. An interrupted run leaves the work folder
behind and the next run with the same options reuses every finished case.

Bad input: every case's headers (files present and readable, 3D, one voxel
grid) are checked before anything is written, and every bad case is listed,
one line each (the first 20, then a count). Problems only found in the voxels
(NaN, unknown labels, a truncated file) are found while converting: the run
goes on through every case so that all of them are listed, then removes its
work folder. With ``skip_bad`` the bad cases are left out, listed in
``dataset.json`` under ``skipped``, and patients are split among the good
cases only (a split that ends up empty is then a warning, not an error).

The user's data is never replaced or deleted (``utils/paths.py``): the output
must not be, contain or lie inside the input folder, manifest or any case
file; and ``overwrite`` replaces only a folder holding the :data:`MARKER` file
that the converter writes into every dataset (and into its work folder, which
it likewise reuses only when the marker is there). The marker lists the dataset's
files: one the user added stops ``overwrite`` with an error naming it.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
from tqdm import tqdm

from brainseg_d2.data.coco_writer import assemble_dataset
from brainseg_d2.data.convert_case import (
    cached_record,
    case_key,
    check_case,
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
from brainseg_d2.data.io.png import PngWriteError, PngWriter
from brainseg_d2.data.sources import CaseSource, SourceError, case_error
from brainseg_d2.env import library_threads
from brainseg_d2.labels import convention_from_dict, register_convention
from brainseg_d2.utils.cli import ProblemList
from brainseg_d2.utils.paths import (
    check_not_input,
    check_replaceable,
    is_empty_folder,
    write_marker,
)

__all__ = [
    "MARKER",
    "SPLITS",
    "UNLABELLED_SPLIT",
    "WORK_SUFFIX",
    "BadCasesError",
    "ConversionError",
    "ConvertOptions",
    "assign_splits",
    "check_case",
    "convert_dataset",
    "empty_splits",
    "process_case",
    "resolve_options",
    "slice_annotations",
    "tool_version",
    "volume_id",
]

WORK_SUFFIX = ".tmp-convert"
#: Written into every dataset (and work folder) the converter writes; ``overwrite``
#: replaces only folders holding it.
MARKER = ".brainseg-dataset"
TOOL = "brainseg-convert"

logger = logging.getLogger(__name__)


class BadCasesError(ConversionError, ProblemList):
    """Bad cases, one line each (``case <id>: <file>: <problem>``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        ProblemList.__init__(self, problems, what="bad cases")


def _run_case(args: tuple, ahead: Future | None = None) -> tuple[str, dict | str]:
    """Worker entry: ("ok", record) or ("error", one-line message) for bad input.

    Args:
        args: :func:`process_case` arguments.
        ahead: the case being read by :func:`load_case` on another thread.
    """
    try:
        # A worker process knows the users' conventions from the options alone.
        for name, definition in (args[2].label_conventions or {}).items():
            register_convention(convention_from_dict(definition, name=name))
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
    failed: dict[str, str] = field(default_factory=dict)  # case id -> error, this pass


def convert_dataset(
    cases: Sequence[CaseSource],
    out_dir: str | os.PathLike,
    options: ConvertOptions | None = None,
    *,
    workers: int = 1,
    overwrite: bool = False,
    skip_bad: bool = False,
    name: str | None = None,
    source_options: Mapping | None = None,
    progress: bool = True,
    on_warning: Callable[[str], None] | None = None,
) -> dict:
    """Convert cases into a COCO slice dataset at ``out_dir`` (atomically).

    Args:
        cases: from :mod:`brainseg_d2.data.sources` (3D) or
            2D slices (:class:`~brainseg_d2.data.sources.SliceCase`).
        out_dir: dataset folder to create.
        options: conversion options (None: ``ConvertOptions()``; defaults are
            resolved from the cases).
        workers: worker processes (1 = in this process).
        overwrite: replace an existing ``out_dir``, if the converter wrote it
            (it holds :data:`MARKER`).
        skip_bad: skip cases with bad input (listed in ``dataset.json``) instead
            of failing; patients are split among the remaining cases.
        name: dataset name (default: the folder name).
        source_options: how the cases were found (``input``, ``manifest``,
            layout, ...), recorded; ``input`` and ``manifest`` are also inputs
            that ``out_dir`` must stay clear of.
        progress: show a tqdm progress bar.
        on_warning: called with a one-line warning (a requested split left
            empty under ``skip_bad``); default: logged.

    Returns:
        the content of ``dataset.json``.

    Raises:
        OutputError: ``out_dir`` (or its work folder) is, contains or lies
            inside an input, or exists and was not written by the converter.
        ConversionError: output exists without ``overwrite``, no cases, a
            requested split would be empty; :class:`BadCasesError` for bad cases
            (without ``skip_bad``), one line each. Nothing is left at
            ``out_dir`` or its work folder, and an existing ``out_dir`` is untouched.
    """
    said: set[str] = set()

    def warn(message: str) -> None:  # each warning once, though splits are redone
        if message not in said:
            said.add(message)
            (on_warning or logger.warning)(message)

    if workers < 1:
        raise ConversionError(f"workers must be at least 1, got {workers}")
    out = Path(os.path.abspath(out_dir))
    if not out.name:
        raise ConversionError(f"output {out} is a file system root; name a dataset folder")
    work = out.with_name(out.name + WORK_SUFFIX)
    if not cases:
        raise ConversionError("no cases to convert")
    _check_outputs(out, work, _input_paths(cases, source_options), overwrite)
    vids = {}
    for case in cases:
        vid = volume_id(case.case_id)
        if vid in vids:
            raise SourceError(f"duplicate case id '{case.case_id}' (also '{vids[vid]}')")
        vids[vid] = case.case_id
    options = resolve_options(cases, options or ConvertOptions())
    run = _Run()
    for case in cases:  # every case, so that every bad one is listed
        try:
            check_case(case, options)
        except (ValueError, OSError) as exc:
            run.failed[case.case_id] = case_error(case, exc)
    todo = _drop_failed(list(cases), run, skip_bad)
    split_of = _split(todo, options, bool(run.skipped), warn)
    work.mkdir(parents=True, exist_ok=True)
    write_marker(work, MARKER, TOOL, finished=False)
    try:
        batch = todo
        while batch:
            _convert_all(batch, split_of, options, work, workers, progress, run)
            todo = _drop_failed(todo, run, skip_bad)
            if len(todo) == len(split_of):
                break
            # Bad cases found in the voxels leave their patients' places empty:
            # split the good ones again and redo those whose split changed.
            new_split = _split(todo, options, bool(run.skipped), warn)
            batch = [c for c in todo if new_split[c.case_id] != split_of[c.case_id]]
            split_of = new_split
    except (ConversionError, PngWriteError):
        shutil.rmtree(work, ignore_errors=True)
        raise
    name = out.name if name is None else name
    info = assemble_dataset(work, name, options, run.records, run.skipped, source_options)
    shutil.rmtree(work / "cases")
    write_marker(work, MARKER, TOOL)  # the dataset's own files, listed
    if os.path.lexists(out) and not is_empty_folder(out):
        # Checked again: a file the user put there while this ran stops the swap.
        check_replaceable(out, MARKER, TOOL, "--output")
        # A fresh hidden name: never a folder of the user's.
        old = out.with_name(f".{out.name}.tmp-old-{uuid.uuid4().hex[:8]}")
        os.rename(out, old)
        os.rename(work, out)
        shutil.rmtree(old)
    else:
        os.rename(work, out)  # takes an empty folder's place too
    return info


def _input_paths(
    cases: Sequence[CaseSource], source_options: Mapping | None
) -> Iterable[str | None]:
    source = source_options or {}
    return [source.get("input"), source.get("manifest"), *(p for c in cases for p in c.files())]


def _check_outputs(out: Path, work: Path, inputs: Iterable, overwrite: bool) -> None:
    """Refuse, before anything is written, outputs that could touch the user's data."""
    inputs = list(inputs)
    check_not_input(out, inputs, "--output")
    check_not_input(work, inputs, "work folder")
    if os.path.lexists(out) and not is_empty_folder(out):  # an empty folder: as if missing
        check_replaceable(out, MARKER, TOOL, "--output")
        if not overwrite:
            raise ConversionError(f"output {out} exists; pass --overwrite to replace it")
    # An interrupted run's work folder is reused; a folder of the user's by that name is not.
    check_replaceable(work, MARKER, TOOL, "work folder")


def _drop_failed(todo: list[CaseSource], run: _Run, skip_bad: bool) -> list[CaseSource]:
    """Cases of ``todo`` that did not fail; failures are skipped or raised."""
    if not run.failed:
        return todo
    failed, run.failed = run.failed, {}
    problems = [failed[c.case_id] for c in todo if c.case_id in failed]
    if not skip_bad:
        raise BadCasesError(problems)
    kept = [c for c in todo if c.case_id not in failed]
    for case_id, error in failed.items():
        run.skipped.append({"case_id": case_id, "error": error})
        run.records.pop(volume_id(case_id), None)
    run.skipped.sort(key=lambda s: s["case_id"])
    if not kept:
        raise BadCasesError([*problems, "no case could be converted"])
    return kept


def empty_splits(split_of: Mapping[str, str], options: ConvertOptions) -> list[str]:
    """Requested splits (non-zero ratio, or train/val for folds) that got no case.

    Args:
        split_of: case id -> split, from :func:`assign_splits`.
        options: the ratios or folds asked for.

    Returns:
        the empty split names, in :data:`SPLITS` order; none when no case is
        labelled (everything goes to ``unlabelled``).
    """
    used = set(split_of.values())
    if not used - {UNLABELLED_SPLIT}:
        return []
    if options.folds:
        requested = ["train", "val"]
    else:
        requested = [s for s, r in zip(SPLITS, options.split) if r > 0]
    return [s for s in requested if s not in used]


def _split(
    cases: Sequence[CaseSource],
    options: ConvertOptions,
    after_skipping: bool,
    warn: Callable[[str], None],
) -> dict[str, str]:
    """Assign splits; a requested split left empty is an error, or a warning once
    bad cases were skipped (the user asked for the good ones whatever they leave)."""
    split_of = assign_splits(cases, options)
    empty = empty_splits(split_of, options)
    if empty:
        patients = len({c.patient_id for c in cases if c.labelled})
        asked = (
            f"{options.folds} folds"
            if options.folds
            else "split " + " ".join(f"{r:g}" for r in options.split)
        )
        msg = (
            f"split{'s' if len(empty) > 1 else ''} {', '.join(empty)} would be empty: "
            f"{patients} labelled patient{'s' if patients != 1 else ''} for {asked}"
        )
        if not after_skipping:
            fewer = "fewer folds" if options.folds else "fewer splits (e.g. --split 1 0 0)"
            raise ConversionError(f"{msg}; ask for {fewer} or add cases")
        warn(f"{msg} (after skipping bad cases)")
    return split_of


def _convert_all(
    cases: Sequence[CaseSource],
    split_of: Mapping[str, str],
    options: ConvertOptions,
    work: Path,
    workers: int,
    progress: bool,
    run: _Run,
) -> None:
    """Convert ``cases`` into ``work``: records to ``run.records``, bad cases to ``run.failed``."""
    tasks = []
    for case in cases:
        key = case_key(case, split_of[case.case_id], options)
        cached = cached_record(work, volume_id(case.case_id), key)
        if cached is not None:
            run.records[cached["volume_id"]] = cached
        else:
            tasks.append((case, split_of[case.case_id], options, str(work), key))
    bar = tqdm(total=len(cases), initial=len(cases) - len(tasks), disable=not progress,
               desc="converting", unit="case")  # fmt: skip

    def collect(task: tuple, result: tuple[str, dict | str]) -> None:
        status, value = result
        if status == "ok":
            run.records[value["volume_id"]] = value
        else:  # go on: every bad case is listed at the end
            run.failed[task[0].case_id] = value
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
