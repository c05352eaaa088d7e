"""Benchmark: per-volume Dice + HD95, brainseg_d2 metrics vs MONAI, on CPU.

Synthetic BraTS-size volumes (155 x 240 x 240, axis order (S, H, W)) hold three
nested regions (WT ⊇ TC ⊇ ET) built from smoothed random blobs; the prediction is
the ground truth shifted, with noisy borders and a spurious blob. Both
implementations score the same masks; the script checks that they agree and
prints the time per volume (3 regions) and the ratio.

Run (needs MONAI and torch, e.g. the project's .venv)::

    .venv/bin/python bench/metrics.py [--volumes 6] [--repeats 3] [--spacing 1 1 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
from scipy import ndimage

from brainseg_d2.evaluation.distances import hausdorff_distance_95
from brainseg_d2.evaluation.metrics import dice

SHAPE = (155, 240, 240)


def _blob(rng: np.random.Generator, shape, centre, radii, roughness: float) -> np.ndarray:
    """Ellipsoid with a bumpy surface: normalised radius + smoothed noise < 1."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4)
    noise /= noise.std() + 1e-8
    return np.sqrt(r2) + roughness * noise < 1.0


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pred, gt), each bool (3, S, H, W) with regions WT, TC, ET."""
    rng = np.random.default_rng(seed)
    centre = np.array(SHAPE) / 2 + rng.uniform(-25, 25, size=3)
    radii = rng.uniform(18, 35, size=3)
    wt = _blob(rng, SHAPE, centre, radii, 0.12)
    tc = wt & _blob(rng, SHAPE, centre, radii * 0.6, 0.15)
    et = tc & ~ndimage.binary_erosion(tc, iterations=3)  # enhancing rim
    gt = np.stack([wt, tc, et])
    shift = tuple(int(s) for s in rng.integers(-2, 3, size=3))
    pred = np.roll(gt, shift, axis=(1, 2, 3))
    border = ndimage.gaussian_filter(rng.standard_normal(pred.shape[1:]).astype(np.float32), 1.5)
    for c in range(3):
        edge = pred[c] ^ ndimage.binary_erosion(pred[c])
        pred[c] ^= edge & (border > 0.3)  # ragged surface
    spurious = _blob(rng, SHAPE, centre + np.array([0, 70, -60]), (4, 6, 5), 0.1)
    pred[0] |= spurious
    return pred, gt


def _time(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="best of N per volume")
    parser.add_argument("--spacing", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    args = parser.parse_args()

    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    # MONAI warns about its own internal use of a deprecated argument.
    warnings.filterwarnings("ignore", category=FutureWarning, module="monai")

    spacing = tuple(args.spacing)

    def ours(pred, gt):
        return [(dice(p, g), hausdorff_distance_95(p, g, spacing)) for p, g in zip(pred, gt)]

    def monai(y_pred, y):
        d = compute_dice(y_pred, y, include_background=True)
        hd = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=spacing
        )
        return list(zip(d[0].tolist(), hd[0].tolist()))

    print(
        f"{args.volumes} volumes {SHAPE} x 3 regions, spacing {spacing}, "
        f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    )
    t_ours, t_monai, worst = [], [], (0.0, 0.0)
    for seed in range(args.volumes):
        pred, gt = make_case(seed)
        # MONAI's inputs are built outside the timing: a pipeline holds tensors already.
        y_pred = torch.from_numpy(pred[None].astype(np.float32))
        y = torch.from_numpy(gt[None].astype(np.float32))
        a, res_ours = _time(lambda: ours(pred, gt), args.repeats)  # noqa: B023
        b, res_monai = _time(lambda: monai(y_pred, y), args.repeats)  # noqa: B023
        t_ours.append(a)
        t_monai.append(b)
        for (d1, h1), (d2, h2) in zip(res_ours, res_monai):
            worst = (max(worst[0], abs(d1 - d2)), max(worst[1], abs(h1 - h2)))
        voxels = [int(m.sum()) for m in gt]
        hd = ", ".join(f"{h:.2f}" for _, h in res_ours)
        print(
            f"volume {seed}: gt voxels WT/TC/ET {voxels}, HD95 {hd} mm | "
            f"ours {a * 1000:7.1f} ms  monai {b * 1000:7.1f} ms"
        )
    med_ours, med_monai = statistics.median(t_ours), statistics.median(t_monai)
    print(f"max |dice diff| {worst[0]:.2e}, max |HD95 diff| {worst[1]:.2e} mm")
    print(
        f"median per volume: ours {med_ours * 1000:.1f} ms, monai {med_monai * 1000:.1f} ms, "
        f"monai/ours = {med_monai / med_ours:.2f}x"
    )


if __name__ == "__main__":
    main()
