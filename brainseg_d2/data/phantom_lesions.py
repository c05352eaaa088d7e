"""Rendering a planned tumour: each lesion's core, enhancement pattern and edema as
tissue codes on the phantom's template grid (:func:`render_tumour`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from brainseg_d2.data.phantom_fields import smooth_noise
from brainseg_d2.data.phantom_tumour import ED, ET, NEC, NET, Lesion, TumourPlan


def render_tumour(
    rng: np.random.Generator,
    plan: TumourPlan,
    *,
    wm: np.ndarray,
    csf: np.ndarray,
    brain: np.ndarray,
    spacing: float,
    to_index: Callable[[np.ndarray], np.ndarray],
    volume_scales: Sequence[float],
) -> np.ndarray:
    """Tumour tissue codes on the template grid.

    Args:
        rng: the case's rendering generator.
        plan: from :func:`plan_tumour`.
        wm, csf: float32 (z, y, x) white-matter and CSF fractions of the template.
        brain: bool (z, y, x) brain mask of the template.
        spacing: isotropic voxel size in mm.
        to_index: physical point (3,) -> continuous (z, y, x) index.
        volume_scales: per lesion, template volume per output volume where it
            lands (the deformation's Jacobian), so that planned volumes come out
            in the output image.

    Returns:
        uint8 (z, y, x) map of :data:`NEC`, :data:`ED`, :data:`ET`, :data:`NET` (0 elsewhere).
    """
    codes = np.zeros(brain.shape, np.uint8)
    for lesion, scale in zip(plan.lesions, volume_scales):
        _render_lesion(rng, lesion, codes, wm, csf, brain, spacing, to_index, scale)
    return codes


def _render_lesion(rng, lesion, codes, wm, csf, brain, spacing, to_index, volume_scale) -> None:
    voxel_ml = spacing**3 / 1000.0
    # The warp inflates the mass-effect ball (which holds the core) by
    # 1 / (1 - share): draw the core that much smaller.
    core_n = max(1, round(lesion.core_ml * (1.0 - lesion.mass_ball[1]) * volume_scale / voxel_ml))
    edema_n = round(lesion.volume_ml * (1.0 - lesion.core_fraction) * volume_scale / voxel_ml)
    r_core = np.cbrt(3.0 * core_n * spacing**3 / (4.0 * np.pi))
    r_lesion = np.cbrt(3.0 * (core_n + edema_n) * spacing**3 / (4.0 * np.pi))
    centre = np.asarray(to_index(np.asarray(lesion.centre)))
    half = (1.8 * r_lesion + 1.0 * r_core) / spacing + 3
    box = tuple(
        slice(int(max(0, np.floor(c - half))), int(min(n, np.ceil(c + half) + 1)))
        for c, n in zip(centre, codes.shape)
    )
    shape = tuple(s.stop - s.start for s in box)
    if min(shape) < 1:
        return
    offsets = [
        ((np.arange(s.start, s.stop, dtype=np.float32) - c) * spacing).reshape(
            [-1 if a == axis else 1 for a in range(3)]
        )
        for axis, (s, c) in enumerate(zip(box, centre))
    ]

    # Lobulated core: the smallest normalised distance to any lobe ellipsoid.
    rho = None
    for k in range(lesion.lobes):
        shift = np.zeros(3) if k == 0 else _unit(rng) * r_core * rng.uniform(0.2, 0.6)
        radius = r_core * (1.0 if k == 0 else rng.uniform(0.5, 0.85))
        d = _ellipsoid_norm(rng, [o - s for o, s in zip(offsets, shift)], 0.25) / radius
        rho = d if rho is None else np.minimum(rho, d)
    corr = max(1.5, 0.6 * r_core / spacing)
    # Multiplicative in log space: the outline bulges and dents, and far voxels
    # stay far (a linear factor could reach zero anywhere).
    rho *= np.exp(lesion.lobulation * np.clip(smooth_noise(rng, shape, corr), -2.5, 2.5))
    region = codes[box]
    inside = brain[box] & (region == 0)
    core = _smallest(rho, inside & (csf[box] < 0.6), core_n)
    core = _largest_component(core)

    # Edema: the same radius, stretched outside white matter and roughened. With
    # edema_wm_scale_mm the white matter is first smoothed to that scale, so the
    # edema does not thread into every thin strand of it (off by default).
    wm_box = wm[box]
    if lesion.edema_wm_scale_mm > 0:
        wm_box = ndimage.gaussian_filter(wm_box, lesion.edema_wm_scale_mm / spacing)
    stretch = 1.0 + lesion.edema_wm_preference * (1.0 - wm_box)
    noise = np.clip(smooth_noise(rng, shape, max(1.5, 0.4 * r_lesion / spacing)), -2.5, 2.5)
    reach = rho * stretch * np.exp(lesion.edema_irregularity * noise)
    edema = _smallest(reach, inside & ~core & (csf[box] < 0.5), edema_n)
    # Edema islands cut off by sulci or ventricles are dropped.
    parts, _ = ndimage.label(edema | core)
    edema &= np.isin(parts, np.unique(parts[core]))

    region[edema] = ED
    _pattern(rng, lesion, core, region, spacing)


def _pattern(rng, lesion: Lesion, core: np.ndarray, region: np.ndarray, spacing: float) -> None:
    """Write the core's NEC / ET / NET codes into ``region`` following the lesion's pattern."""
    if not core.any():
        return
    sub = ndimage.find_objects(core.astype(np.uint8))[0]
    sub = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in sub)
    c = core[sub]
    depth = ndimage.distance_transform_edt(c, sampling=spacing)  # mm to the core's outside
    shape = c.shape
    r_core = max(float(depth.max()), spacing)
    blobs = smooth_noise(rng, shape, max(1.5, 0.35 * r_core / spacing))
    wobble = np.clip(smooth_noise(rng, shape, max(1.5, 0.5 * r_core / spacing)), -2.5, 2.5)
    out = np.where(c, NET, 0).astype(np.uint8)
    pattern = lesion.pattern
    if pattern in ("thin_rim", "thick_rim", "partial_rim") and r_core < lesion.rim_mm + 2 * spacing:
        pattern = "solid"  # too small to hold a necrotic centre
    if pattern in ("thin_rim", "thick_rim", "partial_rim"):
        # At least one voxel of wall; thick rims are irregular.
        amp = 0.15 if pattern == "thin_rim" else 0.4
        wall = c & (depth <= np.maximum(lesion.rim_mm * (1.0 + amp * wobble), 1.01 * spacing))
        out[c & ~wall] = NEC
        if pattern == "partial_rim":
            cut = np.quantile(blobs[wall], 1.0 - lesion.enhancing_fraction)
            wall &= blobs >= cut  # the rest of the wall stays non-enhancing
        out[wall] = ET
    elif pattern in ("nodular", "patchy"):
        share = lesion.enhancing_fraction * (1.0 if pattern == "nodular" else 0.3)
        out[c & (blobs >= np.quantile(blobs[c], 1.0 - share))] = ET
    elif pattern == "solid":
        out[c] = ET
    region[sub][c] = out[c]


def _smallest(values: np.ndarray, allowed: np.ndarray, n: int) -> np.ndarray:
    """Mask of the ``n`` allowed voxels with the smallest ``values``."""
    idx = np.flatnonzero(allowed)
    mask = np.zeros(values.shape, bool)
    if n <= 0 or idx.size == 0:
        return mask
    if n < idx.size:
        idx = idx[np.argpartition(values.ravel()[idx], n - 1)[:n]]
    mask.ravel()[idx] = True
    return mask


def _largest_component(mask: np.ndarray) -> np.ndarray:
    parts, n = ndimage.label(mask)
    if n <= 1:
        return mask
    return parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _ellipsoid_norm(rng: np.random.Generator, offsets: list[np.ndarray], elongation: float):
    """|A x| (float32) for broadcast mm ``offsets`` (z, y, x): a random unit-volume ellipsoid."""
    axes = np.exp(rng.normal(0.0, elongation, 3))
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    a = (np.diag(1.0 / (axes / np.prod(axes) ** (1 / 3))) @ (q * np.sign(np.diag(r)))).astype(
        np.float32
    )
    total = None
    for i in range(3):
        row = a[i, 0] * offsets[0] + a[i, 1] * offsets[1] + a[i, 2] * offsets[2]
        total = row * row if total is None else total + row * row
    return np.sqrt(total)
