#!/usr/bin/env python
"""Which sequences of a set of cases were acquired with thick slices.

A sequence acquired as 2D slices several millimetres thick and resampled to a
fine grid (as BraTS volumes are) keeps little detail across the slices, while a
3D acquisition keeps about the same detail along every axis. For every case and
sequence this prints the detail along each array axis (z, y, x): the mean
absolute second difference of the signal between brain voxels, over the brain's
mean signal; and its smallest over its largest axis ("sharpness ratio": near 1
for a 3D acquisition, well below it across thick slices). A sequence counts as
thick-sliced below a ratio of 0.5. The summary gives, per sequence, how many
cases are, so real scans and phantom cases can be compared.

    .venv/bin/python bench/acquisition.py --cases /path/to/brats_cases
    .venv/bin/python bench/acquisition.py --cases output/demo/cases/heldout --summary
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from brainseg_d2.structures.dataset import BRATS_CHANNELS as SEQUENCES

THICK_BELOW = 0.5  # sharpness ratio under which a sequence counts as thick-sliced


def detail_per_axis(image: np.ndarray, brain: np.ndarray) -> tuple[float, float, float]:
    """Mean |second difference| along z, y and x between brain voxels, over the brain mean."""
    mean = float(image[brain].mean())
    out = []
    for axis in range(3):
        inner = [slice(None)] * 3
        inner[axis] = slice(1, -1)
        second = np.abs(np.diff(image, 2, axis=axis))
        # the voxel and both neighbours along the axis lie in the brain
        keep = brain[tuple(inner)].copy()
        for shift in (slice(None, -2), slice(2, None)):
            side = [slice(None)] * 3
            side[axis] = shift
            keep &= brain[tuple(side)]
        out.append(float(second[keep].mean()) / mean)
    return tuple(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of BraTS-layout case folders")
    p.add_argument("--summary", action="store_true", help="only the count per sequence")
    args = p.parse_args()

    import SimpleITK as sitk

    from brainseg_d2.data.sources import find_brats_cases

    try:
        cases = find_brats_cases(args.cases)
    except ValueError as exc:
        p.error(str(exc))
    thick = {s: 0 for s in SEQUENCES}
    rows = []
    for case in cases:
        cells = []
        for seq in SEQUENCES:
            image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.channels[seq])))
            image = image.astype(np.float32)
            detail = detail_per_axis(image, image > 0)
            ratio = min(detail) / max(detail)
            thick[seq] += ratio < THICK_BELOW
            cells.append("{:.3f} / {:.3f} / {:.3f}, **{:.2f}**".format(*detail, ratio))
        rows.append(f"| {case.case_id} | " + " | ".join(cells) + " |")
    if not args.summary:
        print("| case | " + " | ".join(f"{s}: z / y / x, ratio" for s in SEQUENCES) + " |")
        print("|---" * (1 + len(SEQUENCES)) + "|")
        print("\n".join(rows))
    print(f"\nThick-sliced (sharpness ratio < {THICK_BELOW}), of {len(cases)} cases:")
    for seq in SEQUENCES:
        print(f"  {seq}: {thick[seq]}")


if __name__ == "__main__":
    main()
