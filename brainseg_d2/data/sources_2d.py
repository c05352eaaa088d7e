"""Finding and reading 2D slice datasets: TCGA LGG folders and VIA polygon projects.

Two layouts (``--layout tcga_lgg|via``; ``auto`` picks them when unambiguous):

* ``tcga_lgg`` (the Kaggle "LGG MRI segmentation" layout of TCGA lower-grade
  gliomas): ``<patient_folder>/<case>_<N>.tif`` with ``<case>_<N>_mask.tif``,
  found at any depth (``.tiff``/``.png`` work too). Each image is a 3-channel
  RGB slice whose channels are pre-contrast, FLAIR and post-contrast (named
  ``pre_contrast``, ``flair``, ``post_contrast``); masks are 0/255 (convention
  ``binary``). The slices of one ``<case>`` in one folder form one volume
  ordered by N (slice index = position in that order, gaps in N closed). The
  patient id is the folder name (or ``patient_pattern`` on the case id).
* ``via``: VGG Image Annotator exports (``via_region_data.json``, or a project
  file with ``_via_img_metadata``): a dict keyed by ``<filename><size>`` whose
  values hold ``filename`` and ``regions`` (a list, or a dict in VIA 1), each
  with ``shape_attributes`` {``name: polygon``, ``all_points_x``,
  ``all_points_y``} and ``region_attributes``. Images lie beside the JSON; the
  input is one JSON file or a folder searched (at any depth) for them. Every
  image is its own one-slice volume, case id = its path relative to the input
  folder without extension, patient id = case id (or ``patient_pattern``).
  Channels: ``red``, ``green``, ``blue`` (grey images fill all three).

  A region's class is the value of its ``class``, ``label``, ``name``,
  ``category`` or ``type`` attribute (the first present; a lone attribute of
  another name counts too; VIA checkbox attributes give the ticked option).
  Class names match the target's category names case-insensitively; a region
  without a class belongs to the only category of a one-category target
  (``binary``: ``tumour``). A project naming a category of a multi-class
  target (``necrotic``, ``WT``, ...) has convention ``brats2023``, whose raw values
  1, 2, 3 are the internal tissue codes (NCR, ED, ET), so predictions written
  back as label maps use those; otherwise ``binary``.

Problems inside a case (missing mask or image, unreadable file, size mismatch,
polygon with fewer than 3 points, unknown class) are reported by
:func:`check_slice_case` when the case is converted, so that ``--skip-bad`` can
skip just that case.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from brainseg_d2.data.sources import (
    SourceError,
    _check_input_dir,
    _patient_of,
    _sorted_unique,
    walk,
)
from brainseg_d2.data.volume_io import VolumeError, read_header
from brainseg_d2.labels import TARGETS, Target

TCGA_CHANNELS = ("pre_contrast", "flair", "post_contrast")
RGB_CHANNELS = ("red", "green", "blue")
_TCGA_FILE = re.compile(r"^(?P<case>.+)_(?P<n>\d+)(?P<mask>_mask)?(?P<ext>\.tiff?|\.png)$", re.I)
_CLASS_KEYS = ("class", "label", "name", "category", "type")


@dataclass(frozen=True)
class Region:
    """One VIA region as annotated (checked later by :func:`check_slice_case`).

    Attributes:
        class_name: class from ``region_attributes``; None when it has none.
        shape: ``shape_attributes.name`` (only ``polygon`` is converted).
        xs, ys: vertex columns and rows in pixels.
    """

    class_name: str | None
    shape: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


@dataclass(frozen=True)
class SliceFile:
    """One 2D slice of a :class:`SliceCase`.

    Attributes:
        number: slice number N from the file name (VIA: 0).
        image: image file.
        mask: label image (``tcga_lgg``), else None.
        regions: VIA regions of the image (``via``), else None.
    """

    number: int
    image: str
    mask: str | None = None
    regions: tuple[Region, ...] | None = None


@dataclass(frozen=True)
class SliceCase:
    """A volume made of 2D slices (the 2D counterpart of ``sources.Case``).

    Attributes:
        case_id: unique id (becomes the ``volume_id``).
        patient_id: patients, not cases, are split into train/val/test.
        layout: ``tcga_lgg`` or ``via``.
        channels: names of the image channels, in the file's R, G, B order.
        slices: the slices in volume order.
        label_convention: convention of the masks (``binary`` for TCGA).
        annotations: the VIA JSON file, else None.
        expected: as in ``sources.Case`` (always empty: all channels are in each file).
    """

    case_id: str
    patient_id: str
    layout: str
    channels: tuple[str, ...]
    slices: tuple[SliceFile, ...]
    label_convention: str = "binary"
    annotations: str | None = None
    expected: Mapping[str, str] = field(default_factory=dict)

    is_2d: ClassVar[bool] = True

    @property
    def labelled(self) -> bool:
        return True  # a TCGA slice without mask, or an image missing from the JSON, is an error

    def files(self) -> list[str]:
        """Images and masks in slice order, then the annotation file."""
        out = [p for s in self.slices for p in (s.image, s.mask) if p]
        return out + ([self.annotations] if self.annotations else [])

    def source_record(self) -> dict:
        """JSON-able description of the inputs, for ``volumes.json``."""
        return {
            "layout": self.layout,
            "annotations": self.annotations,
            "slices": [{"number": s.number, "image": s.image, "mask": s.mask} for s in self.slices],
        }


# ----------------------------------------------------------------------- finding
def is_tcga_mask_name(name: str) -> bool:
    """True for a file name like ``<case>_<N>_mask.tif``."""
    match = _TCGA_FILE.match(name)
    return bool(match and match["mask"])


def find_tcga_lgg_cases(
    root: str | os.PathLike,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[SliceCase]:
    """Find TCGA LGG style slice folders under ``root`` (any depth).

    Args:
        root: folder holding the patient folders.
        label_convention: convention of the masks.
        patient_pattern: regex on the case id giving the patient id; default:
            the folder name.

    Returns:
        cases sorted by case id. A slice whose image or mask is missing keeps
        the expected path (reported when the case is checked).

    Raises:
        SourceError: missing/empty folder, no slices, a slice number twice.
    """
    root = Path(root).resolve()
    _check_input_dir(root)
    groups: dict[tuple[Path, str], dict[int, dict[str, str]]] = {}
    for dirpath, _, filenames in walk(root):
        for name in filenames:
            match = _TCGA_FILE.match(name)
            if not match:
                continue
            kind = "mask" if match["mask"] else "image"
            entry = groups.setdefault((Path(dirpath), match["case"]), {})
            files = entry.setdefault(int(match["n"]), {})
            if kind in files:
                raise SourceError(
                    f"slice {match['n']} of '{match['case']}' twice: {files[kind]} and "
                    f"{Path(dirpath) / name}"
                )
            files[kind] = str(Path(dirpath) / name)
    if not any("mask" in f for entry in groups.values() for f in entry.values()):
        raise SourceError(
            f"no TCGA LGG slices found under {root} (expected <patient>/<case>_<N>.tif "
            f"with <case>_<N>_mask.tif)"
        )
    cases = []
    for (folder, case_id), entry in groups.items():
        slices = []
        for n in sorted(entry):
            files = entry[n]
            if "image" in files:
                image = files["image"]
                stem, ext = os.path.splitext(image)
                mask = files.get("mask", f"{stem}_mask{ext}")
            else:
                mask = files["mask"]
                stem, ext = os.path.splitext(mask)
                image = stem[: -len("_mask")] + ext
            slices.append(SliceFile(n, image, mask))
        patient = _patient_of(case_id, patient_pattern) if patient_pattern else folder.name
        cases.append(
            SliceCase(case_id, patient, "tcga_lgg", TCGA_CHANNELS, tuple(slices), label_convention)
        )
    return _sorted_unique(cases)


def _via_entries(path: Path) -> dict | None:
    """The ``<filename><size>`` dict of a VIA export or project file; None if not VIA."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]
    if not isinstance(data, dict) or not data:
        return None
    ok = all(isinstance(v, dict) and "filename" in v and "regions" in v for v in data.values())
    return data if ok else None


def is_via_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a JSON file holding VIA image annotations."""
    path = Path(path)
    return path.suffix.lower() == ".json" and _via_entries(path) is not None


def _region_class(attrs) -> str | None:
    if not isinstance(attrs, dict) or not attrs:
        return None
    key = next((k for k in _CLASS_KEYS if k in attrs), None)
    if key is None:
        if len(attrs) != 1:
            return None
        key = next(iter(attrs))
    value = attrs[key]
    if isinstance(value, dict):  # checkbox attribute: {"option": true, ...}
        value = "|".join(k for k, ticked in value.items() if ticked)
    value = str(value).strip() if value is not None else ""
    return value or None


def _regions(raw, where: str) -> tuple[Region, ...]:
    if isinstance(raw, dict):  # VIA 1: {"0": region, "1": region, ...}
        raw = list(raw.values())
    if not isinstance(raw, list):
        raise SourceError(f"{where}: 'regions' must be a list or a dict")
    out = []
    for region in raw:
        region = region if isinstance(region, dict) else {}
        shape = region.get("shape_attributes")
        shape = shape if isinstance(shape, dict) else {}
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        out.append(
            Region(
                _region_class(region.get("region_attributes")),
                str(shape.get("name", "")),
                tuple(xs) if isinstance(xs, list) else (),
                tuple(ys) if isinstance(ys, list) else (),
            )
        )
    return tuple(out)


def _via_convention(names: set[str]) -> str:
    multi = {n.lower() for t in TARGETS.values() if len(t.categories) > 1 for n in t.categories}
    return "brats2023" if {n.lower() for n in names} & multi else "binary"


def find_via_cases(
    root: str | os.PathLike,
    *,
    label_convention: str | None = None,
    patient_pattern: str | None = None,
) -> list[SliceCase]:
    """Read VIA polygon annotations; each annotated image is a one-slice case.

    Args:
        root: a VIA JSON file, or a folder searched at any depth for them.
        label_convention: default: ``brats2023`` when a class names a category
            of a multi-class target, else ``binary`` (see the module docstring).
        patient_pattern: regex on the case id giving the patient id (default: case id).

    Returns:
        cases sorted by case id.

    Raises:
        SourceError: no VIA file found, a given file that is not VIA,
            duplicate case ids.
    """
    root = Path(root).resolve()
    if root.is_file():
        if _via_entries(root) is None:
            raise SourceError(f"{root} is not a VIA annotation file (dict of filename/regions)")
        files, base = [root], root.parent
    else:
        _check_input_dir(root)
        files = sorted(p for p in root.rglob("*.json") if _via_entries(p) is not None)
        base = root
        if not files:
            raise SourceError(f"no VIA annotation JSON found under {root}")
    found = []
    for path in files:
        for key, entry in _via_entries(path).items():
            image = path.parent / str(entry["filename"])
            case_id = image.relative_to(base).with_suffix("").as_posix()
            regions = _regions(entry["regions"], f"{path}: {key}")
            found.append((case_id, image, regions, path))
    names = {r.class_name for _, _, regions, _ in found for r in regions if r.class_name}
    convention = label_convention or _via_convention(names)
    cases = [
        SliceCase(
            case_id,
            _patient_of(case_id, patient_pattern),
            "via",
            RGB_CHANNELS,
            (SliceFile(0, str(image), None, regions),),
            convention,
            str(path),
        )
        for case_id, image, regions, path in found
    ]
    return _sorted_unique(cases)


# ----------------------------------------------------------------------- checking
def _category_index(region: Region, target: Target, where: str) -> int:
    names = target.category_names
    if region.class_name is None:
        if len(names) == 1:
            return 0
        raise VolumeError(f"{where}: region without a class; target '{target.name}' has {names}")
    lower = [n.lower() for n in names]
    if region.class_name.lower() not in lower:
        raise VolumeError(
            f"{where}: unknown class '{region.class_name}' (target '{target.name}' has "
            f"{names}; choose another with --target)"
        )
    return lower.index(region.class_name.lower())


def _check_regions(case: SliceCase, sl: SliceFile, target: Target) -> None:
    for i, region in enumerate(sl.regions or ()):
        where = f"{case.annotations}: {Path(sl.image).name}: region {i}"
        if region.shape != "polygon":
            raise VolumeError(f"{where}: shape '{region.shape}' is not a polygon")
        if len(region.xs) != len(region.ys):
            raise VolumeError(f"{where}: {len(region.xs)} x but {len(region.ys)} y coordinates")
        if len(region.xs) < 3:
            raise VolumeError(f"{where}: polygon with {len(region.xs)} points (need >= 3)")
        if not all(isinstance(v, (int, float)) for v in (*region.xs, *region.ys)):
            raise VolumeError(f"{where}: non-numeric polygon coordinates")
        _category_index(region, target, where)


def check_slice_case(case: SliceCase, channels: Sequence[str], target: Target) -> None:
    """Pre-flight: files exist, headers read, 2D, one size; VIA regions valid.

    Args:
        case: the case.
        channels: channel names the conversion uses.
        target: the target (VIA class names must be its categories).

    Raises:
        VolumeError: naming the case and the file.
    """
    for name in channels:
        if name not in case.channels:
            raise VolumeError(
                f"case {case.case_id}: no channel '{name}' (have {list(case.channels)})"
            )
    size = None
    for sl in case.slices:
        header = read_header(sl.image)
        if header.GetDimension() != 2:
            raise VolumeError(
                f"{sl.image}: expected a 2D image, got {header.GetDimension()}D "
                f"of size {header.GetSize()}"
            )
        if size is None:
            size, first = header.GetSize(), sl.image
        elif header.GetSize() != size:
            raise VolumeError(f"{sl.image}: size {header.GetSize()} differs from {first} {size}")
        if sl.mask is not None:
            if not os.path.exists(sl.mask):
                raise VolumeError(f"{sl.image}: no mask ({sl.mask} not found)")
            mask_size = read_header(sl.mask).GetSize()
            if mask_size != size:
                raise VolumeError(f"{sl.mask}: size {mask_size} differs from its image {size}")
        _check_regions(case, sl, target)


# ----------------------------------------------------------------------- reading
@dataclass
class SliceStack:
    """The pixels of a :class:`SliceCase`.

    Attributes:
        channels: channel name -> (S, H, W) array (the files' pixel type).
        raw_labels: (S, H, W) raw mask values (``tcga_lgg``), else None.
        tissue: (S, H, W) uint8 tissue codes from polygons (``via``), else None.
        label_files: the file behind each label slice, for error messages.
    """

    channels: dict[str, np.ndarray]
    raw_labels: np.ndarray | None
    tissue: np.ndarray | None
    label_files: list[str]


def read_slice_image(path: str, num_channels: int) -> np.ndarray:
    """Read a 2D image as (H, W, num_channels) in R, G, B order.

    Args:
        path: image file OpenCV reads (tif, png, jpg, ...).
        num_channels: 3 for RGB (grey images are repeated; alpha is dropped) or 1.

    Raises:
        VolumeError: unreadable file, or colour where one channel is expected.
    """
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VolumeError(f"{path}: empty file (0 bytes)")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise VolumeError(f"{path}: cannot read image")
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[2] >= 3:
        image = image[..., 2::-1]  # BGR(A) -> RGB
    if num_channels == 1 and image.shape[2] != 1:
        if not (image == image[..., :1]).all():
            raise VolumeError(f"{path}: expected one channel, got {image.shape[2]} that differ")
        image = image[..., :1]
    if image.shape[2] != num_channels:
        image = np.repeat(image[..., :1], num_channels, axis=2)
    return image


def rasterise_regions(
    regions: Sequence[Region], shape: tuple[int, int], target: Target
) -> np.ndarray:
    """Fill VIA polygons into one mask per target category.

    Vertices are rounded to the nearest pixel; ``cv2.fillPoly`` fills the
    polygon including its outline. Polygons of one class are merged. For
    targets whose categories are disjoint (``labels``), a region drawn later in
    the file covers earlier ones of other classes (as VIA shows them).

    Args:
        regions: checked polygons (:func:`check_slice_case`).
        shape: (H, W).
        target: gives the categories.

    Returns:
        (C, H, W) bool, C = number of target categories.
    """
    masks = np.zeros((len(target.categories), *shape), dtype=np.uint8)
    for region in regions:
        c = _category_index(region, target, "region")
        points = np.rint(np.stack([region.xs, region.ys], axis=1)).astype(np.int32)
        if target.nested:
            cv2.fillPoly(masks[c], [points], 1)
            continue
        drawn = np.zeros(shape, dtype=np.uint8)
        cv2.fillPoly(drawn, [points], 1)
        masks[:, drawn.astype(bool)] = 0
        masks[c] |= drawn
    return masks.astype(bool)


def read_slice_case(case: SliceCase, target: Target) -> SliceStack:
    """Read every slice of a checked case.

    Args:
        case: the case (after :func:`check_slice_case`).
        target: for VIA, the categories the polygons are rasterised into.

    Returns:
        :class:`SliceStack` with the case's channels as (S, H, W) arrays.

    Raises:
        VolumeError: unreadable file, pixel type or size changing between slices.
    """
    images = [read_slice_image(sl.image, len(case.channels)) for sl in case.slices]
    for sl, image in zip(case.slices, images):
        if image.shape != images[0].shape or image.dtype != images[0].dtype:
            raise VolumeError(
                f"{sl.image}: {image.dtype} {image.shape[:2]} differs from "
                f"{case.slices[0].image} {images[0].dtype} {images[0].shape[:2]}"
            )
    stack = np.stack(images)
    channels = {name: np.ascontiguousarray(stack[..., k]) for k, name in enumerate(case.channels)}
    raw = tissue = None
    files = [sl.mask or case.annotations or sl.image for sl in case.slices]
    if case.layout == "via":
        shape = stack.shape[1:3]
        tissue = np.stack(
            [
                target.tissue_from_masks(rasterise_regions(sl.regions or (), shape, target))
                for sl in case.slices
            ]
        )
    else:
        raw = np.stack([read_slice_image(sl.mask, 1)[..., 0] for sl in case.slices])
    return SliceStack(channels, raw, tissue, files)
