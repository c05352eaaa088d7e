"""The MNI152 template of the MRI phantom: tissue fractions on a grid, and lesion sites.

The MNI152 2009c template and its grey/white-matter probability maps ship
inside the ``nilearn`` wheel, so nothing is downloaded. :func:`load_template`
gives its CSF/GM/WM fractions on an isotropic grid (the brain's box plus a
margin), and :func:`sites` the template points where a lesion may sit.

Arrays are numpy ``(z, y, x)``; SimpleITK sizes and indices are ``(x, y, z)``;
physical coordinates are LPS millimetres.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MARGIN_MM = 8.0  # background kept around the brain bounding box
SITE_SPACING = 3.0  # mm; lesion sites are planned on this grid whatever the case's spacing


@dataclass(frozen=True)
class Template:
    reference: sitk.Image  # output grid before padding; pixels unused
    fractions: np.ndarray  # float32 (3, z, y, x): CSF, GM, WM; sum 1 in brain, 0 outside
    anatomy: np.ndarray  # uint8 (z, y, x): 0 outside, 1 CSF, 2 GM, 3 WM
    depth: np.ndarray  # float32 (z, y, x): mm to the nearest voxel outside the brain
    ventricle_distance: np.ndarray  # float32 (z, y, x): signed mm to the ventricle walls
    ventricle_box: tuple[slice, ...]  # where ventricle resizing can change anything
    centre: np.ndarray  # (3,) physical brain centroid


def template_dir() -> Path:
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


@functools.lru_cache(maxsize=1)
def _native_maps() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """Brain mask, GM and WM (float32 images, template grid cropped to the brain + margin)."""
    folder = template_dir()
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
def load_template(spacing: float) -> Template:
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
    return Template(ref, fractions, anatomy, depth, ventricle_distance, box, centre)


def grid_points(ref: sitk.Image, zyx: np.ndarray) -> np.ndarray:
    """Physical points (..., 3) of continuous voxel indices ``zyx`` (..., 3)."""
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    return np.array(ref.GetOrigin()) + (zyx[..., ::-1] * ref.GetSpacing()[0]) @ direction.T


def grid_index(ref: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (..., 3) in (z, y, x) order of physical ``points`` (..., 3)."""
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    xyz = (points - np.array(ref.GetOrigin())) @ direction / ref.GetSpacing()[0]
    return xyz[..., ::-1]


@functools.lru_cache(maxsize=1)
def sites() -> dict[str, np.ndarray]:
    """Lesion sites per location (template-space physical points, ``SITE_SPACING`` grid)."""
    tpl = load_template(SITE_SPACING)
    csf, gm, wm = tpl.fractions
    idx = np.argwhere(tpl.anatomy > 0)
    points = grid_points(tpl.reference, idx.astype(float))
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
