"""Built-in MRI phantom: BraTS-2021-layout cases synthesised from real anatomy.

Anatomy comes from the MNI152 2009c symmetric template and its grey/white-matter
probability maps, which the ``nilearn`` wheel ships inside the package, so
nothing is downloaded. For each case:

1. CSF/GM/WM fractions of the template, resampled to the requested spacing and
   cropped to the brain plus a margin (cached per spacing);
2. unless the case is drawn empty, a random glioma: an irregular enhancing rim
   (label 4) around a necrotic core (label 1) inside edema (label 2) that spreads
   along white matter; a quarter of tumours are low-grade-like (non-enhancing
   core, label 1, in edema, no enhancement);
3. FLAIR, T1, T1ce and T2 from the tissue fractions with textbook relative
   intensities (see ``_INTENSITY``);
4. one random smooth deformation (small affine + elastic) for images (linear)
   and labels (nearest neighbour);
5. per-modality multiplicative bias field, intensity scale and Rician noise;
   zero outside the brain, i.e. skull-stripped like BraTS.

Arrays are numpy ``(z, y, x)`` as SimpleITK returns them; SimpleITK sizes and
indices are ``(x, y, z)``; physical coordinates are LPS millimetres.

CLI: ``brainseg-phantom --out DIR --num-cases N`` or ``python -m brainseg_d2.data.phantom``.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.transform import Rotation

from brainseg_d2.labels import CONVENTIONS, TISSUE_ED, TISSUE_ET, TISSUE_NCR, tissue_to_raw

MODALITIES = ("flair", "t1", "t1ce", "t2")
SPACING_RANGE = (1.0, 4.0)  # the template is 1 mm; coarser than 4 mm loses small tumours
P_LOW_GRADE = 0.25

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MARGIN_MM = 8.0  # background kept around the brain bounding box

# Relative signal per tissue class, chosen to reproduce the usual appearance of
# clinical glioma scans (not quantitative relaxometry): T1 WM > GM > CSF with a
# hypointense tumour; T1ce adds a bright enhancing rim; T2 has bright CSF, edema
# and necrosis; FLAIR suppresses CSF while edema is the brightest tissue.
# ed: edema, enh: enhancing tumour, nec: necrosis, net: non-enhancing tumour.
_CLASSES = ("csf", "gm", "wm", "ed", "enh", "nec", "net")
_INTENSITY = {
    #        csf   gm    wm    ed    enh   nec   net
    "flair": (0.10, 0.60, 0.45, 0.95, 0.80, 0.50, 0.90),
    "t1": (0.25, 0.55, 0.80, 0.60, 0.55, 0.20, 0.45),
    "t1ce": (0.25, 0.57, 0.80, 0.60, 1.30, 0.18, 0.45),
    "t2": (1.00, 0.60, 0.40, 0.85, 0.70, 0.95, 0.85),
}
# Relative heterogeneity of tumour classes: enhancing tumour is the patchiest.
_TEXTURE = {"ed": 0.06, "enh": 0.15, "nec": 0.10, "net": 0.08}


@dataclass
class PhantomCase:
    """One synthetic case, all images on the same grid.

    Attributes:
        images: ``flair``, ``t1``, ``t1ce``, ``t2`` -> float32 image, 0 outside the brain.
        seg: uint8 label image in the BraTS 2021 convention (0, 1 NCR, 2 ED, 4 ET).
        has_tumour: False for a tumour-free case (``seg`` all zero).
        kind: ``"empty"``, ``"high_grade"`` or ``"low_grade"``.
        anatomy: uint8 normal-tissue map, 0 outside, 1 CSF, 2 GM, 3 WM (the largest
            template fraction, ignoring the tumour). Not written by :func:`write_case`;
            handy for checks and per-tissue statistics.
    """

    images: dict[str, sitk.Image]
    seg: sitk.Image
    has_tumour: bool
    kind: str
    anatomy: sitk.Image


@dataclass(frozen=True)
class _Template:
    reference: sitk.Image  # output grid; pixels unused
    fractions: np.ndarray  # float32 (3, z, y, x): CSF, GM, WM; sum 1 in brain, 0 outside
    anatomy: np.ndarray  # uint8 (z, y, x): 0 outside, 1 CSF, 2 GM, 3 WM
    depth: np.ndarray  # float32 (z, y, x): mm to the nearest voxel outside the brain
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
    centre = np.array(
        reference.TransformContinuousIndexToPhysicalPoint(
            [float(c) for c in ndimage.center_of_mass(brain)[::-1]]
        )
    )
    for a in (fractions, anatomy, depth, centre):
        a.flags.writeable = False
    ref = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    ref.CopyInformation(reference)
    return _Template(ref, fractions, anatomy, depth, centre)


def _physical(tpl: _Template, zyx: np.ndarray) -> np.ndarray:
    """Physical points (N, 3) of voxel indices ``zyx`` (N, 3)."""
    ref = tpl.reference
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    return np.array(ref.GetOrigin()) + (zyx[:, ::-1] * ref.GetSpacing()[0]) @ direction.T


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], corr: float) -> np.ndarray:
    """Zero-mean, unit-variance random field (float32, ``shape``), correlation ``corr`` voxels."""
    # White noise on a coarse grid, smoothed and upsampled: much cheaper than
    # filtering full-size noise with a wide kernel.
    step = max(1.0, corr / 2.0)
    coarse_shape = tuple(int(np.ceil(n / step)) + 3 for n in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), 1.5)
    field = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse_shape)], order=1)
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _ellipsoid_distance(
    rng: np.random.Generator, offsets: list[np.ndarray], elongation: float
) -> np.ndarray:
    """|A x| for broadcast mm ``offsets`` (z, y, x): a randomly oriented unit ellipsoid norm."""
    axes = np.exp(rng.normal(0.0, elongation, 3))
    a = np.diag(1.0 / (axes / np.prod(axes) ** (1 / 3))) @ _random_rotation(rng)
    return np.sqrt(
        sum(
            (a[i, 0] * offsets[0] + a[i, 1] * offsets[1] + a[i, 2] * offsets[2]) ** 2
            for i in range(3)
        )
    ).astype(np.float32)


def _pick_centre(rng: np.random.Generator, tpl: _Template, clearance: float) -> np.ndarray:
    """A white-matter voxel (z, y, x) at least ``clearance`` mm inside the brain."""
    wm = tpl.fractions[2]
    for need in (clearance, clearance * 0.6, 0.0):
        candidates = np.argwhere((wm > 0.5) & (tpl.depth > need))
        if len(candidates) == 0:
            continue
        # Gliomas are mostly supratentorial: avoid cerebellum and brainstem (LPS:
        # posterior is +y, so MNI y < -40 is LPS y > 40).
        p = _physical(tpl, candidates)
        supra = candidates[~(((p[:, 1] > 40) & (p[:, 2] < -10)) | (p[:, 2] < -35))]
        pool = supra if len(supra) else candidates
        return pool[rng.integers(len(pool))]
    return np.array(np.unravel_index(np.argmax(tpl.depth), tpl.depth.shape))


_Tumour = tuple[tuple[slice, ...], np.ndarray, dict[str, np.ndarray]]  # box, tissue, fractions


def _make_tumour(rng: np.random.Generator, tpl: _Template, high_grade: bool) -> _Tumour:
    """Random tumour near a white-matter site.

    Returns:
        ``box`` (slices into the template grid), ``tissue`` (uint8 tissue codes, box
        shape) and soft class fractions ``{"ed"|"enh"|"nec"|"net": float32 box array}``.
    """
    spacing = tpl.reference.GetSpacing()[0]
    radius = rng.uniform(9.0, 22.0) if high_grade else rng.uniform(6.0, 14.0)  # core, mm
    edema_radius = radius * (rng.uniform(1.4, 2.2) if high_grade else rng.uniform(1.2, 1.7))
    amp, amp_ed = rng.uniform(0.10, 0.30), rng.uniform(0.20, 0.40)
    centre = _pick_centre(rng, tpl, radius + 3.0)

    half = int(np.ceil(edema_radius * (1 + 2.5 * amp_ed) / spacing)) + 2
    box = tuple(
        slice(max(0, c - half), min(n, c + half + 1)) for c, n in zip(centre, tpl.depth.shape)
    )
    shape = tuple(s.stop - s.start for s in box)
    offsets = [(grid - c) * spacing for grid, c in zip(np.ogrid[box], centre)]  # mm, broadcast
    wm = tpl.fractions[2][box]
    allowed = (tpl.anatomy[box] > 0) & (tpl.fractions[0][box] < 0.6)  # not into ventricles

    # Core: ellipsoid whose radius is modulated by smooth noise -> lobulated outline.
    shape_noise = np.clip(_smooth_noise(rng, shape, 0.6 * radius / spacing), -2.5, 2.5)
    rel = _ellipsoid_distance(rng, offsets, 0.15) / radius
    outline = 1.0 + amp * shape_noise
    core = rel < outline
    # Edema: larger, more irregular, confined to white matter except for a thin
    # shell that keeps the core wrapped.
    ed_noise = np.clip(_smooth_noise(rng, shape, 0.4 * edema_radius / spacing), -2.5, 2.5)
    ed_rel = _ellipsoid_distance(rng, offsets, 0.25) / edema_radius
    edema = ((ed_rel < 1.0 + amp_ed * ed_noise) & (wm > 0.3)) | (rel < outline + 0.2)

    tissue = np.zeros(shape, np.uint8)
    tissue[edema & allowed] = TISSUE_ED
    if high_grade:
        tissue[core & allowed] = TISSUE_ET
        rim = rng.uniform(2.5, 6.0)  # enhancing wall thickness, mm
        if radius - rim > 2.5 and rng.random() < 0.9:
            rim_noise = _smooth_noise(rng, shape, 0.5 * radius / spacing)
            necrosis = rel < outline - (rim / radius) * (1.0 + 0.35 * rim_noise)
            # At least ~1.5 mm of enhancing wall everywhere, so necrosis never touches edema.
            necrosis &= ndimage.binary_erosion(core, iterations=int(np.ceil(1.5 / spacing)))
            tissue[necrosis & allowed] = TISSUE_NCR
    else:
        tissue[core & allowed] = TISSUE_NCR  # non-enhancing tumour core

    # Keep the piece that holds the core: WM-restricted edema can leave islands.
    parts, n = ndimage.label(tissue > 0)
    if n > 1:
        sizes = np.bincount(parts.ravel(), weights=(tissue != TISSUE_ED).ravel())
        sizes[0] = -1
        tissue[parts != np.argmax(sizes)] = 0

    # Partial volume at the borders; edema fades out more gradually.
    classes = {"ed": TISSUE_ED, "enh": TISSUE_ET} if high_grade else {"ed": TISSUE_ED}
    classes["nec" if high_grade else "net"] = TISSUE_NCR
    fractions = {}
    for name, code in classes.items():
        sigma = (1.2 if name == "ed" else 0.6) / spacing
        fractions[name] = ndimage.gaussian_filter((tissue == code).astype(np.float32), sigma)
    total = sum(fractions.values())
    scale = (tpl.anatomy[box] > 0) / np.maximum(total, 1.0)
    return box, tissue, {k: (v * scale).astype(np.float32) for k, v in fractions.items()}


def _synthesise(rng: np.random.Generator, tpl: _Template, tumour: _Tumour | None) -> np.ndarray:
    """Noise-free contrasts (float32, (4, z, y, x), modality order ``MODALITIES``)."""
    # Small per-case jitter of tissue contrasts, as between scanners/protocols.
    mu = {
        m: {k: v * float(np.exp(rng.normal(0.0, 0.03))) for k, v in zip(_CLASSES, _INTENSITY[m])}
        for m in MODALITIES
    }
    normal = np.array([[mu[m][k] for k in ("csf", "gm", "wm")] for m in MODALITIES], np.float32)
    images = np.tensordot(normal, tpl.fractions, axes=1)
    if tumour is not None:
        box, _, fractions = tumour
        shape = next(iter(fractions.values())).shape
        spacing = tpl.reference.GetSpacing()[0]
        texture = _smooth_noise(rng, shape, 3.0 / spacing)
        keep = 1.0 - sum(fractions.values())
        for i, m in enumerate(MODALITIES):
            region = images[i][box]
            region *= keep
            for k, f in fractions.items():
                region += f * (mu[m][k] * (1.0 + _TEXTURE[k] * texture))
    return images


def _random_warp(rng: np.random.Generator, tpl: _Template) -> sitk.Transform:
    """Small random affine + elastic deformation as a dense displacement-field transform."""
    ref = tpl.reference
    node = 10.0  # mm between field nodes; linear interpolation between them is smooth enough
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    extent = np.array(ref.GetSize()) * ref.GetSpacing()[0]
    n_nodes = [int(np.ceil(e / node)) + 3 for e in extent]  # x, y, z
    origin = np.array(ref.GetOrigin()) - direction @ np.full(3, node)
    ijk = np.stack(np.meshgrid(*[np.arange(n) * node for n in n_nodes], indexing="ij"), -1)
    points = origin + ijk @ direction.T  # (nx, ny, nz, 3)

    rotation = Rotation.from_rotvec(rng.normal(0.0, np.deg2rad(3.0), 3)).as_matrix()
    matrix = rotation @ np.diag(np.exp(rng.normal(0.0, 0.04, 3)))
    shift = rng.normal(0.0, 2.0, 3)
    displacement = (points - tpl.centre) @ (matrix - np.eye(3)).T + shift
    elastic = ndimage.gaussian_filter(rng.standard_normal((*n_nodes, 3)), (2.5, 2.5, 2.5, 0))
    elastic *= rng.uniform(1.0, 3.0) / max(float(elastic.std()), 1e-6)  # mm
    displacement += elastic

    field = sitk.GetImageFromArray(displacement.transpose(2, 1, 0, 3).copy(), isVector=True)
    field.SetOrigin(origin.tolist())
    field.SetSpacing((node,) * 3)
    field.SetDirection(ref.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Log of a smooth multiplicative field (float32, ``shape``): a random cubic polynomial."""
    degree = np.add.outer(np.add.outer(np.arange(4), np.arange(4)), np.arange(4))
    coeffs = rng.normal(0.0, 1.0, (4, 4, 4)) / np.maximum(degree, 1)
    coeffs[(degree > 3) | (degree == 0)] = 0.0
    powers = [np.linspace(-1.0, 1.0, n, dtype=np.float32) ** np.arange(4)[:, None] for n in shape]
    # Contracted one axis at a time, so the cost is a few passes over the volume.
    return np.einsum("ijk,iz,jy,kx->zyx", coeffs.astype(np.float32), *powers, optimize=True)


def _case_rng(seed: int | Sequence[int]) -> np.random.Generator:
    values = [seed] if isinstance(seed, (int, np.integer)) else list(seed)
    if not values or any(not isinstance(v, (int, np.integer)) or v < 0 for v in values):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, not {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(v) for v in values]))


def generate_case(
    seed: int | Sequence[int], *, spacing: float = 1.0, p_empty: float = 0.1
) -> PhantomCase:
    """Synthesise one phantom case.

    Args:
        seed: non-negative integer, or a sequence of them (``generate_dataset``
            uses ``(seed, case_index)``); same seed and spacing -> identical arrays.
        spacing: isotropic voxel size in mm, 1 (BraTS-like) to 4. The grid is the
            template's brain plus an 8 mm margin: 161 x 198 x 163 voxels (x, y, z)
            at 1 mm, 81 x 99 x 82 at 2 mm.
        p_empty: probability that the case has no tumour (all-zero ``seg``).

    Returns:
        a :class:`PhantomCase`; all images share spacing, origin and the
        template's LPS direction. Arrays from them are (z, y, x).

    Raises:
        ValueError: spacing or p_empty out of range, bad seed.
        ImportError: nilearn (which ships the template) is not installed.
    """
    spacing = _check_spacing(spacing)
    if not 0.0 <= p_empty <= 1.0:
        raise ValueError(f"p_empty must be between 0 and 1, got {p_empty}")
    rng = _case_rng(seed)
    tpl = _load_template(spacing)
    ref = tpl.reference

    kind = (
        "empty"
        if rng.random() < p_empty
        else ("low_grade" if rng.random() < P_LOW_GRADE else "high_grade")
    )
    tumour = None if kind == "empty" else _make_tumour(rng, tpl, kind == "high_grade")
    clean = _synthesise(rng, tpl, tumour)
    tissue = np.zeros(tpl.anatomy.shape, np.uint8)
    if tumour is not None:
        tissue[tumour[0]] = tumour[1]

    transform = _random_warp(rng, tpl)

    def warp(array: np.ndarray, interpolator: int) -> np.ndarray:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(ref)
        return sitk.GetArrayFromImage(sitk.Resample(image, ref, transform, interpolator, 0))

    # Labels and anatomy travel in one uint8 volume so one nearest-neighbour pass
    # moves both identically.
    packed = warp(tissue * 4 + tpl.anatomy, sitk.sitkNearestNeighbor)
    tissue, anatomy = packed // 4, packed % 4
    brain = np.flatnonzero(anatomy)

    images = {}
    for i, modality in enumerate(MODALITIES):
        values = warp(clean[i], sitk.sitkLinear).ravel()[brain]
        log_bias = _bias_field(rng, anatomy.shape).ravel()[brain]
        log_bias -= log_bias.mean()
        log_bias *= rng.uniform(0.04, 0.15) / max(float(log_bias.std()), 1e-6)
        values *= np.exp(log_bias)
        scale = 1000.0 * float(np.exp(rng.normal(0.0, 0.3)))
        values *= scale
        sigma = rng.uniform(0.01, 0.04) * scale  # tissue SNR roughly 10 to 100
        noise = rng.standard_normal((2, len(values)), dtype=np.float32) * sigma
        out = np.zeros(anatomy.size, np.float32)
        out[brain] = np.hypot(values + noise[0], noise[1])  # Rician magnitude
        images[modality] = _to_image(out.reshape(anatomy.shape), ref)

    seg = tissue_to_raw(tissue, CONVENTIONS["brats2021"]).astype(np.uint8)
    return PhantomCase(
        images=images,
        seg=_to_image(seg, ref),
        has_tumour=bool(seg.any()),
        kind=kind if seg.any() else "empty",
        anatomy=_to_image(anatomy.astype(np.uint8), ref),
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

    Returns:
        the case folders, in order.

    Raises:
        ValueError: bad argument, or ``out_dir`` non-empty without ``overwrite``
            (the message names the folder).
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    _check_spacing(spacing)
    if not 0.0 <= p_empty <= 1.0:
        raise ValueError(f"p_empty must be between 0 and 1, got {p_empty}")
    _case_rng(seed)
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
        case = generate_case((seed, i), spacing=spacing, p_empty=p_empty)
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


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``brainseg-phantom``). Returns the exit status."""
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
        help="write into a non-empty folder, replacing same-named cases",
    )

    def report(path: Path, case: PhantomCase) -> None:
        seg = sitk.GetArrayViewFromImage(case.seg)
        ml = np.count_nonzero(seg) * float(np.prod(case.seg.GetSpacing())) / 1000.0
        print(f"{path}  {case.kind}  tumour {ml:.1f} ml", flush=True)

    try:
        args = parser.parse_args(argv)
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
