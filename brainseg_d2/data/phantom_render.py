"""Rendering one MRI sequence of the phantom from tissue maps and a drawn appearance.

:mod:`~brainseg_d2.data.phantom_contrast` draws, per case and sequence, the
numbers of an appearance (:class:`~brainseg_d2.data.phantom_contrast.SequenceAppearance`:
tissue means, texture, bias, noise, gamma, resolution). This module applies them:
:func:`render_sequence` turns the case's :class:`TissueMaps` (normal-tissue
fractions, the tumour's tissues, vessels, the brain's edge) into one image, the
same maps serving all four sequences; :func:`tumour_texture_field` draws the
tumour's texture those maps carry.

Arrays are numpy ``(z, y, x)`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from brainseg_d2.data.phantom_contrast import SequenceAppearance
from brainseg_d2.data.phantom_fields import smooth_noise, upsample


@dataclass
class TissueMaps:
    """Everything a sequence is rendered from, on the output grid.

    Attributes:
        brain: bool (z, y, x) brain mask; images are 0 outside.
        fractions: normal tissue -> float32 (z, y, x) fraction (csf, gm, wm; sum 1
            in the brain).
        texture: float32 (z, y, x) unit-variance smooth texture of normal tissue.
        tumour_box: slices of the tumour's bounding box (None without tumour).
        tumour: ``ed`` -> float32 box array, the edema's opacity over normal
            tissue (covers the whole lesion, fuzzy border); ``et``, ``nec``,
            ``net`` -> fractions of the core tissues (sum <= 1).
        tumour_texture: float32 box array, unit variance.
        vessels: (flat indices, float32 weights) of enhancing vessels.
        edge: float32 (z, y, x) brain share of each voxel near the brain's edge
            (1 inside, falling to ~0.5 at the mask's border): partial volume with
            what lies outside.
        spacing: voxel size in mm.
    """

    brain: np.ndarray
    fractions: dict[str, np.ndarray]
    texture: np.ndarray
    tumour_box: tuple[slice, ...] | None
    tumour: dict[str, np.ndarray]
    tumour_texture: np.ndarray | None
    vessels: tuple[np.ndarray, np.ndarray]
    edge: np.ndarray
    spacing: float


def render_sequence(
    rng: np.random.Generator, maps: TissueMaps, look: SequenceAppearance
) -> np.ndarray:
    """One sequence's float32 (z, y, x) image: positive in the brain, 0 outside.

    Order: tissue means with texture -> tumour blended on top -> vessels ->
    bias field -> partial volume with the rim at the brain's edge -> noise ->
    acquisition blur / thick slices -> gamma.
    """
    m = look.means
    image = (
        maps.fractions["csf"] * m["csf"]
        + maps.fractions["gm"] * m["gm"]
        + maps.fractions["wm"] * m["wm"]
    )
    image *= 1.0 + look.texture * maps.texture
    if maps.tumour_box is not None:
        region = image[maps.tumour_box]
        tex = 1.0 + look.tumour_texture * maps.tumour_texture
        # Edema over normal tissue (its weight covers the whole lesion, fading
        # at the border), then the core's tissues in proportion to their fractions.
        region += maps.tumour["ed"] * (m["ed"] * tex - region)
        core = [maps.tumour[t] for t in ("et", "nec", "net") if t in maps.tumour]
        if core:
            region *= 1.0 - sum(core)
            for tissue in ("et", "nec", "net"):
                if tissue in maps.tumour:
                    region += maps.tumour[tissue] * (m[tissue] * tex)
    idx, weight = maps.vessels
    flat = image.reshape(-1)
    flat[idx] += weight * (m["vessel"] - flat[idx])

    brain = maps.brain
    shape = image.shape
    bias = upsample(rng.standard_normal((4, 4, 4), dtype=np.float32), shape)
    bias *= look.bias_sd / max(float(bias[brain].std()), 1e-6)
    image *= np.exp(bias - bias[brain].mean())
    inside = image[brain]
    edge = maps.edge[brain]
    inside *= edge
    inside += (1.0 - edge) * look.rim
    inside += rng.standard_normal(inside.size, dtype=np.float32) * look.noise_sd
    # Outside the brain the scanner sees the rim signal, not nothing: blurring
    # mixes that in at the edge, as in skull-stripped real scans.
    image.fill(look.rim)
    image[brain] = inside

    image = acquire(image, look, maps.spacing)

    out = np.zeros(shape, np.float32)
    # Gamma on the WM-relative scale, then the scanner gain.
    values = np.maximum(image[brain], 1e-3)
    out[brain] = np.power(values, look.gamma) * look.gain
    return out


def acquire(image: np.ndarray, look: SequenceAppearance, spacing: float) -> np.ndarray:
    """The acquisition's resolution loss: in-plane blur, then thick slices, if drawn.

    Args:
        image: float32 ``(z, y, x)`` volume on an isotropic grid.
        look: the sequence's appearance (``blur_mm``, ``slice_axis``, ``slice_mm``).
        spacing: the grid's voxel size in mm.
    """
    sigma = look.blur_mm / 2.355 / spacing
    if sigma > 0.2:
        for axis in range(3):
            if axis != look.slice_axis:
                image = ndimage.gaussian_filter1d(image, sigma, axis=axis, truncate=3.0)
    if look.slice_axis is not None and look.slice_mm > 1.2 * spacing:
        image = _thick_slices(image, look.slice_axis, look.slice_mm / spacing)
    return image


def _thick_slices(image: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Acquire slices ``factor`` voxels thick along ``axis``, then interpolate back.

    Each slice integrates a Gaussian profile (FWHM = thickness); the volume is
    resampled linearly from the slice centres, as scanners and BraTS did.
    """
    n = image.shape[axis]
    blurred = ndimage.gaussian_filter1d(image, factor / 2.355, axis=axis, truncate=2.5)
    n_slices = max(2, int(np.ceil((n - 1) / factor)) + 1)
    centres = np.linspace(0.0, n - 1.0, n_slices)
    # Sample the slices (linear interpolation between grid planes)...
    lo = np.clip(np.floor(centres).astype(int), 0, n - 2)
    frac = (centres - lo).astype(np.float32)
    shape = [1] * image.ndim
    shape[axis] = -1
    slices = np.take(blurred, lo, axis=axis) * (1 - frac.reshape(shape))
    slices += np.take(blurred, lo + 1, axis=axis) * frac.reshape(shape)
    # ...and interpolate the grid back from them.
    pos = np.arange(n) / (n - 1.0) * (n_slices - 1.0)
    j = np.clip(np.floor(pos).astype(int), 0, n_slices - 2)
    w = (pos - j).astype(np.float32).reshape(shape)
    out = np.take(slices, j, axis=axis) * (1 - w)
    out += np.take(slices, j + 1, axis=axis) * w
    return out


def tumour_texture_field(rng: np.random.Generator, shape: tuple[int, ...], spacing: float):
    """Unit-variance texture of tumour tissue (float32, ``shape``): 2-4 mm blobs."""
    return smooth_noise(rng, shape, max(1.0, rng.uniform(2.0, 4.0) / spacing))
