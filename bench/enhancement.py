#!/usr/bin/env python
"""Tumour tissue contrasts on real scans or phantom cases: contrast uptake, and core against edema.

Two tables per set of cases:

* **Contrast uptake.** For every tumour tissue (necrosis / non-enhancing core,
  enhancing tumour, edema) the mean T1 and T1ce signal, each relative to the
  median of the normal brain in that sequence (non-zero voxels outside the
  tumour), and their ratio. A tissue that takes up no contrast has a ratio near
  1; enhancing tumour well above it.
* **Core against edema.** The necrotic / non-enhancing core's mean signal over
  the edema's, per sequence: what tells the tumour core from the edema around
  it, apart from where it lies. ``--edema-depth MM`` takes only the edema more
  than that far inside the tumour's outline: the labelled edema includes a faint
  fringe (the phantom's ``edema_fade``), and the phantom draws the core's signal
  against its edema at full opacity, which it reaches some 4-5 mm inside. A last
  column gives the share of core voxels that look like that edema in all four
  sequences at once (Mahalanobis distance under 2 from the edema's joint
  distribution, 1 mm smoothing): core that no sequence tells from edema.

The same numbers for real BraTS scans and for phantom cases show whether the
phantom's tissues look as real ones do.

    .venv/bin/python bench/enhancement.py --cases /path/to/brats_cases
    .venv/bin/python bench/enhancement.py --cases output/demo/cases/train --summary
    .venv/bin/python bench/enhancement.py --cases /path/to/brats_cases --edema-depth 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainseg_d2.structures.dataset import BRATS_CHANNELS as SEQUENCES

MIN_VOXELS = 50  # tissues smaller than this are left out


def contrast_uptake(t1: np.ndarray, t1ce: np.ndarray, tissue: np.ndarray) -> dict[int, tuple]:
    """Tissue code -> (T1, T1ce, T1ce / T1), each signal over the normal brain's median.

    Codes with fewer than 50 voxels are left out.
    """
    normal = (t1 > 0) & (tissue == 0)
    ref_t1, ref_t1ce = float(np.median(t1[normal])), float(np.median(t1ce[normal]))
    out = {}
    for code in np.unique(tissue[tissue > 0]):
        mask = tissue == code
        if mask.sum() < MIN_VOXELS:
            continue
        a = float(t1[mask].mean()) / ref_t1
        b = float(t1ce[mask].mean()) / ref_t1ce
        out[int(code)] = (a, b, b / a)
    return out


def core_over_edema(
    image: np.ndarray, tissue: np.ndarray, core: int, edema: int, within: np.ndarray | None = None
) -> float | None:
    """Mean signal of the ``core`` code over that of the ``edema`` code; None if either is small.

    ``within``: bool mask the edema is restricted to (e.g. deep inside the tumour).
    """
    a, b = tissue == core, tissue == edema
    if within is not None:
        b &= within
    if a.sum() < MIN_VOXELS or b.sum() < MIN_VOXELS:
        return None
    return float(image[a].mean()) / float(image[b].mean())


def edema_like_share(
    images: dict[str, np.ndarray], tissue: np.ndarray, core: int, edema: np.ndarray, spacing
) -> float | None:
    """Share of the ``core`` code's voxels that look like ``edema`` in every sequence at once.

    Each sequence is smoothed at 1 mm; a voxel looks like edema when its
    Mahalanobis distance from the edema voxels' joint distribution (all
    sequences together) is under 2. None if either set is small.
    """
    a = tissue == core
    if a.sum() < MIN_VOXELS or edema.sum() < MIN_VOXELS:
        return None
    sigma = [1.0 / s for s in spacing]
    stack = np.stack([ndimage.gaussian_filter(images[s], sigma) for s in SEQUENCES], -1)
    ref = stack[edema]
    inverse = np.linalg.inv(np.cov(ref.T) + 1e-6 * np.eye(len(SEQUENCES)))
    delta = stack[a] - ref.mean(0)
    distance = np.sqrt(np.einsum("ij,jk,ik->i", delta, inverse, delta))
    return float(np.mean(distance < 2.0))


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {np.median(values):.2f} / {max(values):.2f} (n={len(values)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of BraTS-layout case folders")
    p.add_argument("--summary", action="store_true", help="only the spread over cases")
    p.add_argument(
        "--edema-depth",
        type=float,
        default=0.0,
        metavar="MM",
        help="core against the edema more than MM inside the outline only (default 0: all)",
    )
    args = p.parse_args()
    if args.edema_depth < 0:
        p.error(f"--edema-depth must be >= 0, got {args.edema_depth}")

    import SimpleITK as sitk

    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.labels import TISSUE_ED, TISSUE_ET, TISSUE_NCR
    from brainseg_d2.labels.conventions import get_convention, raw_to_tissue

    names = {TISSUE_NCR: "NCR/NET", TISSUE_ET: "ET", TISSUE_ED: "ED"}
    ratios: dict[int, list[float]] = {code: [] for code in names}
    core: dict[str, list[float]] = {seq: [] for seq in SEQUENCES}
    edema_like: list[float] = []
    rows = []
    try:
        cases = find_brats_cases(args.cases)
    except ValueError as exc:
        p.error(str(exc))
    for case in cases:
        mask_image = sitk.ReadImage(str(case.mask))
        tissue = raw_to_tissue(sitk.GetArrayFromImage(mask_image),
                               get_convention(case.label_convention))  # fmt: skip
        spacing = mask_image.GetSpacing()[::-1]
        deep = None
        if args.edema_depth > 0:
            deep = ndimage.distance_transform_edt(tissue > 0, sampling=spacing) > args.edema_depth
        images = {s: sitk.GetArrayFromImage(sitk.ReadImage(str(case.channels[s]))).astype(
            np.float32) for s in SEQUENCES}  # fmt: skip
        found = contrast_uptake(images["t1"], images["t1ce"], tissue)
        cells = []
        for code in names:
            if code in found:
                ratios[code].append(found[code][2])
                cells.append("{:.2f}, {:.2f}, **{:.2f}**".format(*found[code]))
            else:
                cells.append("-")
        for seq in SEQUENCES:
            r = core_over_edema(images[seq], tissue, TISSUE_NCR, TISSUE_ED, deep)
            if r is not None:
                core[seq].append(r)
            cells.append("-" if r is None else f"{r:.2f}")
        ed = (tissue == TISSUE_ED) if deep is None else (tissue == TISSUE_ED) & deep
        like = edema_like_share(images, tissue, TISSUE_NCR, ed, spacing)
        if like is not None:
            edema_like.append(like)
        cells.append("-" if like is None else f"{like:.3f}")
        rows.append(f"| {case.case_id} | " + " | ".join(cells) + " |")
    ed_name = f"ED deeper than {args.edema_depth:g} mm" if args.edema_depth > 0 else "ED"
    if not args.summary:
        print(
            "| case | "
            + " | ".join(f"{n}: T1, T1ce, ratio" for n in names.values())
            + " | "
            + " | ".join(f"NCR/NET over {ed_name}, {s}" for s in SEQUENCES)
            + f" | NCR/NET like {ed_name} |"
        )
        print("|---" * (2 + len(names) + len(SEQUENCES)) + "|")
        print("\n".join(rows))
    print("\nT1ce / T1 ratio over cases (min / median / max, n):")
    for code, values in ratios.items():
        print(f"  {names[code]}: {_spread(values)}")
    print(f"NCR/NET over {ed_name}, per sequence (min / median / max, n):")
    for seq, values in core.items():
        print(f"  {seq}: {_spread(values)}")
    print(
        f"NCR/NET voxels like {ed_name} in all sequences (Mahalanobis < 2): {_spread(edema_like)}"
    )


if __name__ == "__main__":
    main()
