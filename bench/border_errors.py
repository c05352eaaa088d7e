#!/usr/bin/env python
"""Where a segmentation's errors lie: at the region's border or away from it.

For each case and BraTS region this prints the share of the reference that the
prediction misses, split by depth inside the reference (distance to its
outside, in mm), and the predicted voxels outside the reference, split by
distance to it. A model whose outline sits a little inside the true one misses
most of the outer shell and little deeper; one that misses whole lesions or
strands misses at every depth. The summary pools the voxels of every case.

    .venv/bin/python bench/border_errors.py --pred output/demo/predictions \\
        --ref output/demo/cases/heldout --label-convention brats2021
    .venv/bin/python bench/border_errors.py --pred <predictions> --ref /path/to/brats_cases

Predictions and references are paired by case id as ``brainseg-evaluate`` pairs
them, and must share a grid. The label convention is read from each
reference's name unless ``--label-convention`` names one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

SHELLS_MM = (1.5, 3.0, 6.0)  # shell edges: 0-1.5, 1.5-3, 3-6 and over 6 mm


def shell_index(distance: np.ndarray) -> np.ndarray:
    """0, 1, 2 or 3: which shell (:data:`SHELLS_MM`) each distance falls in."""
    return np.searchsorted(np.asarray(SHELLS_MM), distance, side="left")


def border_counts(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, float, float]
) -> dict[str, np.ndarray]:
    """Per shell: reference voxels, those missed, and false positives.

    Args:
        pred, ref: bool (z, y, x) masks of one region.
        spacing: voxel size (z, y, x) in mm.

    Returns:
        ``{"ref": ..., "missed": ..., "false_pos": ...}``, each int (4,) by shell;
        the first two by depth inside ``ref``, the last by distance outside it.
    """
    n = len(SHELLS_MM) + 1
    out = {k: np.zeros(n, np.int64) for k in ("ref", "missed", "false_pos")}
    if ref.any():
        depth = ndimage.distance_transform_edt(ref, sampling=spacing)[ref]
        shells = shell_index(depth)
        out["ref"] = np.bincount(shells, minlength=n)
        out["missed"] = np.bincount(shells[~pred[ref]], minlength=n)
    extra = pred & ~ref
    if extra.any():
        if ref.any():
            dist = ndimage.distance_transform_edt(~ref, sampling=spacing)[extra]
            out["false_pos"] = np.bincount(shell_index(dist), minlength=n)
        else:  # no reference at all: every false positive is far from it
            out["false_pos"][-1] = int(extra.sum())
    return out


def shell_names() -> list[str]:
    edges = (0.0, *SHELLS_MM)
    return [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:])] + [f">{SHELLS_MM[-1]:g}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pred", type=Path, required=True, help="folder of predicted label maps")
    p.add_argument("--ref", type=Path, required=True, help="folder of reference label maps")
    p.add_argument("--label-convention", help="convention of both (default: from the names)")
    args = p.parse_args()

    from brainseg_d2.data.ground_truth import read_label_image
    from brainseg_d2.data.volume_io import VolumeError
    from brainseg_d2.evaluation.label_map_files import EvaluationError, match_cases
    from brainseg_d2.labels import CONVENTIONS, detect_convention

    if args.label_convention is not None and args.label_convention not in CONVENTIONS:
        p.error(
            f"unknown --label-convention {args.label_convention!r} (one of {sorted(CONVENTIONS)})"
        )
    try:
        pairs, _ = match_cases(args.pred, args.ref)
    except EvaluationError as exc:
        p.error(str(exc))

    names = shell_names()
    print(
        "| case | region | ref ml | missed | missed by depth "
        + " / ".join(names)
        + " mm | false positives (ml) by distance "
        + " / ".join(names)
        + " mm |"
    )
    print("|---|---|---|---|---|---|")
    pooled: dict[str, dict[str, np.ndarray]] = {}
    for pair in pairs:
        if pair.pred is None:
            print(f"| {pair.case_id} | no prediction |  |  |  |  |")
            continue
        name = args.label_convention or detect_convention(pair.ref.name)
        if name is None:
            p.error(f"cannot tell the label convention of {pair.ref}; pass --label-convention")
        convention = CONVENTIONS[name]
        try:
            ref_image, ref_labels = read_label_image(pair.ref)
            pred_image, pred_labels = read_label_image(pair.pred)
        except VolumeError as exc:
            p.error(str(exc))
        if pred_labels.shape != ref_labels.shape:
            p.error(f"{pair.pred} and {pair.ref} differ in size")
        spacing = tuple(float(s) for s in reversed(ref_image.GetSpacing()))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        for group, region, values in convention.evaluation_names():
            if group != "region":
                continue
            counts = border_counts(
                np.isin(pred_labels, values), np.isin(ref_labels, values), spacing
            )
            if not counts["ref"].any() and not counts["false_pos"].any():
                continue  # a region neither map has (RC of a pre-operative case)
            total = pooled.setdefault(region, {k: np.zeros_like(v) for k, v in counts.items()})
            for k, v in counts.items():
                total[k] += v
            ref_n = counts["ref"].sum()
            by_depth = " / ".join(
                f"{m / r:.2f}" if r else "-" for m, r in zip(counts["missed"], counts["ref"])
            )
            fp = " / ".join(f"{v * voxel_ml:.1f}" for v in counts["false_pos"])
            missed = f"{counts['missed'].sum() / ref_n:.2f}" if ref_n else "-"
            print(
                f"| {pair.case_id} | {region} | {ref_n * voxel_ml:.1f} | {missed} | "
                f"{by_depth} | {fp} |"
            )
    print("\nAll cases pooled: share of the reference missed by depth, false positives by distance")
    for region, c in pooled.items():
        by_depth = ", ".join(
            f"{n} mm {m / r:.2f}" for n, m, r in zip(names, c["missed"], c["ref"]) if r
        )
        fp_share = c["false_pos"] / max(int(c["false_pos"].sum()), 1)
        fp = ", ".join(f"{n} mm {s:.2f}" for n, s in zip(names, fp_share))
        print(f"  {region}: missed {by_depth}; false positives {fp}")


if __name__ == "__main__":
    main()
