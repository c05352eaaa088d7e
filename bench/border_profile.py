#!/usr/bin/env python
"""How bright a tumour region's outline is: the image across the label's border.

Annotators draw a region's outline somewhere on the ramp between the lesion's
signal and the tissue around it. Where on that ramp decides how far a model
must reach into faint signal, so a phantom whose outlines sit higher on the
ramp than real labels teaches a model to stop short on real scans. For every
case this prints the image's median in 1 mm shells of signed distance from the
outline (negative inside), as a share of the lesion's contrast: 0 is the
surrounding reference, 1 the lesion's plateau.

- ``WT`` on FLAIR: reference the brain more than 10 mm outside the whole tumour,
  plateau the edema deeper than 3 mm; inside the outline only edema counts
  (and the outermost 1.5 mm, whatever its label).
- ``TC`` on T1ce: reference a 3-6 mm shell outside the core, plateau the
  enhancing tumour 1-3 mm inside it; inside only enhancing tumour counts.

The summary gives each shell's median over the cases, the depth (mm, negative
inside) at which the profile falls through half the contrast, and the "faint
share": the fraction of the region's own tissue (edema for WT) whose signal,
smoothed at 1 mm, keeps under a quarter of the contrast, labelled lesion the
image barely shows.

    .venv/bin/python bench/border_profile.py --cases /path/to/brats_cases
    .venv/bin/python bench/border_profile.py --phantom 16 --spacing 1.0
    .venv/bin/python bench/border_profile.py --phantom 16 --spacing 1.0 --region TC

``--phantom N`` renders N tumour cases in memory (seeds ``(SEED, i)``, nothing
written) with the default parameters; cases whose region is under ``--min-ml``
are skipped (a few voxels give no profile).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

SEQUENCE = {"WT": "flair", "TC": "t1ce"}
SHELLS = np.arange(-6.0, 6.0, 1.0)  # lower edges, mm


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """mm from the outline of ``mask``, negative inside; voxel centres at +-half a voxel."""
    half = 0.5 * min(spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.where(mask, half - inside, outside - half)


def region_mask(tissue: np.ndarray, region: str) -> np.ndarray:
    """The WT or TC mask of a canonical tissue map (the project's ``regions`` target)."""
    from brainseg_d2.labels import get_target

    wt, tc = get_target("regions").masks_from_tissue(tissue)[:2]
    return wt if region == "WT" else tc


def _ramp(image: np.ndarray, tissue: np.ndarray, mask: np.ndarray, spacing, region: str):
    """``(d, low, high, lesion, counted)`` of the region's edge, or None without a contrast.

    ``d`` signed distance (mm), ``low`` / ``high`` the reference's and the
    plateau's median signal, ``lesion`` the region's own tissue (ED or ET),
    ``counted`` the voxels the shells take.
    """
    from brainseg_d2.labels import TISSUE_ED, TISSUE_ET

    brain = image > 0
    d = signed_distance(mask, spacing)
    if region == "WT":
        lesion = tissue == TISSUE_ED
        reference = image[brain & (d > 10.0)]
        plateau = image[lesion & (d < -3.0)]
        counted = ~mask | lesion | (d > -1.5)
    else:
        lesion = tissue == TISSUE_ET
        reference = image[brain & (d > 3.0) & (d < 6.0)]
        plateau = image[lesion & (d < -1.0) & (d > -3.0)]
        counted = ~mask | lesion
    if plateau.size < 20 or reference.size < 20:
        return None
    low, high = float(np.median(reference)), float(np.median(plateau))
    if high <= low:
        return None
    return d, low, high, lesion, brain & counted


def profile(
    image: np.ndarray, tissue: np.ndarray, mask: np.ndarray, spacing, region: str
) -> tuple[np.ndarray, float]:
    """The share of the lesion's contrast in each shell of :data:`SHELLS`, and the faint share.

    ``mask`` is ``region_mask(tissue, region)``. The first array is NaN where a
    shell has few voxels. The faint share is the fraction of the region's own
    tissue (edema for WT, enhancing tumour for TC) whose signal, smoothed at
    1 mm, keeps less than a quarter of the contrast: labelled lesion that the
    image barely shows (NaN without a contrast).
    """
    shares = np.full(len(SHELLS), np.nan)
    ramp = _ramp(image, tissue, mask, spacing, region)
    if ramp is None:
        return shares, float("nan")
    d, low, high, lesion, counted = ramp
    for k, lo in enumerate(SHELLS):
        values = image[counted & (d >= lo) & (d < lo + 1.0)]
        if values.size >= 20:
            shares[k] = (float(np.median(values)) - low) / (high - low)
    smooth = ndimage.gaussian_filter(image, [1.0 / s for s in spacing])
    faint = float(np.mean(smooth[lesion] - low < 0.25 * (high - low))) if lesion.any() else np.nan
    return shares, faint


def half_depth(shares: np.ndarray) -> float:
    """Where the profile first falls through 0.5 going outwards (mm; shell centres)."""
    centres = SHELLS + 0.5
    for k in range(len(shares) - 1):
        a, b = shares[k], shares[k + 1]
        if np.isfinite(a) and np.isfinite(b) and a >= 0.5 > b:
            return float(centres[k] + (a - 0.5) / (a - b))
    return float("nan")


def real_cases(folder: Path, region: str) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """``(case_id, image, tissue, spacing zyx)`` of each labelled BraTS-layout case.

    The folder is searched at once (a bad folder raises ValueError before any
    case is read); the cases are then loaded one at a time.
    """
    from brainseg_d2.data.sources import find_brats_cases

    labelled = [case for case in find_brats_cases(folder) if case.mask is not None]
    return (_load_real(case, region) for case in labelled)


def _load_real(case, region: str) -> tuple[str, np.ndarray, np.ndarray, tuple]:
    import SimpleITK as sitk

    from brainseg_d2.data.ground_truth import read_label_image
    from brainseg_d2.data.volume_io import read_image
    from brainseg_d2.labels import get_convention, raw_to_tissue

    image = read_image(case.channels[SEQUENCE[region]])
    labels, _ = read_label_image(case.mask)
    tissue = raw_to_tissue(sitk.GetArrayFromImage(labels), get_convention(case.label_convention))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    return case.case_id, array, tissue, tuple(image.GetSpacing())[::-1]


def phantom_cases(
    n: int, seed: int, spacing: float, region: str
) -> Iterator[tuple[str, np.ndarray, np.ndarray, tuple]]:
    """The same for ``n`` phantom cases rendered in memory (BraTS 2021 labels)."""
    import SimpleITK as sitk

    from brainseg_d2.data.phantom import generate_case
    from brainseg_d2.labels import get_convention, raw_to_tissue

    for i in range(n):
        case = generate_case((seed, i), spacing=spacing, p_empty=0.0)
        tissue = raw_to_tissue(sitk.GetArrayFromImage(case.seg), get_convention("brats2021"))
        array = sitk.GetArrayFromImage(case.images[SEQUENCE[region]])
        yield f"phantom_{seed}_{i:05d}", array, tissue, (spacing,) * 3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", type=Path, help="folder of BraTS-layout case folders")
    source.add_argument("--phantom", type=int, metavar="N", help="render N phantom cases")
    p.add_argument("--region", choices=sorted(SEQUENCE), default="WT", help="default WT")
    p.add_argument("--seed", type=int, default=5000, help="phantom base seed (default 5000)")
    p.add_argument("--spacing", type=float, default=1.0, help="phantom grid in mm (default 1)")
    p.add_argument("--min-ml", type=float, default=20.0, help="skip smaller regions (ml)")
    args = p.parse_args()
    if args.spacing <= 0:
        p.error(f"--spacing must be positive, got {args.spacing}")
    if args.phantom is not None and args.phantom < 1:
        p.error(f"--phantom must be at least 1, got {args.phantom}")

    if args.cases is not None:
        try:
            cases = real_cases(args.cases, args.region)
        except ValueError as exc:
            p.error(str(exc))
    else:
        cases = phantom_cases(args.phantom, args.seed, args.spacing, args.region)
    shells = " | ".join(f"{lo:+g}" for lo in SHELLS)
    print(f"{args.region} on {SEQUENCE[args.region]}, shells in mm from the outline")
    print(f"| case | ml | {shells} | half at (mm) | faint |")
    print("|---" * (4 + len(SHELLS)) + "|")
    rows, halves, faints = [], [], []
    try:
        for case_id, image, tissue, spacing in cases:
            mask = region_mask(tissue, args.region)
            ml = float(mask.sum()) * float(np.prod(spacing)) / 1000.0
            if ml < args.min_ml:
                continue
            shares, faint = profile(image, tissue, mask, spacing, args.region)
            half = half_depth(shares)
            rows.append(shares)
            halves.append(half)
            faints.append(faint)
            cells = " | ".join(f"{v:+.2f}" for v in shares)
            print(f"| {case_id} | {ml:.1f} | {cells} | {half:+.1f} | {faint:.2f} |")
    except ValueError as exc:
        p.error(str(exc))
    if not rows:
        print(f"\nno case has a {args.region} of at least {args.min_ml:g} ml")
        return
    median = np.nanmedian(np.array(rows), axis=0)
    h = np.array(halves)
    h = h[np.isfinite(h)]
    print(f"\nmedian over {len(rows)} cases: " + " ".join(f"{v:+.2f}" for v in median))
    if h.size:
        print(f"half contrast at {np.median(h):+.1f} mm [{h.min():+.1f} - {h.max():+.1f}]")
    f = np.array(faints)
    f = f[np.isfinite(f)]
    if f.size:
        print(
            f"faint share (lesion tissue under a quarter of the contrast): mean {f.mean():.3f} "
            f"[{f.min():.2f} - {f.max():.2f}]"
        )


if __name__ == "__main__":
    main()
