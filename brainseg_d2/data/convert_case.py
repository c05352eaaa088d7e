"""Converting one case: read, normalise, pick slices, annotate, write PNGs and a record.

The straight line per case is read files ->
:func:`~brainseg_d2.data.preprocess.preprocess_volume` -> label slices ->
connected components per category -> RLE, PNGs. 3D cases
(:class:`~brainseg_d2.data.sources.Case`) and stacks of 2D slices
(:class:`~brainseg_d2.data.sources_2d.SliceCase`) differ only in how they are
loaded (:data:`LOADERS`); slice selection, annotation and writing are shared.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from pycocotools import mask as mask_util

from brainseg_d2.data.coco_writer import write_json
from brainseg_d2.data.convert_plan import ConvertOptions, tool_version
from brainseg_d2.data.png_writer import PngWriter
from brainseg_d2.data.preprocess import interleave, preprocess_volume
from brainseg_d2.data.sources import Case
from brainseg_d2.data.sources_2d import SliceCase, check_slice_case, read_slice_case
from brainseg_d2.data.volume_io import VolumeError, check_same_geometry, read_header, read_image
from brainseg_d2.labels import TARGETS, get_convention, get_target, raw_to_tissue
from brainseg_d2.structures import SliceGeometry


def volume_id(case_id: str) -> str:
    """File-system safe id of a case (folder name under ``images/<split>``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id)


def case_key(case: Case | SliceCase, split: str, options: ConvertOptions) -> str:
    """Hash of everything a case's output depends on, to reuse it when resuming."""
    stats = []
    for path in case.files():
        st = os.stat(path) if os.path.exists(path) else None
        stats.append([path, st.st_size if st else -1, st.st_mtime_ns if st else -1])
    blob = json.dumps(
        [asdict(case), split, asdict(options), stats, tool_version()], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def check_volume_case(
    case: Case, required: Sequence[str], *, include_mask: bool = True, only_required: bool = False
) -> None:
    """Pre-flight for one 3D case from headers only: channels present, 3D, one grid.

    Shared by the converter and the volume predictor's CLI.

    Args:
        case: the case to check.
        required: channel names that must be present.
        include_mask: also check the label map (when the case has one).
        only_required: check only the ``required`` channels' files, not every channel.

    Raises:
        VolumeError: naming the case and the channel or file.
    """
    for name in required:
        if name not in case.channels:
            where = case.expected.get(name, "not provided")
            raise VolumeError(f"case {case.case_id}: missing channel '{name}' ({where})")
    items = (
        [(n, case.channels[n]) for n in required] if only_required else list(case.channels.items())
    )
    if include_mask:
        items.append(("mask", case.mask))
    headers = {}
    for name, path in items:
        if path is None or os.path.isdir(path):
            continue  # no mask, or a DICOM series (checked when read)
        header = read_header(path)
        if header.GetDimension() != 3:
            raise VolumeError(
                f"case {case.case_id}: {path}: expected a 3D volume, got "
                f"{header.GetDimension()}D of size {header.GetSize()}"
            )
        headers[name] = header
    check_same_geometry(headers, case_id=case.case_id)


def _check_volume_headers(case: Case, options: ConvertOptions) -> None:
    check_volume_case(case, options.channels or ())


def _check_slice_headers(case: SliceCase, options: ConvertOptions) -> None:
    check_slice_case(case, options.channels or (), get_target(options.target or "binary"))


#: Case type -> pre-flight check (files exist, headers readable and consistent).
CHECKS: dict[type, Callable] = {Case: _check_volume_headers, SliceCase: _check_slice_headers}


def check_case_headers(case: Case | SliceCase, options: ConvertOptions) -> None:
    """Cheap pre-flight: files exist, headers read, right dimension, same grid.

    Args:
        case: a 3D case or a 2D slice case.
        options: resolved options (channels and target are checked against the case).

    Raises:
        VolumeError: naming the case and file.
    """
    CHECKS[type(case)](case, options)


def _tissue_slices(raw: np.ndarray, convention_name: str, files: Sequence[str]) -> np.ndarray:
    """Raw label slices (S, H, W) -> uint8 tissue codes, validating the values.

    Args:
        raw: raw label slices.
        convention_name: their label convention.
        files: the label file (3D), or the file of each slice (2D), named in errors.
    """

    def where(bad_slices: np.ndarray) -> str:
        return files[int(np.flatnonzero(bad_slices)[0])] if len(files) > 1 else files[0]

    if raw.dtype.kind == "f":
        frac = raw != np.round(raw)
        if frac.any():
            raise VolumeError(
                f"{where(_any_per_slice(frac))}: non-integer label values (e.g. {raw[frac][0]:g})"
            )
        raw = raw.astype(np.int32)
    convention = get_convention(convention_name)
    if convention.name == "binary":
        raw = np.where(raw == 255, 1, raw)  # 0/255 masks
    tissue = np.zeros(raw.shape, dtype=np.uint8)
    # Only slices holding labels need the lookup; raw_to_tissue validates values.
    rows = np.flatnonzero(_any_per_slice(raw))
    lo, hi = (rows[0], rows[-1] + 1) if rows.size else (0, 1)
    try:
        tissue[lo:hi] = raw_to_tissue(raw[lo:hi], convention)
    except ValueError as exc:
        allowed = np.array(sorted(convention.raw_to_tissue))
        bad = ~np.isin(raw, allowed).reshape(raw.shape[0], -1).all(axis=1)
        raise VolumeError(f"{where(bad)}: {exc}") from None
    return tissue


def _any_per_slice(array: np.ndarray) -> np.ndarray:
    return array.reshape(array.shape[0], -1).any(axis=1)


@dataclass
class LoadedCase:
    """A case read and normalised, before slices are picked.

    Attributes:
        slices: (S, H, W, N) uint8 slices, channels in ``options.channels`` order.
        brain_any: (S,) bool, slice holds at least one brain voxel.
        tissue: (S, H, W) uint8 tissue codes, or None for an unlabelled case.
        geometry: how the slices map back to the source grid.
        intensity: channel -> [low, high] source values mapped to 0 and 255.
        source: JSON-able description of the input files (``volumes.json``).
    """

    slices: np.ndarray
    brain_any: np.ndarray
    tissue: np.ndarray | None
    geometry: SliceGeometry
    intensity: dict[str, list[float]]
    source: dict


def load_volume_case(case: Case, options: ConvertOptions) -> LoadedCase:
    """Read a 3D case and cut it into normalised slices along ``options.slice_axis``."""
    pre_opts = options.preprocess()
    used = list(pre_opts.channels)
    paths = [case.channels[c] for c in used] + ([case.mask] if case.mask else [])
    # Inflating (zlib, ITK) releases the GIL: the files are read at once. map()
    # raises the first error in file order, as reading one by one would.
    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        read = list(pool.map(read_image, paths))
    images = dict(zip(used, read))
    mask_image = read[len(used)] if case.mask else None
    grid = dict(images, **({"mask": mask_image} if mask_image is not None else {}))
    check_same_geometry(grid, case_id=case.case_id)
    pre = preprocess_volume(images, pre_opts, case_id=case.case_id, sources=case.channels)
    del images
    tissue = None
    if mask_image is not None:
        raw = pre.geometry.label_slices(mask_image)
        tissue = _tissue_slices(raw, case.label_convention, [case.mask])
    return LoadedCase(
        slices=pre.slices,
        brain_any=_any_per_slice(pre.brain),
        tissue=tissue,
        geometry=pre.geometry,
        intensity=pre.intensity,
        source={"channels": dict(case.channels), "mask": case.mask},
    )


def load_slice_case(case: SliceCase, options: ConvertOptions) -> LoadedCase:
    """Read a stack of 2D slices (one volume, spacing 1, identity direction).

    8-bit images are used as they are (they are already windowed for display;
    re-stretching 8-bit values would only re-quantise them); the brain is the
    non-zero pixels as in 3D. Other pixel types go through the same
    :func:`~brainseg_d2.data.preprocess.preprocess_volume` as 3D volumes, with
    the stack as the volume.
    """
    pre_opts = options.preprocess()
    stack = read_slice_case(case, get_target(options.target or "binary"))
    used = list(pre_opts.channels)
    first = sitk.GetImageFromArray(stack.channels[used[0]])
    if all(stack.channels[c].dtype == np.uint8 for c in used):
        slices = interleave([stack.channels[c] for c in used])
        brain = np.zeros(slices.shape[:3], dtype=bool)
        for c in used:
            brain |= stack.channels[c] != 0
        geometry = SliceGeometry.from_image(first, "axial")
        intensity = {c: [0.0, 255.0] for c in used}
    else:
        images = {c: sitk.GetImageFromArray(stack.channels[c]) for c in used}
        pre = preprocess_volume(images, pre_opts, case_id=case.case_id)
        slices, brain, geometry, intensity = pre.slices, pre.brain, pre.geometry, pre.intensity
    tissue = stack.tissue
    if stack.raw_labels is not None:
        tissue = _tissue_slices(stack.raw_labels, case.label_convention, stack.label_files)
    return LoadedCase(
        slices=slices,
        brain_any=_any_per_slice(brain),
        tissue=tissue,
        geometry=geometry,
        intensity=intensity,
        source=case.source_record(),
    )


#: Case type -> loader (read + normalise).
LOADERS: dict[type, Callable] = {Case: load_volume_case, SliceCase: load_slice_case}


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
    loaded: LoadedCase, case_id: str, split: str, options: ConvertOptions
) -> list[dict]:
    """Kept slices of a case with their annotations.

    Returns:
        ``[{"slice_index": s, "annotations": [...]}, ...]`` in slice order: slices
        with brain or labels, minus the training slices without annotations
        that the ``empty_ratio`` draw drops.
    """
    tissue = loaded.tissue
    label_any = _any_per_slice(tissue) if tissue is not None else loaded.brain_any & False
    # Only training annotations drop small components; val/test keep every
    # labelled pixel, so that they are exact ground truth.
    min_area = options.min_area if split == "train" else 0
    slices, empty = [], []
    for s in np.flatnonzero(loaded.brain_any | label_any):
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


def load_case(case: Case | SliceCase, options: ConvertOptions) -> LoadedCase:
    """Check, read and normalise one case: the part of :func:`process_case` that can run ahead.

    Raises:
        VolumeError: bad input, naming the file.
    """
    check_case_headers(case, options)
    return LOADERS[type(case)](case, options)


def process_case(
    case: Case | SliceCase,
    split: str,
    options: ConvertOptions,
    work: str,
    key: str,
    writer: PngWriter | None = None,
    loaded: LoadedCase | None = None,
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
        "source": loaded.source,
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


def case_error(case: Case | SliceCase, exc: BaseException) -> str:
    """One-line message for a bad case, starting with ``case <id>:``."""
    msg = " ".join(str(exc).split())
    prefix = f"case {case.case_id}"
    return msg if msg.startswith(prefix) else f"{prefix}: {msg}"


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
