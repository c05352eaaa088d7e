#!/usr/bin/env python
"""How much of the phantom's labels the images can show: two checks on generated cases.

1. Resolution ceiling. Each case's region masks (WT, TC, ET) go through the
   acquisition model the phantom applies to its images (in-plane blur, thick
   slices along a random axis, ``phantom_render``), drawn from the default
   ``ContrastParams`` ranges (``draw_appearance``, ``acquire``), and are
   thresholded at 0.5. The Dice of that against the label is what a perfect
   reader of one degraded sequence would reach if blur and slice thickness
   were all that was lost.
2. Sub-region contrast. Per case and sequence, the mean signal of necrosis or
   non-enhancing core (label 1) and of enhancing tumour (label 3) minus the
   edema's mean, in units of the edema's standard deviation. Values within
   about 1-2 in every sequence mean that boundary is hard to see in that case.

    .venv/bin/python bench/phantom_ceiling.py --cases output/demo/cases/heldout
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def degrade(mask: np.ndarray, rng: np.random.Generator, params, spacing: float) -> np.ndarray:
    """A bool mask blurred and resliced as one freshly drawn T1ce sequence is, at 0.5."""
    from brainseg_d2.data.phantom_contrast import draw_appearance
    from brainseg_d2.data.phantom_render import acquire

    look = draw_appearance(rng, params)["t1ce"]
    return acquire(mask.astype(np.float32), look, spacing) >= 0.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of phantom case folders")
    p.add_argument("--draws", type=int, default=3, help="acquisition draws per case and region")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import SimpleITK as sitk

    from brainseg_d2.data.phantom_contrast import ContrastParams
    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.labels import TISSUE_ED, TISSUE_ET, TISSUE_NCR
    from brainseg_d2.labels.conventions import get_convention, raw_to_tissue

    rng = np.random.default_rng(args.seed)
    params = ContrastParams()
    ceiling: dict[str, list[float]] = {"WT": [], "TC": [], "ET": []}
    print("| case | NCR / ET / ED voxels | " + " | ".join(
        f"{s}: NCR, ET vs ED (ED SD)" for s in ("flair", "t1", "t1ce", "t2")) + " |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for case in find_brats_cases(args.cases):
        seg_image = sitk.ReadImage(str(case.mask))
        spacing = float(min(seg_image.GetSpacing()))
        tissue = raw_to_tissue(sitk.GetArrayFromImage(seg_image),
                               get_convention(case.label_convention))  # fmt: skip
        masks = {
            "WT": np.isin(tissue, (TISSUE_NCR, TISSUE_ED, TISSUE_ET)),
            "TC": np.isin(tissue, (TISSUE_NCR, TISSUE_ET)),
            "ET": tissue == TISSUE_ET,
        }
        for region, mask in masks.items():
            if mask.any():
                ceiling[region] += [dice(degrade(mask, rng, params, spacing), mask)
                                    for _ in range(args.draws)]  # fmt: skip
        cells = []
        for name in ("flair", "t1", "t1ce", "t2"):
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.channels[name])))
            ed = image[tissue == TISSUE_ED].astype(np.float64)
            parts = []
            for code in (TISSUE_NCR, TISSUE_ET):
                values = image[tissue == code]
                parts.append(f"{(values.mean() - ed.mean()) / ed.std():+.1f}"
                             if values.size and ed.size > 1 else "-")  # fmt: skip
            cells.append(", ".join(parts))
        codes = (TISSUE_NCR, TISSUE_ET, TISSUE_ED)
        counts = " / ".join(str(int((tissue == c).sum())) for c in codes)
        print(f"| {case.case_id} | {counts} | " + " | ".join(cells) + " |", flush=True)
    print("\nResolution ceiling (Dice of the degraded label, over cases with the region):")
    for region, values in ceiling.items():
        if values:
            print(f"  {region}: mean {np.mean(values):.3f}, min {np.min(values):.3f} "
                  f"({len(values)} draws)")  # fmt: skip


if __name__ == "__main__":
    main()
