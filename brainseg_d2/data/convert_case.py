"""Converting one case: read, normalise, pick slices, annotate, write PNGs and a record.

The straight line per case is ``case.check`` -> ``case.load`` (read files,
:func:`~brainseg_d2.data.preprocess.preprocess_volume`, label slices as tissue
codes) -> connected components per category -> RLE, PNGs. 3D cases and stacks
of 2D slices (:class:`~brainseg_d2.data.sources.CaseSource`) differ only in how
they check and load themselves; slice selection, annotation and writing are
shared.

* a slice is dropped when it holds no brain voxel and no label voxel.
* "empty" training slices are slices without annotations; ``round(ratio * n)``
  of them are kept per volume, drawn with a generator seeded by (seed, case id).
* a case's PNGs go to ``<work>/images/<split>/<volume_id>/<slice:04d>.png`` (all
  channels, as tiles), its label PNGs (tissue codes, every labelled voxel, for
  Detectron2's ``sem_seg``) to ``<work>/labels/<split>/<volume_id>/<slice:04d>.png``
  and its record to ``<work>/cases/<volume_id>.json``; the record stores a hash of
  everything the output depends on, so an interrupted run reuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_util

from brainseg_d2.data.coco_writer import write_json
from brainseg_d2.data.convert_plan import ConvertOptions, tool_version
from brainseg_d2.data.io.png import PngWriter
from brainseg_d2.data.preprocess import PreprocessedVolume
from brainseg_d2.data.sources import CaseSource
from brainseg_d2.labels import TARGETS, get_target


def volume_id(case_id: str) -> str:
    """File-system safe id of a case (folder name under ``images/<split>``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def case_key(case: CaseSource, split: str, options: ConvertOptions) -> str:
    """Hash of everything a case's output depends on, to reuse it when resuming."""
    stats = []
    for path in case.files():
        st = os.stat(path) if os.path.exists(path) else None
        stats.append([path, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    blob = json.dumps(
        [asdict(case), split, asdict(options), stats, tool_version()], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def check_case(case: CaseSource, options: ConvertOptions) -> None:
    """Cheap pre-flight: files exist, headers read, right dimension, same grid.

    Args:
        case: a 3D case or a 2D slice case.
        options: resolved options (channels and target are checked against the case).

    Raises:
        VolumeError: naming the case and file.
    """
    case.check(options.channels or (), get_target(options.target or "binary"))


def load_case(case: CaseSource, options: ConvertOptions) -> PreprocessedVolume:
    """Check, read and normalise one case: the part of :func:`process_case` that can run ahead.

    Returns:
        the preprocessed volume with the case's ``tissue``.

    Raises:
        VolumeError: bad input, naming the file.
    """
    check_case(case, options)
    return case.load(options.preprocess(), get_target(options.target or "binary"))


def slice_annotations(
    tissue: np.ndarray, target_name: str, min_area: int, connectivity: int = 8
) -> list[dict]:
    """Connected components per category of one slice as COCO annotations.

    Args:
        tissue: (H, W) uint8 tissue codes.
        target_name: ``labels``, ``regions`` or ``binary``.
        min_area: components with fewer pixels are dropped.
        connectivity: 4 or 8.

    Returns:
        annotations without ``id``/``image_id``: ``category_id``, ``segmentation``
        (compressed RLE, ``counts`` as str), ``area``, ``bbox`` [x, y, w, h], ``iscrowd``.
    """
    out = []
    masks = TARGETS[target_name].masks_from_tissue(tissue)
    for category_id, mask in enumerate(masks, start=1):
        rows = np.flatnonzero(mask.any(axis=1))
        if not rows.size:
            continue
        # Labelling only the mask's bounding box: tumours cover a small part of a
        # slice. OpenCV labels 2 x 2 blocks, so the box starts on even coordinates:
        # the blocks, hence the order of the components, are those of the whole slice.
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = rows[0] & ~1, rows[-1] + 1, cols[0] & ~1, cols[-1] + 1
        n, comp, stats, _ = cv2.connectedComponentsWithStats(
            np.ascontiguousarray(mask[y0:y1, x0:x1]).view(np.uint8), connectivity=connectivity
        )
        for k in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[k])
            if area < max(min_area, 1):
                continue
            component = np.zeros(mask.shape, dtype=np.uint8, order="F")
            component[y0:y1, x0:x1] = comp == k
            rle = mask_util.encode(component)
            out.append(
                {
                    "category_id": category_id,
                    "segmentation": {
                        "size": [int(s) for s in rle["size"]],
                        "counts": rle["counts"].decode("ascii"),
                    },
                    "area": area,
                    "bbox": [x + int(x0), y + int(y0), w, h],
                    "iscrowd": 0,
                }
            )
    return out


def select_slices(
    loaded: PreprocessedVolume, case_id: str, split: str, options: ConvertOptions
) -> list[dict]:
    """Kept slices of a case with their annotations.

    Returns:
        ``[{"slice_index": s, "annotations": [...]}, ...]`` in slice order: slices
        with brain or labels, minus the training slices without annotations
        that the ``empty_ratio`` draw drops.
    """
    tissue = loaded.tissue
    brain_any = loaded.brain_any
    label_any = (
        tissue.reshape(tissue.shape[0], -1).any(axis=1) if tissue is not None else brain_any & False
    )
    # Only training annotations drop small components; val/test keep every
    # labelled pixel, so that they are exact ground truth.
    min_area = options.min_area if split == "train" else 0
    slices, empty = [], []
    for s in np.flatnonzero(brain_any | label_any):
        anns = (
            slice_annotations(tissue[s], options.target, min_area, options.connectivity)
            if label_any[s]
            else []
        )
        slices.append({"slice_index": int(s), "annotations": anns})
        if not anns:
            empty.append(len(slices) - 1)
    if split == "train" and empty:
        rng = np.random.default_rng([options.seed, zlib.crc32(case_id.encode())])
        n_keep = int(round(options.empty_ratio * len(empty)))
        drop = set(empty) - set(rng.choice(empty, size=n_keep, replace=False).tolist())
        slices = [s for i, s in enumerate(slices) if i not in drop]
    return slices


#: Folders of a converted dataset (and its work folder) that hold per-volume PNGs.
PNG_FOLDERS = ("images", "labels")


def clear_case_images(work: Path, vid: str) -> None:
    """Remove a volume's image and label PNG folders from every split of the work folder."""
    for kind in PNG_FOLDERS:
        if (work / kind).is_dir():
            for split_dir in (work / kind).iterdir():
                shutil.rmtree(split_dir / vid, ignore_errors=True)


def process_case(
    case: CaseSource,
    split: str,
    options: ConvertOptions,
    work: str,
    key: str,
    writer: PngWriter | None = None,
    loaded: PreprocessedVolume | None = None,
) -> dict:
    """Convert one case: write its PNGs and record into ``work``.

    Args:
        case: the case; ``options`` must be resolved
            (:func:`~brainseg_d2.data.convert_plan.resolve_options`).
        split: its split name.
        options: conversion options.
        work: the work folder.
        key: :func:`case_key` value stored in the record for resuming.
        writer: writes the PNGs, and then the record, possibly after this
            returns (the caller closes it); None: both are written before
            this returns.
        loaded: the case already read by :func:`load_case` (None: read it here).

    Returns:
        the case record (also written to ``work/cases/<volume_id>.json``).

    Raises:
        VolumeError: bad input, naming the file.
        PngWriteError: PNGs could not be written.
    """
    work_dir, vid = Path(work), volume_id(case.case_id)
    if loaded is None:
        loaded = load_case(case, options)
    slices = select_slices(loaded, case.case_id, split, options)
    clear_case_images(work_dir, vid)
    kept = [e["slice_index"] for e in slices]
    imaged = context_slice_indices(kept, loaded.brain_any, options.context_slices)
    geometry = loaded.geometry.with_kept_slices(kept).to_json()
    record = {
        "key": key,
        "volume_id": vid,
        "case_id": case.case_id,
        "patient_id": case.patient_id,
        "split": split,
        "labelled": case.labelled,
        "label_convention": case.label_convention,
        "source": case.source_record(),
        "geometry": geometry,
        "intensity": loaded.intensity,
        "slices": slices,
        "image_slices": imaged,
    }

    def finish() -> None:
        write_json(work_dir / "cases" / f"{vid}.json", record)

    out_dir = work_dir / "images" / split / vid
    pngs = {
        "labels": loaded.tissue,
        "label_dir": work_dir / "labels" / split / vid,
        "label_indices": kept,
    }
    if writer is not None:
        writer.submit(loaded.slices, imaged, out_dir, options.png_compression, finish, **pngs)
    else:
        with PngWriter() as own:
            own.submit(loaded.slices, imaged, out_dir, options.png_compression, finish, **pngs)
    return record


def context_slice_indices(kept: Sequence[int], has_image: np.ndarray, context: int) -> list[int]:
    """Slices that get an image: the kept ones and their ``context`` neighbours on each side.

    Args:
        kept: slice indices in the COCO file.
        has_image: (S,) bool, slices that hold brain (others are all zero: not written).
        context: neighbours per side.

    Returns:
        sorted indices.
    """
    out = set(kept)
    for s in kept:
        for n in range(max(s - context, 0), min(s + context + 1, len(has_image))):
            if has_image[n]:
                out.add(n)
    return sorted(out)


def cached_record(work: Path, vid: str, key: str) -> dict | None:
    """The finished record of a volume in ``work`` if its key matches and its PNGs exist."""
    path = work / "cases" / f"{vid}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    wanted = {"images": record.get("image_slices", record["geometry"]["kept_slices"])}
    if record["labelled"]:
        wanted["labels"] = record["geometry"]["kept_slices"]
    for kind, indices in wanted.items():
        folder = work / kind / record["split"] / vid
        if not all((folder / f"{i:04d}.png").is_file() for i in indices):
            return None
    return record
