"""Anatomy for the MRI phantom: per-case head shape, deformation, mass effect, vessels.

The template it deforms is :mod:`~brainseg_d2.data.phantom_template`. Per case,
:func:`draw_anatomy` draws head size, shape and pose, deformation amplitudes,
ventricle size, vessels and the brain edge's partial volume (numbers only);
:func:`deformation` turns them, and the lesions' mass effect, into one
output -> template displacement field that :func:`warp` applies.

Arrays are numpy ``(z, y, x)``; SimpleITK sizes and indices are ``(x, y, z)``;
physical coordinates are LPS millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainseg_d2.data.phantom_fields import smooth_noise, upsample
from brainseg_d2.data.phantom_template import Template, grid_index, grid_points
from brainseg_d2.data.phantom_tumour import Lesion

NODE_MM = 4.0  # spacing of the deformation's node grid

Range = tuple[float, float]


@dataclass(frozen=True)
class AnatomyParams:
    """Ranges of the per-case anatomy draw (uniform unless noted).

    Attributes:
        brain_scale: linear brain size relative to the template (whose brain is
            1.89 l), log-uniform; 0.84-1.0 gives 1.1-1.9 l.
        axis_scale_sd: sd of the extra log scale per axis (head shape).
        rotation_deg_sd: sd of the rotation about each axis.
        shear_sd: sd of the off-diagonal affine terms.
        shift_mm_sd: sd of the translation per axis.
        elastic_mm: sd of the fine deformation (20 mm correlation).
        coarse_elastic_mm: sd of the coarse deformation (50 mm correlation).
        ventricle_dilation_mm: ventricle walls move outward by this (negative: inward).
        p_vessels: probability of enhancing vessels in the sulci and ventricles.
        vessel_density: their share of the brain's voxels.
        edge_mm: width (Gaussian sd) of the partial volume at the brain's edge.
        edge_share: brain share of the mask's outermost voxels (real masks are
            generous: their edge voxels are partly skull or background).
        field_of_view_mm: the grid is padded (never cropped) with background to
            at least this extent (x, y, z); None keeps the brain's box + 8 mm.
    """

    brain_scale: Range = (0.84, 1.0)
    axis_scale_sd: float = 0.04
    rotation_deg_sd: float = 4.0
    shear_sd: float = 0.02
    shift_mm_sd: float = 3.0
    elastic_mm: Range = (0.5, 2.5)
    coarse_elastic_mm: Range = (0.0, 4.0)
    ventricle_dilation_mm: Range = (-1.0, 4.0)
    p_vessels: float = 0.9
    vessel_density: Range = (0.005, 0.035)
    edge_mm: Range = (0.4, 1.5)
    edge_share: Range = (0.0, 0.4)
    field_of_view_mm: tuple[float, float, float] | None = (240.0, 240.0, 155.0)

    def __post_init__(self) -> None:
        if not 0.0 < self.brain_scale[0] <= self.brain_scale[1]:
            raise ValueError(
                f"brain_scale must be (low, high) with 0 < low <= high, got {self.brain_scale}"
            )
        if not 0.0 <= self.p_vessels <= 1.0:
            raise ValueError(f"p_vessels must be between 0 and 1, got {self.p_vessels}")
        for name in ("elastic_mm", "coarse_elastic_mm", "vessel_density", "edge_mm", "edge_share"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(
                    f"{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}"
                )


@dataclass(frozen=True)
class AnatomyDraw:
    """A case's drawn anatomy.

    Attributes:
        matrix: row-major 3 x 3 linear part of the output -> template map
            (physical, about the template's brain centre).
        shift: its translation in mm.
        brain_scale: the linear brain size drawn (``matrix`` includes it).
        elastic_mm, coarse_elastic_mm: deformation amplitudes.
        ventricle_dilation_mm: ventricle wall displacement.
        vessel_density: share of brain voxels that are vessels (0: none).
        edge_mm, edge_share: partial volume at the brain's edge.
    """

    matrix: tuple[float, ...]
    shift: tuple[float, float, float]
    brain_scale: float
    elastic_mm: float
    coarse_elastic_mm: float
    ventricle_dilation_mm: float
    vessel_density: float
    edge_mm: float
    edge_share: float

    @property
    def volume_scale(self) -> float:
        """Template volume per output volume."""
        return float(abs(np.linalg.det(np.reshape(self.matrix, (3, 3)))))


def draw_anatomy(rng: np.random.Generator, a: AnatomyParams) -> AnatomyDraw:
    """Draw a case's anatomy (numbers only; a fixed number of draws)."""
    scale = float(np.exp(rng.uniform(*np.log(a.brain_scale))))
    axes = np.exp(rng.normal(0.0, a.axis_scale_sd, 3))
    rotation = Rotation.from_rotvec(rng.normal(0.0, np.deg2rad(a.rotation_deg_sd), 3)).as_matrix()
    shear = np.eye(3) + np.triu(rng.normal(0.0, a.shear_sd, (3, 3)), 1)
    # Output -> template: undo the output's size, shape and pose.
    matrix = np.linalg.inv(rotation @ shear @ np.diag(axes * scale))
    shift = rng.normal(0.0, a.shift_mm_sd, 3)
    u_vessels, density = rng.random(), rng.uniform(*a.vessel_density)
    return AnatomyDraw(
        matrix=tuple(float(v) for v in matrix.ravel()),
        shift=tuple(float(v) for v in shift),
        brain_scale=scale,
        elastic_mm=float(rng.uniform(*a.elastic_mm)),
        coarse_elastic_mm=float(rng.uniform(*a.coarse_elastic_mm)),
        ventricle_dilation_mm=float(rng.uniform(*a.ventricle_dilation_mm)),
        vessel_density=float(density) if u_vessels < a.p_vessels else 0.0,
        edge_mm=float(rng.uniform(*a.edge_mm)),
        edge_share=float(rng.uniform(*a.edge_share)),
    )


def resize_ventricles(tpl: Template, dilation: float) -> tuple[np.ndarray, ...]:
    """Tissue with the ventricle walls moved by ``dilation`` mm.

    Returns:
        float32 CSF, GM, WM fractions and the uint8 anatomy map (new arrays;
        only the ventricles' box differs from the template).
    """
    csf, gm, wm = (f.copy() for f in tpl.fractions)
    anatomy = tpl.anatomy.copy()
    spacing = tpl.reference.GetSpacing()[0]
    box = tpl.ventricle_box
    d = tpl.ventricle_distance[box]
    brain = tpl.anatomy[box] > 0
    # Soft wall, one voxel wide: 1 where the new ventricle is, 0 beyond it.
    new = np.clip((dilation - d) / spacing + 0.5, 0.0, 1.0) * brain
    if dilation >= 0:
        gm[box] *= 1.0 - new
        wm[box] *= 1.0 - new
    else:  # narrowed: the freed CSF becomes white matter (the ventricles lie in it)
        wm[box] += np.clip(csf[box] - new, 0.0, 1.0) * (d < 0)
    csf[box] = np.clip(brain - gm[box] - wm[box], 0.0, 1.0)
    stacked = np.stack([csf[box], gm[box], wm[box]])
    anatomy[box] = (np.argmax(stacked, axis=0) + 1) * brain
    return csf, gm, wm, anatomy


def deformation(
    tpl: Template, a: AnatomyDraw, lesions: Sequence[Lesion], rng: np.random.Generator
) -> tuple[sitk.Image, list[float]]:
    """Output -> template displacement field (physical mm) on the output grid.

    The affine (about the brain centre) plus a fine and a coarse smooth random
    field are evaluated on a ``NODE_MM`` node grid and interpolated linearly;
    each lesion's mass effect is then composed exactly, voxel by voxel, in a
    box around the lesion (a 5 mm core would be lost between 4 mm nodes).

    Returns:
        the field (vector image on the output grid) and, per lesion, the
        template volume per output volume where it lands (before its mass
        effect), so that it can be drawn at the size it should come out.
    """
    ref = tpl.reference
    spacing = ref.GetSpacing()[0]
    shape = tpl.anatomy.shape
    nodes = [max(2, int(np.ceil((n - 1) * spacing / NODE_MM)) + 1) for n in shape]
    grid = np.stack(
        np.meshgrid(*[np.linspace(0.0, n - 1.0, k) for n, k in zip(shape, nodes)], indexing="ij"),
        -1,
    )
    x = grid_points(ref, grid)  # (nz, ny, nx, 3)
    matrix = np.reshape(a.matrix, (3, 3))
    p = tpl.centre + (x - tpl.centre) @ matrix.T + np.array(a.shift)
    for amplitude, corr_mm in ((a.elastic_mm, 20.0), (a.coarse_elastic_mm, 50.0)):
        corr = corr_mm / NODE_MM
        field_ = np.stack([smooth_noise(rng, tuple(nodes), corr) for _ in range(3)], -1)
        p = p + amplitude * field_
    # Local volume change: |det| of the map's derivative along the grid axes
    # (orthonormal directions, so the determinant's magnitude is the Jacobian's).
    steps = [(n - 1) * spacing / max(k - 1, 1) for n, k in zip(shape, nodes)]
    volume = np.abs(
        np.linalg.det(np.stack([np.gradient(p, h, axis=i) for i, h in enumerate(steps)], -1))
    )
    displacement = (p - x).astype(np.float32)
    dense = np.stack([upsample(displacement[..., i], shape, order=1) for i in range(3)], -1)
    margin = 3.0 * (a.elastic_mm + a.coarse_elastic_mm) + 2.0 * spacing
    scales = []
    for lesion in lesions:
        centre = np.array(lesion.centre)
        # Where the lesion lands in the output (the affine's inverse; the
        # smooth fields move it by a few mm, covered by the margin).
        at = grid_index(ref, tpl.centre + np.linalg.solve(matrix, centre - tpl.centre - a.shift))
        node = tuple(
            int(np.clip(round(c * (k - 1) / max(n - 1, 1)), 0, k - 1))
            for c, n, k in zip(at, shape, nodes)
        )
        scales.append(float(volume[node]))
        if lesion.mass_effect <= 0:
            continue
        radius, share = lesion.mass_ball
        radius /= a.brain_scale  # template mm
        reach = 3.0 * radius + 10.0
        half = (reach * a.brain_scale * 1.2 + margin) / spacing
        box = tuple(
            slice(int(max(0, np.floor(c - half))), int(min(n, np.ceil(c + half) + 1)))
            for c, n in zip(at, shape)
        )
        if any(s.start >= s.stop for s in box):
            continue
        xb = box_points(ref, box)
        pb = mass_effect(xb + dense[box], centre.astype(np.float32), radius, share, reach)
        dense[box] = pb - xb
    image = sitk.GetImageFromArray(dense, isVector=True)
    image.CopyInformation(ref)
    return image, scales


def box_points(ref: sitk.Image, box: tuple[slice, ...]) -> np.ndarray:
    """Physical points (float32, (z, y, x, 3)) of the voxels of ``box``."""
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    spacing = ref.GetSpacing()[0]
    out = np.zeros((*(s.stop - s.start for s in box), 3), np.float32)
    out += np.array(ref.GetOrigin(), np.float32)
    for axis, s in enumerate(box):  # array axis 0 is SimpleITK axis 2 (z)
        step = (direction[:, 2 - axis] * spacing).astype(np.float32)
        shape = [1, 1, 1, 3]
        shape[axis] = -1
        out += (np.arange(s.start, s.stop, dtype=np.float32)[:, None] * step).reshape(shape)
    return out


def mass_effect(
    p: np.ndarray, centre: np.ndarray, radius: float, m: float, reach: float | None = None
) -> np.ndarray:
    """Pull-back of a lesion that displaces the share ``m`` of a ``radius`` ball.

    An output point at distance r from the centre samples the template at
    ``s r`` inside the ball (``s**3 = 1 - m``: the lesion's template content
    is inflated to the full ball) and at ``cbrt(r**3 - m radius**3)`` outside,
    which keeps volumes: tissue is pushed radially away, less so with distance.
    With ``reach``, the (then small) push fades out over the last 30 % of it.

    Args:
        p: (..., 3) points (mm).
        centre: (3,) lesion centre.
        radius: ball radius in mm.
        m: displaced share, 0 <= m < 1.
        reach: distance beyond which points do not move; None: no limit.
    """
    d = p - centre
    r = np.sqrt(np.einsum("...i,...i->...", d, d))[..., None]
    r3 = r**3
    ratio = np.where(
        r <= radius,
        (1.0 - m) ** (1.0 / 3.0),
        np.cbrt(np.maximum(r3 - m * radius**3, 0.0)) / np.maximum(r, 1e-6),
    )
    if reach is not None:
        fade = np.clip((reach - r) / (0.3 * reach), 0.0, 1.0)
        ratio = 1.0 + (ratio - 1.0) * fade
    d *= ratio.astype(d.dtype, copy=False)
    d += centre
    return d


def warp_array(
    array: np.ndarray, tpl: Template, displacement: sitk.Image, interpolator: int
) -> np.ndarray:
    """Resample a (z, y, x) template-grid array through ``displacement`` (0 outside)."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(tpl.reference)
    ref = tpl.reference
    out = sitk.Warp(
        image,
        displacement,
        interpolator,
        ref.GetSize(),
        ref.GetOrigin(),
        ref.GetSpacing(),
        ref.GetDirection(),
    )
    return sitk.GetArrayFromImage(out)


def vessel_voxels(
    rng: np.random.Generator,
    fractions: dict[str, np.ndarray],
    edge: np.ndarray,
    codes: np.ndarray,
    density: float,
    spacing: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Enhancing vessels: thin tubes in CSF-rich brain, off the tumour.

    Not on the brain's edge (``edge``, the brain share from :func:`brain_share`),
    whose partial volume would hide them.

    Returns:
        flat indices and float32 weights (partial volume) of ``density`` times
        the brain's voxel count.
    """
    if density <= 0:
        return np.zeros(0, np.intp), np.zeros(0, np.float32)
    shape = edge.shape
    corr = max(1.5, 8.0 / spacing)
    # Where two smooth fields both cross zero: curves, i.e. tubes once thresholded.
    tube = np.abs(smooth_noise(rng, shape, corr)) + np.abs(smooth_noise(rng, shape, corr))
    idx = np.flatnonzero((edge > 0.95) & (fractions["csf"] + fractions["gm"] > 0) & (codes == 0))
    score = tube.ravel()[idx] - fractions["csf"].ravel()[idx]  # CSF first: sulci, ventricles
    brain = np.count_nonzero(fractions["csf"] + fractions["gm"] + fractions["wm"])
    n = min(int(density * brain), idx.size)
    if n < 1:
        return np.zeros(0, np.intp), np.zeros(0, np.float32)
    chosen = idx[np.argpartition(score, n - 1)[:n]]
    # Thin vessels fill their voxels partly.
    return chosen, rng.uniform(0.3, 1.0, chosen.size).astype(np.float32)


def brain_share(brain: np.ndarray, texture: np.ndarray, sigma: float, share: float) -> np.ndarray:
    """Brain share of each voxel (float32): about ``share`` on the mask's border, 1 inside.

    The border's share varies along it (by ``texture``), as a real mask's does.
    """
    border = brain & ~ndimage.binary_erosion(brain)
    weight = np.where(brain, 1.0, share).astype(np.float32)
    weight[border] = np.clip(share + 0.3 * texture[border], 0.0, 1.0)
    return ndimage.gaussian_filter(weight, sigma, truncate=3.0) if sigma > 0.2 else weight


def pad_to_fov(
    arrays: dict[str, np.ndarray], ref: sitk.Image, fov: tuple[float, float, float] | None
):
    """Pad the (z, y, x) arrays with zeros to at least ``fov`` (x, y, z) mm; the new reference."""
    if fov is None:
        return arrays, ref
    spacing = ref.GetSpacing()[0]
    size = np.array(ref.GetSize())
    want = np.maximum(size, np.ceil(np.array(fov) / spacing).astype(int))
    before = (want - size) // 2
    after = want - size - before
    if not (want > size).any():
        return arrays, ref
    pad = [(int(b), int(a)) for b, a in zip(before[::-1], after[::-1])]  # (z, y, x)
    out = {k: np.pad(v, pad) for k, v in arrays.items()}
    grid = sitk.Image([int(v) for v in want], sitk.sitkUInt8)
    grid.SetSpacing(ref.GetSpacing())
    grid.SetDirection(ref.GetDirection())
    grid.SetOrigin(ref.TransformIndexToPhysicalPoint([-int(b) for b in before]))
    return out, grid
