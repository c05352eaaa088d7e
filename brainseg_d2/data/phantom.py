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
3. one deformation for everything (:mod:`~brainseg_d2.data.phantom_anatomy`):
   affine (head size, shape, pose) + smooth elastic fields on a 4 mm node
   grid, composed with each lesion's mass effect (tissue pushed radially away
   from the core, volume-preserving outside it);
4. FLAIR, T1, T1ce and T2 synthesised from the warped fractions
   (:mod:`~brainseg_d2.data.phantom_render`): tissue means, texture, fuzzy
   edema (its label reaching out over the faint edge, as real labels do),
   enhancing vessels, bias field, noise, blur or thick slices, gamma; zero
   outside the brain (skull-stripped like BraTS);
5. the grid padded to BraTS's 240 x 240 x 155 mm field of view.

Arrays are numpy ``(z, y, x)`` as SimpleITK returns them; SimpleITK sizes and
indices are ``(x, y, z)``; physical coordinates are LPS millimetres.

Command: ``brainseg-phantom --output DIR --num-cases N`` (:mod:`brainseg_d2.cli.phantom`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainseg_d2.data.phantom_anatomy import (
    brain_share,
    deformation,
    pad_to_fov,
    resize_ventricles,
    vessel_voxels,
    warp_array,
)
from brainseg_d2.data.phantom_contrast import SEQUENCES
from brainseg_d2.data.phantom_fields import smooth_noise
from brainseg_d2.data.phantom_lesions import render_tumour
from brainseg_d2.data.phantom_plan import (
    CasePlan,
    PhantomParams,
    case_streams,
    check_p_empty,
    check_spacing,
    plan_case,
)
from brainseg_d2.data.phantom_render import TissueMaps, render_sequence, tumour_texture_field
from brainseg_d2.data.phantom_template import grid_index, load_template
from brainseg_d2.data.phantom_tumour import (
    ED,
    ET,
    NEC,
    NET,
    TumourParams,
    TumourPlan,
)
from brainseg_d2.labels import CONVENTIONS, TISSUE_ED, TISSUE_ET, TISSUE_NCR, tissue_to_raw
from brainseg_d2.utils.paths import write_marker

MODALITIES = SEQUENCES  # ("flair", "t1", "t1ce", "t2")
P_LOW_GRADE = TumourParams.p_low_grade

_TISSUE_TO_LABEL = {NEC: TISSUE_NCR, NET: TISSUE_NCR, ED: TISSUE_ED, ET: TISSUE_ET}


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


def _tumour_maps(rng, codes: np.ndarray, plan: TumourPlan, spacing: float):
    """Edema opacity and core fractions in the tumour's box (see :class:`TissueMaps`)."""
    lesion = codes > 0
    if not lesion.any():
        return None, {}, None
    border = max(lesion_.edema_border_mm for lesion_ in plan.lesions)
    sigma_ed = border / 2.355 / spacing * 2.0  # border width ~ the 12-88 % rise of the edge
    pad = int(np.ceil(3 * sigma_ed)) + 2
    box, top = ndimage.find_objects(lesion.astype(np.uint8))[0], codes.shape
    box = tuple(slice(max(0, s.start - pad), min(n, s.stop + pad)) for s, n in zip(box, top))
    c = codes[box]
    maps = {"ed": ndimage.gaussian_filter((c > 0).astype(np.float32), sigma_ed, truncate=3.0)}
    # The blurred mask is 0.5 on the label's outline; the fade exponent lowers
    # that, so the outline lies out on the faint edge of the edema.
    maps["ed"] **= max(lesion_.edema_fade for lesion_ in plan.lesions)
    sigma_core = 0.5  # voxel: partial volume at the core's borders
    for name, code in (("et", ET), ("nec", NEC), ("net", NET)):
        if (c == code).any():
            maps[name] = ndimage.gaussian_filter(
                (c == code).astype(np.float32), sigma_core, truncate=3.0
            )
    shape = c.shape
    return box, maps, tumour_texture_field(rng, shape, spacing)


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
    spacing = check_spacing(spacing)
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
    rng = case_streams(seed)[3]
    rng_tumour, rng_warp, rng_maps, *rng_seq = rng.spawn(3 + len(SEQUENCES))
    tpl = load_template(spacing)
    ref = tpl.reference

    csf, gm, wm, anatomy = resize_ventricles(tpl, plan.anatomy.ventricle_dilation_mm)
    brain0 = tpl.anatomy > 0
    displacement, volume_scales = deformation(tpl, plan.anatomy, plan.tumour.lesions, rng_warp)
    codes = render_tumour(
        rng_tumour,
        plan.tumour,
        wm=wm,
        csf=csf,
        brain=brain0,
        spacing=spacing,
        to_index=lambda p: grid_index(ref, p),
        volume_scales=volume_scales,
    )

    # Tumour codes and anatomy travel in one uint8 volume so one nearest-neighbour
    # pass moves both identically.
    packed = warp_array(codes * 4 + anatomy, tpl, displacement, sitk.sitkNearestNeighbor)
    codes, anatomy = packed // 4, packed % 4
    brain = anatomy > 0
    gm = np.clip(warp_array(gm, tpl, displacement, sitk.sitkLinear), 0.0, 1.0) * brain
    wm = np.clip(warp_array(wm, tpl, displacement, sitk.sitkLinear), 0.0, 1.0) * brain
    excess = np.maximum(gm + wm, 1.0)
    gm /= excess
    wm /= excess
    fractions = {"csf": np.clip(brain - gm - wm, 0.0, 1.0), "gm": gm, "wm": wm}

    box, tumour, tumour_texture = _tumour_maps(rng_maps, codes, plan.tumour, spacing)
    texture = smooth_noise(rng_maps, brain.shape, max(1.0, 2.5 / spacing))
    edge = brain_share(brain, texture, plan.anatomy.edge_mm / spacing, plan.anatomy.edge_share)
    maps = TissueMaps(
        brain=brain,
        fractions=fractions,
        texture=texture,
        tumour_box=box,
        tumour=tumour,
        tumour_texture=tumour_texture,
        vessels=vessel_voxels(
            rng_maps, fractions, edge, codes, plan.anatomy.vessel_density, spacing
        ),
        edge=edge,
        spacing=spacing,
    )
    arrays = {m: render_sequence(r, maps, plan.appearance[m]) for m, r in zip(SEQUENCES, rng_seq)}
    tissue = np.zeros(codes.shape, np.uint8)
    for code, label in _TISSUE_TO_LABEL.items():
        tissue[codes == code] = label
    arrays["seg"] = tissue_to_raw(tissue, CONVENTIONS["brats2021"]).astype(np.uint8)
    arrays["anatomy"] = anatomy.astype(np.uint8)
    arrays, grid = pad_to_fov(arrays, ref, params.anatomy.field_of_view_mm)

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
    case: PhantomCase, out_dir: str | os.PathLike, case_id: str, *, overwrite: bool = False,
    marker: tuple[str, str] | None = None,
) -> Path:
    """Write ``<out_dir>/<case_id>/<case_id>_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Files go to a hidden sibling folder that is renamed into place, so a case
    folder is either complete or absent.

    Args:
        case: from :func:`generate_case`.
        out_dir: parent folder, created if missing.
        case_id: letters, digits, ``_`` and ``-``.
        overwrite: replace an existing case folder.
        marker: ``(file name, tool)``: a marker written into the folder before its rename.

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
        if marker is not None:  # part of the folder, so a finished case always has it
            write_marker(tmp, *marker)
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
    workers: int = 1,
    marker: tuple[str, str] | None = None,
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
        workers: processes that generate and write cases at once (>= 1). Every
            case depends only on ``(seed, i)``, so the files are the same for any
            number of workers; ``on_case`` is still called in order, in this process.
        marker: written into every case folder (:func:`write_case`).

    Returns:
        the case folders, in order.

    Raises:
        ValueError: bad argument, or ``out_dir`` non-empty without ``overwrite``
            (the message names the folder).
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer, got {n_cases!r}")
    check_spacing(spacing)
    check_p_empty(p_empty)
    case_streams(seed)
    if not _CASE_ID.fullmatch(prefix):
        raise ValueError(f"prefix must be letters, digits, '_' or '-', got {prefix!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"output folder {out} is not empty; use overwrite (--overwrite) to write into it"
        )
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    jobs = [
        _CaseJob((seed, i), out, f"{prefix}_{i:05d}", spacing, p_empty, params, overwrite,
                 return_case=on_case is not None, marker=marker)
        for i in range(n_cases)
    ]  # fmt: skip
    paths = []
    with contextlib.ExitStack() as stack:
        if workers > 1 and n_cases > 1:
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, n_cases)))
            results = pool.map(_make_case, jobs)
        else:
            results = map(_make_case, jobs)
        for path, case in results:
            paths.append(path)
            if on_case is not None:
                on_case(path, case)
    return paths


@dataclass(frozen=True)
class _CaseJob:
    """One case of :func:`generate_dataset` (picklable, for worker processes)."""

    seed: tuple[int, int]
    out: Path
    name: str
    spacing: float
    p_empty: float
    params: PhantomParams | None
    overwrite: bool
    return_case: bool
    marker: tuple[str, str] | None = None


def _make_case(job: _CaseJob) -> tuple[Path, PhantomCase | None]:
    case = generate_case(job.seed, spacing=job.spacing, p_empty=job.p_empty, params=job.params)
    path = write_case(case, job.out, job.name, overwrite=job.overwrite, marker=job.marker)
    return path, (case if job.return_case else None)
