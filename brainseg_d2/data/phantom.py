"""Built-in MRI phantom: domain-randomised BraTS-2021-layout cases from real anatomy.

Anatomy comes from the MNI152 2009c symmetric template and its grey/white-matter
probability maps, which the ``nilearn`` wheel ships inside the package, so
nothing is downloaded. Following SynthSeg (Billot et al., Medical Image
Analysis 2023), every case is one random draw of anatomy, tumour and
appearance, so that real scans look like one more draw:

1. a plan (:func:`plan_case`, numbers only): tumour-free or a glioma of one
   or more lesions (:mod:`~brainseg_d2.data.phantom_tumour`: grade, site near
   the ventricles, cortex or in deep white matter, volume, enhancement pattern,
   mass effect); head size and shape, pose, deformation, ventricle size,
   vessels; and per sequence the tissue contrasts, bias, noise, gamma and
   resolution (:mod:`~brainseg_d2.data.phantom_contrast`);
2. the template's CSF/GM/WM fractions at the requested spacing (cached), with
   the ventricles widened or narrowed, and the tumour drawn into them;
3. one deformation for everything: affine (head size, shape, pose) + smooth
   elastic field + each lesion's mass effect (tissue pushed radially away
   from the core, volume-preserving outside it), evaluated on a 4 mm node
   grid;
4. FLAIR, T1, T1ce and T2 synthesised from the warped fractions: tissue
   means, texture, fuzzy edema, enhancing vessels, bias field, noise, blur or
   thick slices, gamma; zero outside the brain (skull-stripped like BraTS);
5. the grid padded to BraTS's 240 x 240 x 155 mm field of view.

Arrays are numpy ``(z, y, x)`` as SimpleITK returns them; SimpleITK sizes and
indices are ``(x, y, z)``; physical coordinates are LPS millimetres.

CLI: ``brainseg-phantom --out DIR --num-cases N`` or ``python -m brainseg_d2.data.phantom``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainseg_d2.data.phantom_contrast import (
    SEQUENCES,
    ContrastParams,
    SequenceAppearance,
    TissueMaps,
    draw_appearance,
    render_sequence,
    tumour_texture_field,
)
from brainseg_d2.data.phantom_fields import smooth_noise, upsample
from brainseg_d2.data.phantom_tumour import (
    ED,
    ET,
    NEC,
    NET,
    TumourParams,
    TumourPlan,
    plan_tumour,
    render_tumour,
)
from brainseg_d2.labels import CONVENTIONS, TISSUE_ED, TISSUE_ET, TISSUE_NCR, tissue_to_raw

MODALITIES = SEQUENCES  # ("flair", "t1", "t1ce", "t2")
SPACING_RANGE = (1.0, 4.0)  # the template is 1 mm; coarser than 4 mm loses small tumours
P_LOW_GRADE = TumourParams.p_low_grade

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MARGIN_MM = 8.0  # background kept around the brain bounding box
_SITE_SPACING = 3.0  # mm; lesion sites are planned on this grid whatever the case's spacing
_NODE_MM = 4.0  # spacing of the deformation's node grid
_TISSUE_TO_LABEL = {NEC: TISSUE_NCR, NET: TISSUE_NCR, ED: TISSUE_ED, ET: TISSUE_ET}

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
    vessel_density: Range = (0.003, 0.02)
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
class PhantomParams:
    """Every range and rate of the phantom; the defaults are what the demo trains on.

    Change one part with :func:`dataclasses.replace`, e.g.
    ``replace(p, tumour=replace(p.tumour, p_multifocal=0.5))``.
    """

    tumour: TumourParams = field(default_factory=TumourParams)
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)
    contrast: ContrastParams = field(default_factory=ContrastParams)


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


@dataclass(frozen=True)
class CasePlan:
    """Everything drawn for a case before any image is made (see :func:`plan_case`)."""

    tumour: TumourPlan
    anatomy: AnatomyDraw
    appearance: dict[str, SequenceAppearance]

    @property
    def kind(self) -> str:
        return self.tumour.kind


@dataclass
class PhantomCase:
    """One synthetic case, all images on the same grid.

    Attributes:
        images: ``flair``, ``t1``, ``t1ce``, ``t2`` -> float32 image, 0 outside the brain.
        seg: uint8 label image in the BraTS 2021 convention (0, 1 NCR, 2 ED, 4 ET).
        has_tumour: False for a tumour-free case (``seg`` all zero).
        kind: ``"empty"``, ``"high_grade"`` or ``"low_grade"``.
        anatomy: uint8 normal-tissue map, 0 outside, 1 CSF, 2 GM, 3 WM (the largest
            tissue fraction, ignoring the tumour). Not written by :func:`write_case`;
            handy for checks and per-tissue statistics.
        plan: the draws the case was made from (None only for hand-made cases).
    """

    images: dict[str, sitk.Image]
    seg: sitk.Image
    has_tumour: bool
    kind: str
    anatomy: sitk.Image
    plan: CasePlan | None = None


@dataclass(frozen=True)
class _Template:
    reference: sitk.Image  # output grid before padding; pixels unused
    fractions: np.ndarray  # float32 (3, z, y, x): CSF, GM, WM; sum 1 in brain, 0 outside
    anatomy: np.ndarray  # uint8 (z, y, x): 0 outside, 1 CSF, 2 GM, 3 WM
    depth: np.ndarray  # float32 (z, y, x): mm to the nearest voxel outside the brain
    ventricle_distance: np.ndarray  # float32 (z, y, x): signed mm to the ventricle walls
    ventricle_box: tuple[slice, ...]  # where ventricle resizing can change anything
    centre: np.ndarray  # (3,) physical brain centroid


def _template_dir() -> Path:
    try:
        import nilearn
    except ImportError:
        raise ImportError(
            "the MRI phantom needs the MNI152 template shipped with nilearn: pip install nilearn"
        ) from None
    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    for name in _TEMPLATE_FILES.values():
        if not (folder / name).is_file():
            raise ImportError(f"{folder / name} is missing; reinstall it: pip install nilearn")
    return folder


def _check_spacing(spacing: float) -> float:
    low, high = SPACING_RANGE
    if not low <= float(spacing) <= high:
        raise ValueError(f"spacing must be between {low:g} and {high:g} mm, got {spacing}")
    return float(spacing)


@functools.lru_cache(maxsize=1)
def _native_maps() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """Brain mask, GM and WM (float32 images, template grid cropped to the brain + margin)."""
    folder = _template_dir()
    images = {
        k: sitk.ReadImage(str(folder / name), sitk.sitkFloat32) / 255.0
        for k, name in _TEMPLATE_FILES.items()
    }
    t1, gm, wm = (sitk.GetArrayFromImage(images[k]) for k in ("t1", "gm", "wm"))
    # nilearn's T1 is already masked; the tissue maps close holes at the edge.
    brain = ndimage.binary_fill_holes((t1 > 0.05) | (gm + wm > 0.25))
    parts, n = ndimage.label(brain)
    if n > 1:
        brain = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    margin = int(np.ceil(_MARGIN_MM / images["t1"].GetSpacing()[0]))
    box = ndimage.find_objects(brain.astype(np.uint8))[0]
    lo = [max(0, s.start - margin) for s in box]
    hi = [min(size, s.stop + margin) for s, size in zip(box, brain.shape)]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))

    def as_image(array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(np.ascontiguousarray(array[crop], dtype=np.float32))
        img.SetSpacing(images["t1"].GetSpacing())
        img.SetDirection(images["t1"].GetDirection())
        img.SetOrigin(images["t1"].TransformIndexToPhysicalPoint([int(v) for v in lo[::-1]]))
        return img

    return as_image(brain), as_image(gm), as_image(wm)


@functools.lru_cache(maxsize=4)
def _load_template(spacing: float) -> _Template:
    """Template tissue fractions on an isotropic ``spacing`` mm grid (cached; read-only)."""
    maps = list(_native_maps())
    native = maps[0].GetSpacing()[0]
    reference = maps[0]
    if spacing != native:
        size = [int((n - 1) * native / spacing) + 1 for n in reference.GetSize()]
        grid = sitk.Image(size, sitk.sitkUInt8)
        grid.SetSpacing((spacing,) * 3)
        grid.SetOrigin(reference.GetOrigin())
        grid.SetDirection(reference.GetDirection())
        # Smooth before subsampling so coarse voxels hold tissue fractions, not aliased samples.
        sigma = 0.42 * float(np.sqrt(max(spacing**2 - native**2, 0.0)))
        maps = [
            sitk.Resample(
                sitk.SmoothingRecursiveGaussian(m, sigma),
                grid,
                sitk.Transform(),
                sitk.sitkLinear,
                0.0,
            )
            for m in maps
        ]
        reference = grid
    brain_f, gm, wm = (np.clip(sitk.GetArrayFromImage(m), 0.0, 1.0) for m in maps)
    brain = brain_f > 0.5
    gm, wm = gm * brain, wm * brain
    excess = np.maximum(gm + wm, 1.0)
    gm, wm = gm / excess, wm / excess
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    fractions = np.stack([csf, gm, wm]).astype(np.float32)
    anatomy = ((np.argmax(fractions, axis=0) + 1) * brain).astype(np.uint8)
    depth = ndimage.distance_transform_edt(brain, sampling=spacing).astype(np.float32)
    # Ventricles: CSF deep inside the brain (sulci are within ~15 mm of the surface).
    ventricles = (csf > 0.5) & (depth > 15.0)
    ventricle_distance = (
        ndimage.distance_transform_edt(~ventricles, sampling=spacing)
        - ndimage.distance_transform_edt(ventricles, sampling=spacing)
    ).astype(np.float32)
    box = ndimage.find_objects(
        ndimage.binary_dilation(ventricles, iterations=int(8 / spacing) + 1).astype(np.uint8)
    )[0]
    centre = np.array(
        reference.TransformContinuousIndexToPhysicalPoint(
            [float(c) for c in ndimage.center_of_mass(brain)[::-1]]
        )
    )
    for a in (fractions, anatomy, depth, ventricle_distance, centre):
        a.flags.writeable = False
    ref = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(reference)
    return _Template(ref, fractions, anatomy, depth, ventricle_distance, box, centre)


def _grid_points(ref: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """Physical points (..., 3) of continuous voxel indices ``zyx`` (..., 3)."""
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    return np.array(ref.GetOrigin()) + (zyx[..., ::-1] * ref.GetSpacing()[0]) @ direction.T


def _grid_index(ref: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (..., 3) in (z, y, x) order of physical ``points`` (..., 3)."""
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    xyz = (points - np.array(ref.GetOrigin())) @ direction / ref.GetSpacing()[0]
    return xyz[..., ::-1]


@functools.lru_cache(maxsize=1)
def _sites() -> dict[str, np.ndarray]:
    """Lesion sites per location (template-space physical points, ``_SITE_SPACING`` grid)."""
    tpl = _load_template(_SITE_SPACING)
    csf, gm, wm = tpl.fractions
    idx = np.argwhere(tpl.anatomy > 0)
    points = _grid_points(tpl.reference, idx.astype(float))
    # Gliomas are mostly supratentorial: no cerebellum or brainstem (LPS: posterior
    # is +y, so MNI y < -40 is LPS y > 40).
    supra = ~(((points[:, 1] > 40) & (points[:, 2] < -10)) | (points[:, 2] < -35))
    z, y, x = idx.T
    depth, vent = tpl.depth[z, y, x], tpl.ventricle_distance[z, y, x]
    w, g = wm[z, y, x], gm[z, y, x]
    masks = {
        "lobar": (w > 0.5) & (depth > 15.0) & (vent > 8.0),
        "periventricular": (w > 0.4) & (vent > 1.5) & (vent < 8.0),
        "cortical": (w + g > 0.8) & (depth > 5.0) & (depth < 14.0),
    }
    sites = {}
    for name, mask in masks.items():
        pool = points[mask & supra]
        pool.flags.writeable = False
        sites[name] = pool
    return sites


def _case_streams(seed: int | Sequence[int]) -> list[np.random.Generator]:
    """Independent generators: tumour plan, anatomy, appearance, rendering."""
    if isinstance(seed, (int, np.integer)):
        values = [seed]
    elif isinstance(seed, Sequence) and not isinstance(seed, str):
        values = list(seed)
    else:
        values = []
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values
    ):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, not {seed!r}")
    children = np.random.SeedSequence([int(v) for v in values]).spawn(4)
    return [np.random.default_rng(s) for s in children]


def _check_p_empty(p_empty: float) -> None:
    if not 0.0 <= p_empty <= 1.0:
        raise ValueError(f"p_empty must be between 0 and 1, got {p_empty}")


def plan_case(
    seed: int | Sequence[int], *, p_empty: float = 0.1, params: PhantomParams | None = None
) -> CasePlan:
    """Draw a case's tumour, anatomy and appearance without making images (milliseconds).

    :func:`generate_case` with the same seed, ``p_empty`` and ``params`` renders
    exactly this plan, at any spacing.

    Args:
        seed: non-negative integer or a sequence of them.
        p_empty: probability that the case has no tumour.
        params: ranges and rates (default :class:`PhantomParams`).

    Returns:
        the :class:`CasePlan`.
    """
    _check_p_empty(p_empty)
    params = params or PhantomParams()
    rng_tumour, rng_anatomy, rng_look, _ = _case_streams(seed)
    tumour = plan_tumour(rng_tumour, params.tumour, _sites(), p_empty, _SITE_SPACING)
    return CasePlan(
        tumour,
        _draw_anatomy(rng_anatomy, params.anatomy),
        draw_appearance(rng_look, params.contrast),
    )


def _draw_anatomy(rng: np.random.Generator, a: AnatomyParams) -> AnatomyDraw:
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


def _resize_ventricles(tpl: _Template, dilation: float) -> tuple[np.ndarray, np.ndarray]:
    """GM and WM fractions (float32 copies) with the ventricle walls moved by ``dilation`` mm."""
    gm, wm = tpl.fractions[1].copy(), tpl.fractions[2].copy()
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
        freed = np.clip(tpl.fractions[0][box] - new, 0.0, 1.0) * (d < 0)
        wm[box] += freed
    return gm, wm


def _deformation(
    tpl: _Template, plan: CasePlan, rng: np.random.Generator
) -> tuple[sitk.Image, list[float]]:
    """Output -> template displacement field (physical mm) on the output grid.

    The affine (about the brain centre) plus a fine and a coarse smooth random
    field are evaluated on a ``_NODE_MM`` node grid and interpolated linearly;
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
    nodes = [max(2, int(np.ceil((n - 1) * spacing / _NODE_MM)) + 1) for n in shape]
    grid = np.stack(
        np.meshgrid(*[np.linspace(0.0, n - 1.0, k) for n, k in zip(shape, nodes)], indexing="ij"),
        -1,
    )
    x = _grid_points(ref, grid)  # (nz, ny, nx, 3)
    a = plan.anatomy
    matrix = np.reshape(a.matrix, (3, 3))
    p = tpl.centre + (x - tpl.centre) @ matrix.T + np.array(a.shift)
    for amplitude, corr_mm in ((a.elastic_mm, 20.0), (a.coarse_elastic_mm, 50.0)):
        corr = corr_mm / _NODE_MM
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
    for lesion in plan.tumour.lesions:
        centre = np.array(lesion.centre)
        # Where the lesion lands in the output (the affine's inverse; the
        # smooth fields move it by a few mm, covered by the margin).
        at = _grid_index(ref, tpl.centre + np.linalg.solve(matrix, centre - tpl.centre - a.shift))
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
        idx = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1)
        xb = _grid_points(ref, idx.astype(np.float32))
        pb = _mass_effect(xb + dense[box], centre, radius, share, reach)
        dense[box] = pb - xb
    image = sitk.GetImageFromArray(dense, isVector=True)
    image.CopyInformation(ref)
    return image, scales


def _mass_effect(
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
    r = np.linalg.norm(d, axis=-1, keepdims=True)
    inner = r * (1.0 - m) ** (1.0 / 3.0)
    outer = np.cbrt(np.maximum(r**3 - m * radius**3, 0.0))
    r0 = np.where(r <= radius, inner, outer)
    if reach is not None:
        fade = np.clip((reach - r) / (0.3 * reach), 0.0, 1.0)
        r0 = r + (r0 - r) * fade
    return (centre + d * (r0 / np.maximum(r, 1e-6))).astype(p.dtype, copy=False)


def _warp(array: np.ndarray, tpl: _Template, displacement: sitk.Image, interpolator: int):
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


def _tumour_maps(rng, codes: np.ndarray, plan: TumourPlan, spacing: float):
    """Edema opacity and core fractions in the tumour's box (see :class:`TissueMaps`)."""
    lesion = codes > 0
    if not lesion.any():
        return None, {}, None
    border = max(lesion_.edema_border_mm for lesion_ in plan.lesions)
    sigma_ed = border / 2.355 / spacing * 2.0  # border width ~ the 12-88 % rise of the edge
    pad = int(np.ceil(3 * sigma_ed)) + 2
    box = ndimage.find_objects(lesion.astype(np.uint8))[0]
    box = tuple(
        slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(box, codes.shape)
    )
    c = codes[box]
    maps = {"ed": ndimage.gaussian_filter((c > 0).astype(np.float32), sigma_ed, truncate=3.0)}
    sigma_core = 0.5  # voxel: partial volume at the core's borders
    for name, code in (("et", ET), ("nec", NEC), ("net", NET)):
        if (c == code).any():
            maps[name] = ndimage.gaussian_filter(
                (c == code).astype(np.float32), sigma_core, truncate=3.0
            )
    shape = c.shape
    return box, maps, tumour_texture_field(rng, shape, spacing)


def _vessels(rng, fractions, edge, codes, density: float, spacing: float):
    """Flat indices and weights of enhancing vessels: thin tubes in CSF-rich brain.

    Not on the brain's edge, whose partial volume would hide them.
    """
    if density <= 0:
        return np.zeros(0, np.intp), np.zeros(0, np.float32)
    shape = edge.shape
    corr = max(1.5, 8.0 / spacing)
    # Where two smooth fields both cross zero: curves, i.e. tubes once thresholded.
    tube = np.abs(smooth_noise(rng, shape, corr)) + np.abs(smooth_noise(rng, shape, corr))
    idx = np.flatnonzero((edge > 0.95) & (fractions["csf"] + fractions["gm"] > 0) & (codes == 0))
    score = tube.ravel()[idx] - fractions["csf"].ravel()[idx]  # CSF first: sulci, ventricles
    n = min(int(density * np.count_nonzero(edge)), idx.size)
    if n < 1:
        return np.zeros(0, np.intp), np.zeros(0, np.float32)
    chosen = idx[np.argpartition(score, n - 1)[:n]]
    # Thin vessels fill their voxels partly.
    return chosen, rng.uniform(0.3, 1.0, chosen.size).astype(np.float32)


def _edge(brain: np.ndarray, texture: np.ndarray, sigma: float, share: float) -> np.ndarray:
    """Brain share of each voxel (float32): about ``share`` on the mask's border, 1 inside.

    The border's share varies along it (by ``texture``), as a real mask's does.
    """
    border = brain & ~ndimage.binary_erosion(brain)
    weight = np.where(brain, 1.0, share).astype(np.float32)
    weight[border] = np.clip(share + 0.3 * texture[border], 0.0, 1.0)
    return ndimage.gaussian_filter(weight, sigma, truncate=3.0) if sigma > 0.2 else weight


def _pad_to_fov(
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


def generate_case(
    seed: int | Sequence[int],
    *,
    spacing: float = 1.0,
    p_empty: float = 0.1,
    params: PhantomParams | None = None,
) -> PhantomCase:
    """Synthesise one phantom case.

    Args:
        seed: non-negative integer, or a sequence of them (``generate_dataset``
            uses ``(seed, case_index)``); same seed, spacing and params -> identical
            arrays. The plan (tumour, anatomy, contrasts) does not depend on the spacing.
        spacing: isotropic voxel size in mm, 1 (BraTS-like) to 4. The grid is the
            template's brain plus an 8 mm margin, padded to a 240 x 240 x 155 mm
            field of view (``params.anatomy.field_of_view_mm``): 240 x 240 x 163
            voxels (x, y, z) at 1 mm, 160 x 160 x 109 at 1.5 mm.
        p_empty: probability that the case has no tumour (all-zero ``seg``).
        params: ranges and rates (default :class:`PhantomParams`).

    Returns:
        a :class:`PhantomCase`; all images share spacing, origin and the
        template's LPS direction. Arrays from them are (z, y, x).

    Raises:
        ValueError: spacing or p_empty out of range, bad seed.
        ImportError: nilearn (which ships the template) is not installed.
    """
    spacing = _check_spacing(spacing)
    params = params or PhantomParams()
    plan = plan_case(seed, p_empty=p_empty, params=params)
    with _one_blas_thread():
        return _render_case(seed, plan, spacing, params)


def _one_blas_thread():
    """Limit BLAS to one thread: the field matrices are small, and threads only add overhead."""
    try:  # a dependency of scikit-learn, which nilearn requires
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _render_case(
    seed: int | Sequence[int], plan: CasePlan, spacing: float, params: PhantomParams
) -> PhantomCase:
    rng = _case_streams(seed)[3]
    rng_tumour, rng_warp, rng_maps, *rng_seq = rng.spawn(3 + len(SEQUENCES))
    tpl = _load_template(spacing)
    ref = tpl.reference

    gm, wm = _resize_ventricles(tpl, plan.anatomy.ventricle_dilation_mm)
    brain0 = tpl.anatomy > 0
    csf = np.clip(brain0 - gm - wm, 0.0, 1.0)
    anatomy = ((np.argmax(np.stack([csf, gm, wm]), axis=0) + 1) * brain0).astype(np.uint8)
    displacement, volume_scales = _deformation(tpl, plan, rng_warp)
    codes = render_tumour(
        rng_tumour,
        plan.tumour,
        wm=wm,
        csf=csf,
        brain=brain0,
        spacing=spacing,
        to_index=lambda p: _grid_index(ref, p),
        volume_scales=volume_scales,
    )

    # Tumour codes and anatomy travel in one uint8 volume so one nearest-neighbour
    # pass moves both identically.
    packed = _warp(codes * 4 + anatomy, tpl, displacement, sitk.sitkNearestNeighbor)
    codes, anatomy = packed // 4, packed % 4
    brain = anatomy > 0
    gm = np.clip(_warp(gm, tpl, displacement, sitk.sitkLinear), 0.0, 1.0) * brain
    wm = np.clip(_warp(wm, tpl, displacement, sitk.sitkLinear), 0.0, 1.0) * brain
    excess = np.maximum(gm + wm, 1.0)
    gm /= excess
    wm /= excess
    fractions = {"csf": np.clip(brain - gm - wm, 0.0, 1.0), "gm": gm, "wm": wm}

    box, tumour, tumour_texture = _tumour_maps(rng_maps, codes, plan.tumour, spacing)
    texture = smooth_noise(rng_maps, brain.shape, max(1.0, 2.5 / spacing))
    edge = _edge(brain, texture, plan.anatomy.edge_mm / spacing, plan.anatomy.edge_share)
    maps = TissueMaps(
        brain=brain,
        fractions=fractions,
        texture=texture,
        tumour_box=box,
        tumour=tumour,
        tumour_texture=tumour_texture,
        vessels=_vessels(rng_maps, fractions, edge, codes, plan.anatomy.vessel_density, spacing),
        edge=edge,
        spacing=spacing,
    )
    arrays = {m: render_sequence(r, maps, plan.appearance[m]) for m, r in zip(SEQUENCES, rng_seq)}
    tissue = np.zeros(codes.shape, np.uint8)
    for code, label in _TISSUE_TO_LABEL.items():
        tissue[codes == code] = label
    arrays["seg"] = tissue_to_raw(tissue, CONVENTIONS["brats2021"]).astype(np.uint8)
    arrays["anatomy"] = anatomy.astype(np.uint8)
    arrays, grid = _pad_to_fov(arrays, ref, params.anatomy.field_of_view_mm)

    has_tumour = bool(arrays["seg"].any())
    return PhantomCase(
        images={m: _to_image(arrays[m], grid) for m in SEQUENCES},
        seg=_to_image(arrays["seg"], grid),
        has_tumour=has_tumour,
        kind=plan.kind if has_tumour else "empty",
        anatomy=_to_image(arrays["anatomy"], grid),
        plan=plan,
    )


def _to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


_CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def write_case(
    case: PhantomCase, out_dir: str | os.PathLike, case_id: str, *, overwrite: bool = False
) -> Path:
    """Write ``<out_dir>/<case_id>/<case_id>_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Files go to a hidden sibling folder that is renamed into place, so a case
    folder is either complete or absent.

    Args:
        case: from :func:`generate_case`.
        out_dir: parent folder, created if missing.
        case_id: letters, digits, ``_`` and ``-``.
        overwrite: replace an existing case folder.

    Returns:
        the case folder.

    Raises:
        ValueError: bad case id. FileExistsError: the case folder exists.
    """
    if not _CASE_ID.fullmatch(case_id):
        raise ValueError(f"case id must be letters, digits, '_' or '-', got {case_id!r}")
    out_dir = Path(out_dir)
    final = out_dir / case_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass overwrite=True to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    # Hidden name that no BraTS finder mistakes for a case folder.
    tmp = out_dir / f".{case_id}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, image in [*((m, case.images[m]) for m in MODALITIES), ("seg", case.seg)]:
            sitk.WriteImage(image, str(tmp / f"{case_id}_{name}.nii.gz"), True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def generate_dataset(
    out_dir: str | os.PathLike,
    n_cases: int,
    *,
    seed: int = 0,
    spacing: float = 1.0,
    p_empty: float = 0.1,
    prefix: str = "Phantom",
    overwrite: bool = False,
    on_case: Callable[[Path, PhantomCase], None] | None = None,
    params: PhantomParams | None = None,
) -> list[Path]:
    """Write ``n_cases`` phantom cases in the BraTS 2021 layout.

    Case ``i`` is ``generate_case((seed, i), ...)`` written as ``<prefix>_<i:05d>``,
    so it does not depend on ``n_cases``.

    Args:
        out_dir: output folder; must be missing or empty unless ``overwrite``.
        n_cases: number of cases (>= 1).
        seed: base seed (>= 0).
        spacing: isotropic voxel size in mm (1 to 4).
        p_empty: probability of a tumour-free case.
        prefix: case id prefix.
        overwrite: write into a non-empty folder, replacing same-named cases
            (other content is left alone).
        on_case: called with (case folder, case) after each case is written.
        params: ranges and rates (default :class:`PhantomParams`).

    Returns:
        the case folders, in order.

    Raises:
        ValueError: bad argument, or ``out_dir`` non-empty without ``overwrite``
            (the message names the folder).
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    _check_spacing(spacing)
    _check_p_empty(p_empty)
    _case_streams(seed)
    if not _CASE_ID.fullmatch(prefix):
        raise ValueError(f"prefix must be letters, digits, '_' or '-', got {prefix!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"output folder {out} is not empty; use overwrite (--overwrite) to write into it"
        )
    paths = []
    for i in range(n_cases):
        case = generate_case((seed, i), spacing=spacing, p_empty=p_empty, params=params)
        path = write_case(case, out, f"{prefix}_{i:05d}", overwrite=overwrite)
        paths.append(path)
        if on_case is not None:
            on_case(path, case)
    return paths


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise _UsageError(message)


#: Written by the CLI into each case folder it writes; ``--overwrite`` replaces only those.
CLI_MARKER = ".brainseg-phantom"


def build_parser() -> argparse.ArgumentParser:
    """Command-line interface of ``brainseg-phantom``."""
    parser = _Parser(prog="brainseg-phantom", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (missing or empty)")
    parser.add_argument("--num-cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=1.0,
        help="isotropic voxel size in mm, 1-4 (default 1; 2 for fast CPU demos)",
    )
    parser.add_argument(
        "--p-empty", type=float, default=0.1, help="probability of a tumour-free case (default 0.1)"
    )
    parser.add_argument("--prefix", default="Phantom", help="case id prefix (default Phantom)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty folder, replacing same-named cases that "
        f"brainseg-phantom wrote ({CLI_MARKER})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``brainseg-phantom``). Returns the exit status."""
    parser = build_parser()

    def report(path: Path, case: PhantomCase) -> None:
        (path / CLI_MARKER).write_text("written by brainseg-phantom\n", encoding="utf-8")
        seg = sitk.GetArrayViewFromImage(case.seg)
        ml = np.count_nonzero(seg) * float(np.prod(case.seg.GetSpacing())) / 1000.0
        print(f"{path}  {case.kind}  tumour {ml:.1f} ml", flush=True)

    try:
        args = parser.parse_args(argv)
        for i in range(args.num_cases) if args.overwrite else ():
            folder = Path(args.out) / f"{args.prefix}_{i:05d}"
            if os.path.lexists(folder) and not (folder / CLI_MARKER).is_file():
                raise ValueError(
                    f"{folder} exists and was not written by brainseg-phantom (no {CLI_MARKER}); "
                    "nothing was replaced: choose another --out or --prefix"
                )
        paths = generate_dataset(
            args.out,
            args.num_cases,
            seed=args.seed,
            spacing=args.spacing,
            p_empty=args.p_empty,
            prefix=args.prefix,
            overwrite=args.overwrite,
            on_case=report,
        )
    except (_UsageError, ValueError, FileExistsError, ImportError, OSError) as exc:
        print(f"brainseg-phantom: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
