"""How a volume maps to canonical 2D slices and back: :class:`SliceGeometry`, and
:func:`stack_slice_masks` for putting per-slice masks together again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

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

    @property
    def shorter_side_mm(self) -> float:
        """Millimetres a slice's shorter side (in pixels) spans: what ``ResizeShortestEdge``
        scales to ``INPUT.MIN_SIZE_*`` pixels, so it sets the millimetres per model pixel."""
        (h, w), (ph, pw) = self.slice_shape, self.pixel_spacing
        return float(h * ph if h <= w else w * pw)

    @property
    def voxel_ml(self) -> float:
        """One voxel's volume in millilitres."""
        return float(np.prod(self.voxel_spacing)) / 1000.0

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
