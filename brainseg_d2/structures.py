"""The typed core every stage shares: how a volume is sliced, what a dataset holds.

* :class:`SliceGeometry`: how a 3D volume maps to canonical 2D slices and back,
  bit-exactly (``volumes.json`` stores it per volume, :meth:`~SliceGeometry.to_json`).
* :class:`PreprocessOptions`: how volumes become 8-bit slices.
* :class:`DatasetInfo`: a converted dataset's ``dataset.json``, with its
  defaults written once.
* :func:`stack_slice_masks`: per-slice category masks -> one ``(C, S, H, W)`` volume.

No Detectron2 or torch imports: the converter, the predictor and the evaluator
all build on this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainseg_d2.data.volume_io import (
    VolumeError,
    axis_transform,
    orientation_code,
    reorient_array,
    restore_array,
)

#: Canonical orientation per slice axis (DICOM codes: letter = where the index
#: axis x, y, z points). Slices run along z, rows along y, columns along x.
CANONICAL_ORIENTATION: dict[str, str] = {
    "axial": "LPS",  # rows anterior->posterior, columns right->left, slices inferior->superior
    "coronal": "LIP",  # rows superior->inferior, columns right->left, slices anterior->posterior
    "sagittal": "PIL",  # rows superior->inferior, columns anterior->posterior, slices right->left
}

#: Every BraTS sequence, in the order they become image channels. T1 without
#: contrast is what tells enhancement apart in T1ce, so all four reach the model.
BRATS_CHANNELS = ("flair", "t1", "t1ce", "t2")

#: How slice PNGs hold their channels (``data.io.png.tile_channels``), in dataset.json.
IMAGE_LAYOUT = "channel_tiles"


def _floats(values: Iterable) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _ints(values: Iterable) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


@dataclass(frozen=True)
class CanonicalGrid:
    """The voxel grid of a volume after reorientation to its canonical orientation.

    Attributes:
        orientation: DICOM code of the canonical grid (:data:`CANONICAL_ORIENTATION`).
        permutation: canonical index axis ``i`` (x, y, z) is original axis ``permutation[i]``,
        flips: ... reversed when ``flips[i]``.
        size, spacing, origin: (x, y, z) of the canonical grid.
        direction: 9 row-major direction cosines of the canonical grid.
    """

    orientation: str
    permutation: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def to_json(self) -> dict:
        return {
            "orientation": self.orientation,
            "permutation": list(self.permutation),
            "flips": list(self.flips),
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> CanonicalGrid:
        return cls(
            orientation=str(data["orientation"]),
            permutation=_ints(data["permutation"]),
            flips=tuple(bool(f) for f in data["flips"]),
            size=_ints(data["size"]),
            spacing=_floats(data["spacing"]),
            origin=_floats(data["origin"]),
            direction=_floats(data["direction"]),
        )


@dataclass(frozen=True)
class SliceGeometry:
    """How a volume's voxel grid maps to canonical slices, and back, exactly.

    Slices run along numpy axis 0 of the canonical volume, each shown the
    radiological way (axial: anterior up, patient right on the left;
    coronal/sagittal: superior up). Everything needed to put slice predictions
    back into the original grid without the source file.

    Attributes:
        size, spacing, origin: (x, y, z) of the original image.
        direction: its 9 row-major direction cosines.
        orientation: its DICOM orientation code.
        canonical: the canonical grid the slices are cut from.
        slice_axis: ``axial``, ``coronal`` or ``sagittal``.
        kept_slices: indices of the slices a converted dataset holds (None
            outside a converted dataset).
    """

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    orientation: str
    canonical: CanonicalGrid
    slice_axis: str
    kept_slices: tuple[int, ...] | None = None

    @classmethod
    def from_image(cls, image: sitk.Image, slice_axis: str) -> SliceGeometry:
        """The geometry of a 3D image (only its header is used) for a slice axis.

        Raises:
            ValueError: unknown ``slice_axis``.
        """
        if slice_axis not in CANONICAL_ORIENTATION:
            raise ValueError(f"unknown slice_axis {slice_axis!r}")
        code = CANONICAL_ORIENTATION[slice_axis]
        size = _ints(image.GetSize())
        spacing = _floats(image.GetSpacing())
        direction = _floats(image.GetDirection())
        permutation, flips = axis_transform(direction, code)
        first = [0, 0, 0]
        for p, f in zip(permutation, flips):
            first[p] = size[p] - 1 if f else 0
        d = np.asarray(direction).reshape(3, 3)
        c_direction = [
            float(d[r, permutation[i]] * (-1.0 if flips[i] else 1.0))
            for r in range(3)
            for i in range(3)
        ]
        canonical = CanonicalGrid(
            orientation=code,
            permutation=tuple(permutation),
            flips=tuple(flips),
            size=tuple(size[p] for p in permutation),
            spacing=tuple(spacing[p] for p in permutation),
            origin=_floats(image.TransformIndexToPhysicalPoint(first)),
            direction=tuple(c_direction),
        )
        return cls(
            size=size,
            spacing=spacing,
            origin=_floats(image.GetOrigin()),
            direction=direction,
            orientation=orientation_code(direction),
            canonical=canonical,
            slice_axis=slice_axis,
        )

    @property
    def num_slices(self) -> int:
        """S, the number of canonical slices."""
        return self.canonical.size[2]

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(H, W) of a slice."""
        return self.canonical.size[1], self.canonical.size[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(S, H, W) of the canonical slice stack."""
        return (self.num_slices, *self.slice_shape)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) spacing of a slice in mm."""
        return self.canonical.spacing[1], self.canonical.spacing[0]

    @property
    def slice_thickness(self) -> float:
        """Distance between slices in mm."""
        return self.canonical.spacing[2]

    @property
    def voxel_spacing(self) -> tuple[float, float, float]:
        """(slice, row, column) spacing in mm: the spacing of a ``(S, H, W)`` stack."""
        return (self.slice_thickness, *self.pixel_spacing)

    def with_kept_slices(self, kept: Iterable[int]) -> SliceGeometry:
        return replace(self, kept_slices=_ints(kept))

    def to_json(self) -> dict:
        """The JSON form stored in ``volumes.json`` (derived sizes included for readers)."""
        out = {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "orientation": self.orientation,
            "canonical": self.canonical.to_json(),
            "slice_axis": self.slice_axis,
            "num_slices": self.num_slices,
            "slice_shape": list(self.slice_shape),
            "pixel_spacing": list(self.pixel_spacing),
            "slice_thickness": self.slice_thickness,
        }
        if self.kept_slices is not None:
            out["kept_slices"] = list(self.kept_slices)
        return out

    @classmethod
    def from_json(cls, data: Mapping) -> SliceGeometry:
        """Inverse of :meth:`to_json` (the derived keys are not read)."""
        kept = data.get("kept_slices")
        return cls(
            size=_ints(data["size"]),
            spacing=_floats(data["spacing"]),
            origin=_floats(data["origin"]),
            direction=_floats(data["direction"]),
            orientation=str(data["orientation"]),
            canonical=CanonicalGrid.from_json(data["canonical"]),
            slice_axis=str(data["slice_axis"]),
            kept_slices=None if kept is None else _ints(kept),
        )

    def reorient(self, array: np.ndarray) -> np.ndarray:
        """A (z, y, x[, ...]) array in file order as canonical (S, H, W[, ...]) slices (a view)."""
        return reorient_array(array, self.canonical.permutation, self.canonical.flips)

    def label_slices(self, label_image: sitk.Image) -> np.ndarray:
        """Apply the volume's reorientation and slicing to its label map.

        Args:
            label_image: 3D label map on the same voxel grid as the volume.

        Returns:
            (S, H, W) array (label dtype) of canonical slices along the slice axis.

        Raises:
            VolumeError: the label map's size differs from the volume's.
        """
        if tuple(label_image.GetSize()) != self.size:
            raise VolumeError(
                f"label map size {tuple(label_image.GetSize())} differs from volume size "
                f"{self.size}"
            )
        view = sitk.GetArrayViewFromImage(label_image)
        return np.array(self.reorient(view), order="C")

    def slices_to_image(self, slices: np.ndarray) -> sitk.Image:
        """Put canonical slices back into the original voxel grid, exactly.

        Args:
            slices: (S, H, W) integer or bool array covering all slices, e.g. a
                predicted label map stacked slice by slice.

        Returns:
            image whose size, spacing, origin and direction are identical to the
            original input's, voxel (z, y, x) = the matching canonical voxel.

        Raises:
            ValueError: wrong shape or non-integer dtype.
        """
        slices = np.asarray(slices)
        if slices.shape != self.shape:
            raise ValueError(f"slices have shape {slices.shape}, geometry expects {self.shape}")
        if slices.dtype.kind not in "iub":
            raise ValueError(f"slices must be integer or bool, got dtype {slices.dtype}")
        if slices.dtype == bool:
            slices = slices.astype(np.uint8)
        canon = self.canonical
        array = np.ascontiguousarray(restore_array(slices, canon.permutation, canon.flips))
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True)
class PreprocessOptions:
    """How volumes become 8-bit slices.

    Attributes:
        channels: source channel names, one per image channel, in order (at
            least one, no repeats).
        slice_axis: ``axial``, ``coronal`` or ``sagittal``.
        lower_percentile: intensity mapped to 0, computed inside the brain.
        upper_percentile: intensity mapped to 255, computed inside the brain.
    """

    channels: tuple[str, ...] = BRATS_CHANNELS
    slice_axis: str = "axial"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(
                f"channels must name at least one channel, each once, got {list(self.channels)}"
            )
        if self.slice_axis not in CANONICAL_ORIENTATION:
            raise ValueError(
                f"unknown slice_axis {self.slice_axis!r}; choose one of "
                f"{sorted(CANONICAL_ORIENTATION)}"
            )
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                f"need 0 <= lower_percentile < upper_percentile <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )


@dataclass(frozen=True)
class DatasetInfo:
    """A converted dataset's ``dataset.json``; every default is here and nowhere else.

    Attributes:
        channels: source channel of each image channel, in order.
        target: what the categories are: ``labels``, ``regions`` or ``binary``.
        label_convention: the raw label convention of the cases (``mixed`` when
            they differ; each volume's own is in ``volumes.json``).
        slice_axis: axis the volumes were cut along.
        image_layout: how slice PNGs hold their channels (:data:`IMAGE_LAYOUT`;
            None for datasets older than the channel tiles).
        options: the converter's options and how the cases were found.
        name, tool_version, categories, classes, splits, counts, skipped,
        file_name_root, sem_seg_file_name_root: the rest of the file, as written.
    """

    channels: tuple[str, ...]
    target: str = "labels"
    label_convention: str = "brats2021"
    slice_axis: str = "axial"
    image_layout: str | None = None
    options: Mapping = field(default_factory=dict)
    name: str = ""
    tool_version: str = ""
    categories: tuple[Mapping, ...] = ()
    classes: tuple[str, ...] = ()
    splits: Mapping = field(default_factory=dict)
    counts: Mapping = field(default_factory=dict)
    skipped: tuple[Mapping, ...] = ()
    file_name_root: str = "images/<split>"
    sem_seg_file_name_root: str = "labels/<split>"

    @classmethod
    def from_json(cls, data: Mapping) -> DatasetInfo:
        """From the contents of ``dataset.json``; keys it lacks take the defaults.

        Raises:
            ValueError: no ``channels`` (top level or in ``options``).
        """
        options = dict(data.get("options") or {})
        channels = data.get("channels") or options.get("channels")
        if not channels:
            raise ValueError("dataset info names no channels ('channels' / 'options.channels')")
        known = {
            k: data[k]
            for k in ("target", "label_convention", "slice_axis", "image_layout", "name",
                      "tool_version", "splits", "counts", "file_name_root",
                      "sem_seg_file_name_root")
            if k in data
        }  # fmt: skip
        return cls(
            channels=tuple(channels),
            options=options,
            categories=tuple(data.get("categories", ())),
            classes=tuple(data.get("classes", ())),
            skipped=tuple(data.get("skipped", ())),
            **known,
        )

    @classmethod
    def load(cls, source: DatasetInfo | Mapping | str | os.PathLike) -> DatasetInfo:
        """From its contents, the ``dataset.json`` file, or the dataset folder.

        Raises:
            ValueError: unreadable file (naming it), or no channels.
        """
        if isinstance(source, DatasetInfo):
            return source
        if isinstance(source, Mapping):
            return cls.from_json(source)
        path = Path(source)
        if path.is_dir():
            path = path / "dataset.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read dataset info {path}: {exc}") from None
        return cls.from_json(data)

    def to_json(self) -> dict:
        """The contents of ``dataset.json``."""
        return {
            "name": self.name,
            "tool_version": self.tool_version,
            "label_convention": self.label_convention,
            "target": self.target,
            "categories": [dict(c) for c in self.categories],
            "classes": list(self.classes),
            "channels": list(self.channels),
            "image_layout": self.image_layout,
            "slice_axis": self.slice_axis,
            "splits": dict(self.splits),
            "counts": dict(self.counts),
            "options": dict(self.options),
            "skipped": [dict(s) for s in self.skipped],
            "file_name_root": self.file_name_root,
            "sem_seg_file_name_root": self.sem_seg_file_name_root,
        }

    @property
    def preprocess_options(self) -> PreprocessOptions:
        """The preprocessing the converter applied (so the predictor applies the same).

        The converter's recorded ``options`` win; without them the top-level
        ``channels`` and ``slice_axis`` are used with the default percentiles.
        """
        opts = self.options
        defaults = PreprocessOptions(channels=self.channels)
        return PreprocessOptions(
            channels=tuple(opts.get("channels") or self.channels),
            slice_axis=opts.get("slice_axis") or self.slice_axis,
            lower_percentile=opts.get("lower_percentile", defaults.lower_percentile),
            upper_percentile=opts.get("upper_percentile", defaults.upper_percentile),
        )

    @property
    def context_slices(self) -> int:
        """Neighbouring slices written on each side of a kept slice (0: none)."""
        return int(self.options.get("context_slices") or 0)

    @property
    def label_conventions(self) -> dict[str, dict]:
        """The users' label conventions the dataset defines, name -> definition."""
        return dict(self.options.get("label_conventions") or {})


def stack_slice_masks(
    slices: Iterable[tuple[int, np.ndarray]],
    shape: tuple[int, int, int],
    num_categories: int,
) -> np.ndarray:
    """Stack per-slice category masks into one volume.

    Args:
        slices: ``(slice_index, masks)`` pairs, masks ``(C, H, W)`` bool (or 0/1);
            slices not given stay empty.
        shape: ``(S, H, W)`` of the volume (:attr:`SliceGeometry.shape`).
        num_categories: C.

    Returns:
        ``(C, S, H, W)`` bool.

    Raises:
        ValueError: a slice index outside ``0..S-1`` or masks of another shape,
            naming the slice.
    """
    num_slices, height, width = shape
    volume = np.zeros((num_categories, num_slices, height, width), dtype=bool)
    for s, masks in slices:
        masks = np.asarray(masks)
        if not 0 <= s < num_slices:
            raise ValueError(f"slice index {s} outside 0..{num_slices - 1}")
        if masks.shape != (num_categories, height, width):
            raise ValueError(
                f"masks of slice {s} have shape {masks.shape}, expected "
                f"{(num_categories, height, width)}"
            )
        volume[:, s] = masks
    return volume
