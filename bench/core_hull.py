#!/usr/bin/env python
"""How far a tumour core reaches past its enhancement, in labels and in predictions.

A glioma's tumour core (TC) is mostly its enhancing tumour (ET) and what that
encloses. ``BRAINSEG.POSTPROCESS.CORE_HULL_MARGIN`` acts on that: each predicted
core component that holds enhancement keeps what lies within the convex hull of
its enhancement grown by the margin (``core_within_enhancement``). This prints,
per labelled case, the core's volume, the enhancement's share of it and the share
of the labelled core that the same cut at margin 0 would remove: how much real
(or phantom) cores reach past their enhancement.

With ``--predictions`` (a folder of ``<case>_pred.nii.gz`` label maps in each
case's label convention, as ``brainseg-predict`` and the demo write them, or any
other tool's) it also prints each case's TC Dice as predicted and after the cut
at each margin, and the mean over cases. Margins are in voxels of the case's grid.

    .venv/bin/python bench/core_hull.py --cases /path/to/brats_cases
    .venv/bin/python bench/core_hull.py --cases <demo>/cases/heldout --predictions <folder>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MARGINS = (0, 1, 2, 4)


def read_regions(path: Path | str, convention: str | None) -> tuple[np.ndarray, tuple]:
    """bool ``(3, z, y, x)`` WT, TC, ET masks of a label map, and its spacing (zyx, mm)."""
    from brainseg_d2.data.ground_truth import raw_labels_to_tissue, read_label_image
    from brainseg_d2.labels import get_target

    image, labels = read_label_image(path)
    tissue = raw_labels_to_tissue(labels, convention, str(path))
    return get_target("regions").masks_from_tissue(tissue), tuple(image.GetSpacing())[::-1]


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Volume Dice with the project's metrics (both empty = 1)."""
    from brainseg_d2.evaluation.metrics import confusion_counts, scores_from_counts

    return scores_from_counts(*confusion_counts(pred, ref), empty_score=1.0)["dice"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of labelled BraTS cases")
    p.add_argument("--predictions", type=Path, help="folder of <case>_pred.nii.gz label maps")
    args = p.parse_args()

    from brainseg_d2.data.sources import find_brats_cases
    from brainseg_d2.postprocessing import core_within_enhancement

    if args.predictions is not None and not args.predictions.is_dir():
        p.error(f"--predictions {args.predictions} is not a folder")
    try:
        cases = [case for case in find_brats_cases(args.cases) if case.mask is not None]
    except ValueError as exc:
        p.error(str(exc))
    if not cases:
        p.error(f"--cases {args.cases} holds no labelled case")

    if args.predictions is not None:
        missing = [c.case_id for c in cases
                   if not (args.predictions / f"{c.case_id}_pred.nii.gz").is_file()]  # fmt: skip
        if missing:
            p.error(f"--predictions {args.predictions} has no <case>_pred.nii.gz for {missing}")
    head = "| case | TC ml | ET / TC | TC outside the ET hull |"
    if args.predictions is not None:
        head += " TC Dice as predicted | " + " | ".join(f"margin {m}" for m in MARGINS) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows = []
    for case in cases:
        (_, tc, et), spacing = read_regions(case.mask, case.label_convention)
        ml = float(tc.sum() * np.prod(spacing) / 1000.0)
        outside = 1.0 - core_within_enhancement(tc, et, 0).sum() / max(int(tc.sum()), 1)
        cells = [f"{ml:.1f}", f"{et.sum() / max(int(tc.sum()), 1):.2f}", f"{outside:.3f}"]
        if args.predictions is not None:
            path = args.predictions / f"{case.case_id}_pred.nii.gz"
            (_, pred_tc, pred_et), _ = read_regions(path, case.label_convention)
            if pred_tc.shape != tc.shape:
                print(f"error: {path} is {pred_tc.shape}, its label map {tc.shape}",
                      file=sys.stderr)  # fmt: skip
                return 1
            scores = [dice(pred_tc, tc)]
            scores += [dice(core_within_enhancement(pred_tc, pred_et, m), tc) for m in MARGINS]
            rows.append(scores)
            cells += [f"{s:.3f}" for s in scores]
        print(f"| {case.case_id} | " + " | ".join(cells) + " |", flush=True)
    if rows:
        means = np.mean(rows, axis=0)
        print(f"| mean ({len(rows)}) | | | | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
