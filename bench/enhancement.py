#!/usr/bin/env python
"""Contrast uptake per tumour tissue: T1ce against T1, on real scans or phantom cases.

For every case and tumour tissue (necrosis / non-enhancing core, enhancing
tumour, edema) the mean T1 and T1ce signal, each relative to the median of the
normal brain in that sequence (non-zero voxels outside the tumour), and their
ratio. A tissue that takes up no contrast has a ratio near 1; enhancing tumour
well above it. The same numbers for real BraTS scans and for phantom cases show
whether the phantom's tissues enhance as real ones do.

    .venv/bin/python bench/enhancement.py --cases /path/to/brats_cases
    .venv/bin/python bench/enhancement.py --cases output/demo/cases/train --summary
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def contrast_uptake(t1: np.ndarray, t1ce: np.ndarray, tissue: np.ndarray) -> dict[int, tuple]:
    """Tissue code -> (T1, T1ce, T1ce / T1), each signal over the normal brain's median.

    Codes with fewer than 50 voxels are left out.
    """
    normal = (t1 > 0) & (tissue == 0)
    ref_t1, ref_t1ce = float(np.median(t1[normal])), float(np.median(t1ce[normal]))
    out = {}
    for code in np.unique(tissue[tissue > 0]):
        mask = tissue == code
        if mask.sum() < 50:
            continue
        a = float(t1[mask].mean()) / ref_t1
        b = float(t1ce[mask].mean()) / ref_t1ce
        out[int(code)] = (a, b, b / a)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of BraTS-layout case folders")
    p.add_argument("--summary", action="store_true", help="only the spread over cases")
    args = p.parse_args()

    import SimpleITK as sitk

    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.labels import TISSUE_ED, TISSUE_ET, TISSUE_NCR
    from brainseg_d2.labels.conventions import get_convention, raw_to_tissue

    names = {TISSUE_NCR: "NCR/NET", TISSUE_ET: "ET", TISSUE_ED: "ED"}
    ratios: dict[int, list[float]] = {code: [] for code in names}
    if not args.summary:
        print("| case | " + " | ".join(f"{n}: T1, T1ce, ratio" for n in names.values()) + " |")
        print("|---|---|---|---|")
    for case in find_brats_cases(args.cases):
        tissue = raw_to_tissue(sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask))),
                               get_convention(case.label_convention))  # fmt: skip
        t1, t1ce = (sitk.GetArrayFromImage(sitk.ReadImage(str(case.channels[s]))).astype(
            np.float32) for s in ("t1", "t1ce"))  # fmt: skip
        found = contrast_uptake(t1, t1ce, tissue)
        cells = []
        for code in names:
            if code in found:
                ratios[code].append(found[code][2])
                cells.append("{:.2f}, {:.2f}, **{:.2f}**".format(*found[code]))
            else:
                cells.append("-")
        if not args.summary:
            print(f"| {case.case_id} | " + " | ".join(cells) + " |", flush=True)
    print("\nT1ce / T1 ratio over cases (min / median / max, n):")
    for code, values in ratios.items():
        if values:
            print(f"  {names[code]}: {min(values):.2f} / {np.median(values):.2f} / "
                  f"{max(values):.2f} (n={len(values)})")  # fmt: skip


if __name__ == "__main__":
    main()
