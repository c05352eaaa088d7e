#!/usr/bin/env python
"""How far voxel intensities alone separate the tumour regions, within and across cases.

Every voxel of the brain gets 12 features: each of the four sequences, z-scored
over the case's brain, raw and Gaussian-smoothed (sigma 1 and 3 voxels). A
gradient-boosted tree classifier (scikit-learn's ``HistGradientBoostingClassifier``;
scikit-learn comes with nilearn) predicts the BraTS tissue label of each voxel, and
WT, TC and ET are derived from it. Two fits:

* per case ("oracle"): fit on a sample of the case's own voxels and labels, scored
  on the same case. It knows that case's tissue intensities, so it bounds what a
  classifier of these features could do if it were calibrated to each case;
* across cases: fit once on the training cases, scored on the held-out ones, as a
  model must.

The gap between the two is the part of the task that is per-case calibration
(the phantom draws every tissue's intensity per case); the oracle's shortfall
from 1 is what these local features cannot tell apart even then.

    .venv/bin/python bench/phantom_separability.py --cases output/demo/cases --train-cases 16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SEQUENCES = ("flair", "t1", "t1ce", "t2")
REGIONS = ("WT", "TC", "ET")


def case_features(
    case, clip: tuple[float, float] | None = None, norm: str = "zscore"
) -> tuple[np.ndarray, np.ndarray]:
    """``(V, 12)`` float32 features and ``(V,)`` tissue codes of the case's brain voxels.

    ``clip``: brain percentiles (low, high) each sequence is clipped to first, as
    the converter does before it scales to 8 bits (``data/preprocess.py``).
    ``norm``: how each sequence is put on a common scale across cases: ``zscore``
    (the brain's mean and SD), ``range`` (the brain's 0.5th and 99.5th percentiles
    to 0 and 1, the converter's scale), ``median`` (the 0.5th percentile to 0
    and the brain's median to 1) or ``robust`` (the brain's median to 0, its
    interquartile range / 1.349, an SD for Gaussian values, as the unit: a
    z-score that a bright lesion's tail moves less).
    """
    import SimpleITK as sitk
    from scipy import ndimage

    from brainseg_d2.data.preprocess import robust_range
    from brainseg_d2.labels.conventions import get_convention, raw_to_tissue

    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(case.channels[s]))).astype(np.float32)
              for s in SEQUENCES]  # fmt: skip
    brain = np.any([image != 0 for image in images], axis=0)
    features = []
    for image in images:
        if clip is not None:
            low, high = robust_range(image[brain], *clip)
            image = np.where(brain, np.clip(image, low, high), 0).astype(np.float32)
        values = image[brain]
        if norm == "zscore":
            low, scale = float(values.mean()), float(values.std())
        elif norm == "range":
            low, high = robust_range(values, 0.5, 99.5)
            scale = high - low
        elif norm == "median":
            low, scale = robust_range(values, 0.5, 50.0)
            scale -= low
        elif norm == "robust":
            q1, low, q3 = np.percentile(values, [25.0, 50.0, 75.0])
            scale = float(q3 - q1) / 1.349
        else:
            raise ValueError(f"norm must be zscore, range, median or robust, got {norm!r}")
        z = (image - low) / max(scale, 1e-6)
        features += [z, ndimage.gaussian_filter(z, 1.0), ndimage.gaussian_filter(z, 3.0)]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(case.mask)))
    tissue = raw_to_tissue(seg, get_convention(case.label_convention))
    return np.stack([f[brain] for f in features], axis=1), tissue[brain].astype(np.int16)


def region_masks(tissue: np.ndarray) -> dict[str, np.ndarray]:
    from brainseg_d2.labels import TISSUE_ED, TISSUE_ET, TISSUE_NCR

    return {
        "WT": np.isin(tissue, (TISSUE_NCR, TISSUE_ED, TISSUE_ET)),
        "TC": np.isin(tissue, (TISSUE_NCR, TISSUE_ET)),
        "ET": tissue == TISSUE_ET,
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def fit(x: np.ndarray, y: np.ndarray, samples: int, seed: int):
    """Boosted trees on at most ``samples`` voxels per tissue, weighted back to its frequency.

    Rare tissues (a 1 ml lesion is a few hundred voxels) are kept whole instead of
    being thinned out with the background; each sampled voxel's weight is the
    inverse of its tissue's sampling rate, so the fit sees the true class
    frequencies. Tissues with fewer than 10 voxels are left out.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    picks, weights = [], []
    for code in np.unique(y):
        where = np.flatnonzero(y == code)
        if where.size < 10:
            continue
        pick = rng.choice(where, size=min(samples, where.size), replace=False)
        picks.append(pick)
        weights.append(np.full(pick.size, where.size / pick.size))
    pick = np.concatenate(picks)
    model = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    return model.fit(x[pick], y[pick], sample_weight=np.concatenate(weights))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=Path, required=True,
                   help="the demo's cases folder (with train/ and heldout/)")  # fmt: skip
    p.add_argument("--train-cases", type=int, default=16, help="training cases of the cross fit")
    p.add_argument("--samples", type=int, default=100_000,
                   help="most voxels per tissue in a fit")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clip", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="clip each sequence to these brain percentiles first (the "
                        "converter's are 0.5 99.5)")  # fmt: skip
    p.add_argument("--norm", choices=("zscore", "range", "median", "robust"), default="zscore",
                   help="per-case scale of each sequence (see case_features)")  # fmt: skip
    args = p.parse_args()

    from brainseg_d2.data.sources import find_brats_cases

    train = find_brats_cases(args.cases / "train")[: args.train_cases]
    data = [case_features(c, args.clip, args.norm) for c in train]
    cross = fit(np.concatenate([d[0] for d in data]), np.concatenate([d[1] for d in data]),
                3 * args.samples, args.seed)  # fmt: skip
    scores: dict[str, dict[str, list[float]]] = {"per case": {}, "across cases": {}}
    print("| case | per case WT / TC / ET | across cases WT / TC / ET |\n|---|---|---|")
    for case in find_brats_cases(args.cases / "heldout"):
        x, y = case_features(case, args.clip, args.norm)
        truth = region_masks(y)
        cells = []
        for name, model in (("per case", fit(x, y, args.samples, args.seed)),
                            ("across cases", cross)):  # fmt: skip
            pred = region_masks(model.predict(x))
            values = []
            for r in REGIONS:
                if truth[r].any():
                    scores[name].setdefault(r, []).append(dice(pred[r], truth[r]))
                    values.append(f"{scores[name][r][-1]:.3f}")
                else:
                    values.append("-")
            cells.append(" / ".join(values))
        print(f"| {case.case_id} | " + " | ".join(cells) + " |", flush=True)
    print("\nMean Dice over the held-out cases that have the region:")
    for name, by_region in scores.items():
        parts = [f"{r} {np.mean(v):.3f} (n={len(v)})" for r, v in by_region.items()]
        print(f"  {name}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
