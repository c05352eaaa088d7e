"""The one preprocessing step shared by the converter and the volume predictor.

``preprocess_volume`` turns co-registered MRI channels into 8-bit multi-channel slices:

1. reorient to a canonical orientation chosen per slice axis (pure axis
   permutation/flip, see :class:`~brainseg_d2.structures.SliceGeometry`), so that slicing is
   always along numpy axis 0 and every slice is shown the radiological way
   (axial: anterior up, patient right on the left; coronal/sagittal: superior up);
2. brain mask = voxels that are non-zero in any used channel (BraTS data are
   skull-stripped with exact zeros outside the brain; data that are not get a
   brain mask covering the whole image);
3. per channel, clip to the [lower, upper] percentiles of the brain voxels and
   scale to 0-255 (``normalization`` ``percentile``), or map the brain's mean
   -3 and +3.5 SD to 0 and 255 (``zscore``); voxels outside the brain stay 0.

The returned :class:`~brainseg_d2.structures.SliceGeometry` is everything needed
to put slice predictions back into the original voxel grid bit-exactly
(:meth:`~brainseg_d2.structures.SliceGeometry.slices_to_image`), without the
source file.

Channel rule: image channel ``k`` of a slice is the ``k``-th requested source
channel (BraTS: FLAIR, T1, T1ce, T2); any number of channels, each once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import SimpleITK as sitk

from brainseg_d2.data.volume_io import VolumeError, check_same_geometry
from brainseg_d2.structures import (
    BRATS_CHANNELS,
    CANONICAL_ORIENTATION,
    ZSCORE_RANGE,
    PreprocessOptions,
    SliceGeometry,
)

__all__ = [
    "BRATS_CHANNELS",
    "CANONICAL_ORIENTATION",
    "PreprocessOptions",
    "PreprocessedVolume",
    "intensity_range",
    "interleave",
    "preprocess_volume",
    "robust_range",
    "source_intensities",
]


@dataclass
class PreprocessedVolume:
    """A volume as the model sees it: what :func:`preprocess_volume` and a case's
    ``load()`` return.

    Attributes:
        slices: (S, H, W, N) uint8, image channels in ``options.channels`` order.
        brain: (S, H, W) bool brain mask.
        geometry: how the slices map back to the source grid.
        intensity: channel name -> [low, high] source intensities mapped to 0 and 255.
        tissue: (S, H, W) uint8 tissue codes of the case's labels (a loaded,
            labelled case), else None.
    """

    slices: np.ndarray
    brain: np.ndarray
    geometry: SliceGeometry
    intensity: dict[str, list[float]]
    tissue: np.ndarray | None = None

    @property
    def brain_any(self) -> np.ndarray:
        """(S,) bool: the slice holds at least one brain voxel."""
        return self.brain.reshape(self.brain.shape[0], -1).any(axis=1)


def intensity_range(values: np.ndarray, options: PreprocessOptions) -> tuple[float, float]:
    """The source intensities that ``options`` maps to 0 and 255, from the brain's ``values``.

    ``percentile``: the brain's ``lower_percentile`` and ``upper_percentile``.
    ``zscore``: the brain's mean plus :data:`~brainseg_d2.structures.ZSCORE_RANGE`
    standard deviations, so that a tissue's value is its distance from the brain's
    mean in SDs, whatever the size of a bright lesion (the 99.5th percentile lies
    inside a lesion larger than 0.5 % of the brain).
    """
    if options.normalization == "zscore":
        mean = float(values.mean(dtype=np.float64))
        sd = float(values.std(dtype=np.float64))
        return mean + ZSCORE_RANGE[0] * sd, mean + ZSCORE_RANGE[1] * sd
    return robust_range(values, options.lower_percentile, options.upper_percentile)


def source_intensities(image: sitk.Image, prep: PreprocessedVolume) -> np.ndarray:
    """A channel's own intensities on ``prep``'s slice grid, float32 ``(S, H, W)``.

    For measures that must not depend on the normalisation: the FLAIR-threshold
    baseline uses these, because the percentile clip saturates a bright lesion
    larger than 0.5 % of the brain, which lowers the brain's SD and the threshold.
    """
    return np.ascontiguousarray(prep.geometry.reorient(sitk.GetArrayViewFromImage(image)),
                                dtype=np.float32)  # fmt: skip


def robust_range(values: np.ndarray, lower: float, upper: float) -> tuple[float, float]:
    """``np.percentile(values, [lower, upper])`` (linear method), exactly, fast.

    Selecting order statistics near the ends of millions of values is slow
    (introselect), so for large inputs each percentile is selected among the
    few values beyond a threshold taken from a strided sample; when the
    threshold does not bracket the rank (rare) the whole array is partitioned.

    Args:
        values: 1D array, not empty.
        lower, upper: percentiles in [0, 100].

    Returns:
        (low, high) as floats.
    """
    n = values.size
    out = []
    for p in (lower, upper):
        q = p / 100.0 * (n - 1)
        i = int(np.floor(q))
        a, b = _order_statistics(values, i, min(i + 1, n - 1))
        out.append(a + (q - i) * (b - a))
    return out[0], out[1]


def _order_statistics(values: np.ndarray, i: int, j: int) -> tuple[float, float]:
    """The i-th and j-th smallest values (0-based, i <= j <= i + 1)."""
    n = values.size
    margin = 0.002 * n + 64  # slack on the sample's rank estimate
    if n >= 1 << 16 and (i + margin < n / 4 or i - margin > 3 * n / 4):
        sample = np.sort(values[:: max(n >> 14, 1)])
        scale = (sample.size - 1) / (n - 1)
        if i < n / 2:
            cut = sample[min(int((j + margin) * scale) + 1, sample.size - 1)]
            below = values[values <= cut]
            if below.size > j:  # ranks i, j lie among the values <= cut
                part = np.partition(below, [i, j])
                return float(part[i]), float(part[j])
        else:
            cut = sample[max(int((i - margin) * scale) - 1, 0)]
            above = values[values >= cut]
            first = n - above.size  # rank of above's smallest value
            if first <= i:
                part = np.partition(above, [i - first, j - first])
                return float(part[i - first]), float(part[j - first])
    part = np.partition(values, sorted({i, j}))
    return float(part[i]), float(part[j])


def preprocess_volume(
    images: Mapping[str, sitk.Image],
    options: PreprocessOptions,
    *,
    case_id: str = "volume",
    sources: Mapping[str, str] | None = None,
) -> PreprocessedVolume:
    """Reorient, slice and normalise the channels of one volume.

    Args:
        images: channel name -> 3D image; must hold every ``options.channels``.
        options: preprocessing options.
        case_id: named in error messages.
        sources: channel name -> file, named in error messages when given.

    Returns:
        :class:`PreprocessedVolume` with (S, H, W, N) uint8 slices along
        ``options.slice_axis`` of the canonical volume, N = ``len(options.channels)``.

    Raises:
        VolumeError: missing channel, geometry mismatch, empty or constant channel.
    """
    sources = dict(sources or {})
    missing = [c for c in options.channels if c not in images]
    if missing:
        raise VolumeError(
            f"case {case_id}: missing channel '{missing[0]}' (available: {sorted(images)})"
        )
    used = list(options.channels)
    check_same_geometry({c: images[c] for c in used}, case_id=case_id)
    geometry = SliceGeometry.from_image(images[used[0]], options.slice_axis)
    # Voxel-wise work runs on the arrays in file order (contiguous: numpy and
    # OpenCV take their fast paths); only the uint8 result is reoriented.
    arrays = {c: sitk.GetArrayViewFromImage(images[c]) for c in used}
    brain = arrays[used[0]] != 0
    for c in used[1:]:
        brain |= arrays[c] != 0
    scaled: dict[str, np.ndarray] = {}
    intensity: dict[str, list[float]] = {}
    for c in used:
        where = f"{sources[c]}" if c in sources else f"channel '{c}'"
        values = arrays[c][brain]
        if values.size == 0:
            raise VolumeError(f"case {case_id}: {where}: image is all zeros")
        low, high = intensity_range(values, options)
        del values
        if not high > low:
            raise VolumeError(
                f"case {case_id}: {where}: image is constant inside the brain (value {low:g})"
            )
        intensity[c] = [low, high]
        scaled[c] = _scale_to_uint8(arrays[c], low, high, brain)
    # Reorienting each uint8 channel, then interleaving with OpenCV, is ~6x faster
    # than one strided copy of the (S, H, W, N) array.
    canonical = [np.ascontiguousarray(geometry.reorient(scaled[c])) for c in used]
    shape = canonical[0].shape
    slices = interleave(canonical).reshape(*shape, len(used))
    brain = np.ascontiguousarray(geometry.reorient(brain))
    return PreprocessedVolume(slices=slices, brain=brain, geometry=geometry, intensity=intensity)


def interleave(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Stack same-shape uint8 planes along a new last axis: ``(..., N)``.

    OpenCV merges at most 512 channels and needs 2D planes; it is several times
    faster than ``np.stack(axis=-1)`` for large volumes.
    """
    shape = planes[0].shape
    if len(planes) == 1:
        return planes[0].reshape(*shape, 1)
    merged = cv2.merge([np.ascontiguousarray(p).reshape(-1, shape[-1]) for p in planes])
    return merged.reshape(*shape, len(planes))


_OPENCV_DTYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "i4", "f4", "f8")}


def _scale_to_uint8(array: np.ndarray, low: float, high: float, brain: np.ndarray) -> np.ndarray:
    """Clip (S, H, W) to [low, high] and map linearly to 0-255 uint8 (rounded).

    Voxels outside ``brain`` (zeros) end up 0.
    """
    # One fused OpenCV pass: alpha * x + beta, rounded and saturated to 0-255,
    # which is both clips. Numpy's float temporaries of a 9M-voxel volume cost
    # several times more.
    flat = np.asarray(array).reshape(-1, array.shape[-1])
    if flat.dtype not in _OPENCV_DTYPES:  # e.g. 64-bit or unsigned 32-bit integers
        flat = flat.astype(np.float64)
    alpha = 255.0 / (high - low)
    out = cv2.addWeighted(flat, alpha, flat, 0.0, -low * alpha, dtype=cv2.CV_8U)
    out = out.reshape(array.shape)
    if low < 0:  # background zeros map to 0 by themselves only when low >= 0
        out[~brain] = 0
    return out
