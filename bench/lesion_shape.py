#!/usr/bin/env python
"""How compact the tumour regions of a set of cases are.

Real glioma label maps are compact: the whole tumour is one rounded mass with a
few broad lobes. A region that threads out in thin strands loses much of its
volume to a morphological opening, while a compact one loses only its outline's
small bumps. For every case this prints, per region (WT, TC), its volume and the
share of it that an opening with a ball of each radius removes ("thin share").
Label maps are first resampled (nearest neighbour) to one isotropic grid, so
1 mm real scans and 1.5 mm phantom cases are measured alike. The summary gives
the median and range over the cases whose region is at least ``--min-ml``: small
regions lose more to any fixed ball, so compare like sizes.

    .venv/bin/python bench/lesion_shape.py --cases /path/to/brats_cases
    .venv/bin/python bench/lesion_shape.py --phantom 30 --seed 5000
    .venv/bin/python bench/lesion_shape.py --phantom 30 --seed 5000 --edema-wm-scale-mm 0

``--phantom N`` renders N tumour cases in memory (seeds ``(SEED, i)``, 1.5 mm,
nothing written) with the default parameters, or with the edema's white-matter
scale replaced (``TumourParams.edema_wm_scale_mm``; 0 was the phantom before it).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

REGIONS = ("WT", "TC")


def ball(radius_mm: float, spacing: float) -> np.ndarray:
    """Boolean ball of ``radius_mm`` on an isotropic grid of ``spacing`` mm."""
    r = int(np.ceil(radius_mm / spacing))
    z, y, x = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (z * z + y * y + x * x) * spacing**2 <= radius_mm**2


def thin_share(mask: np.ndarray, radius_mm: float, spacing: float) -> float:
    """Share of ``mask`` that an opening with a ball of ``radius_mm`` removes."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    pad = int(np.ceil(radius_mm / spacing)) + 2
    box = tuple(slice(max(s.start - pad, 0), s.stop + pad) for s in box)
    region = mask[box]
    opened = ndimage.binary_opening(region, structure=ball(radius_mm, spacing))
    return 1.0 - float(opened.sum()) / float(region.sum())


def resampled(image, spacing: float):
    """``image`` (a SimpleITK label map) on an isotropic grid, nearest neighbour."""
    import SimpleITK as sitk

    size = [max(1, round(n * s / spacing)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        image.GetOrigin(),
        (spacing,) * 3,
        image.GetDirection(),
        0,
        image.GetPixelID(),
    )


def wt_and_tc(labels: np.ndarray, convention: str) -> np.ndarray:
    """bool (2, z, y, x): the WT and TC masks of a raw label map (the project's ``regions``)."""
    from brainseg_d2.labels import get_convention, get_target, raw_to_tissue

    tissue = raw_to_tissue(labels, get_convention(convention))
    return get_target("regions").masks_from_tissue(tissue)[:2]


def case_regions(folder: Path, spacing: float) -> Iterator[tuple[str, np.ndarray]]:
    """``(case_id, bool (2, z, y, x) WT and TC)`` of each labelled BraTS-layout case."""
    import SimpleITK as sitk

    from brainseg_d2.data.ground_truth import read_label_image
    from brainseg_d2.data.sources import find_brats_cases

    for case in find_brats_cases(folder):
        if case.mask is None:
            continue
        image, _ = read_label_image(case.mask)
        labels = sitk.GetArrayFromImage(resampled(image, spacing))
        yield case.case_id, wt_and_tc(labels, case.label_convention)


def phantom_regions(
    n: int, seed: int, spacing: float, edema_wm_scale_mm: float | None
) -> Iterator[tuple[str, np.ndarray]]:
    """The same for ``n`` phantom cases rendered in memory (BraTS 2021 labels)."""
    import SimpleITK as sitk

    from brainseg_d2.data.phantom import PhantomParams, generate_case

    params = PhantomParams()
    if edema_wm_scale_mm is not None:
        tumour = dataclasses.replace(params.tumour, edema_wm_scale_mm=edema_wm_scale_mm)
        params = dataclasses.replace(params, tumour=tumour)
    for i in range(n):
        case = generate_case((seed, i), spacing=spacing, p_empty=0.0, params=params)
        yield f"phantom_{seed}_{i:05d}", wt_and_tc(sitk.GetArrayFromImage(case.seg), "brats2021")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", type=Path, help="folder of BraTS-layout case folders")
    source.add_argument("--phantom", type=int, metavar="N", help="render N phantom cases")
    p.add_argument("--seed", type=int, default=5000, help="phantom base seed (default 5000)")
    p.add_argument(
        "--edema-wm-scale-mm", type=float, help="phantom edema white-matter scale (default: 0)"
    )
    p.add_argument("--spacing", type=float, default=1.5, help="grid in mm (default 1.5)")
    p.add_argument("--radii", type=float, nargs="+", default=[3.0, 4.5], help="ball radii, mm")
    p.add_argument("--min-ml", type=float, default=40.0, help="summary: smallest region (ml)")
    args = p.parse_args()
    if args.spacing <= 0 or min(args.radii) <= 0:
        p.error(f"--spacing and --radii must be positive, got {args.spacing} and {args.radii}")
    if args.phantom is not None and args.phantom < 1:
        p.error(f"--phantom must be at least 1, got {args.phantom}")
    if args.edema_wm_scale_mm is not None and not args.edema_wm_scale_mm >= 0:
        p.error(f"--edema-wm-scale-mm must be >= 0, got {args.edema_wm_scale_mm}")

    if args.cases is not None:
        try:
            regions = list(case_regions(args.cases, args.spacing))
        except ValueError as exc:
            p.error(str(exc))
    else:
        scale = args.edema_wm_scale_mm
        regions = list(phantom_regions(args.phantom, args.seed, args.spacing, scale))

    voxel_ml = args.spacing**3 / 1000.0
    radii = " | ".join(f"thin share r {r:g} mm" for r in args.radii)
    print(f"| case | region | ml | {radii} |")
    print("|---" * (3 + len(args.radii)) + "|")
    large = {name: [] for name in REGIONS}
    for case_id, masks in regions:
        for name, mask in zip(REGIONS, masks):
            if not mask.any():
                continue
            ml = float(mask.sum()) * voxel_ml
            shares = [thin_share(mask, r, args.spacing) for r in args.radii]
            cells = " | ".join(f"{s:.3f}" for s in shares)
            print(f"| {case_id} | {name} | {ml:.1f} | {cells} |")
            if ml >= args.min_ml:
                large[name].append(shares)
    print(f"\nRegions of at least {args.min_ml:g} ml: median [min - max] thin share")
    for name, rows in large.items():
        if not rows:
            print(f"  {name}: none")
            continue
        a = np.array(rows)
        cells = [
            f"r {r:g} mm {np.median(a[:, k]):.3f} [{a[:, k].min():.3f} - {a[:, k].max():.3f}]"
            for k, r in enumerate(args.radii)
        ]
        print(f"  {name} (n={len(rows)}): " + ", ".join(cells))


if __name__ == "__main__":
    main()
