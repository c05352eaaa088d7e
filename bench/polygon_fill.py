#!/usr/bin/env python
"""Filling VIA regions: the converter's scanline fill against OpenCV's fillPoly, same polygons.

Random star-shaped (simple) polygons of 20, 100 and 400 vertices on a 512 x 512
image, in one process, rounds interleaved. For each size: milliseconds per
polygon of ``brainseg_d2.data.sources.slices.fill_polygon`` (pixel centres, non-zero
winding rule: what VIA's canvas shows) and of ``cv2.fillPoly`` on rounded vertices
(what the converter used before: every pixel the outline touches, even-odd rule),
and how many pixels each differs from matplotlib's centre test
(``Path.contains_points``, the same rule as the scanline fill on simple polygons).

    .venv/bin/python bench/polygon_fill.py
    .venv/bin/python bench/polygon_fill.py --rounds 5 --polygons 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
from matplotlib.path import Path as MplPath

from brainseg_d2.data.sources.slices import fill_polygon

SHAPE = (512, 512)
SIZES = ((20, 20.0), (100, 60.0), (400, 120.0))  # vertices, mean radius in pixels


def star(rng: np.random.Generator, vertices: int, radius: float) -> tuple[np.ndarray, ...]:
    """A simple polygon: sorted angles, radii within 20 % of ``radius``, centred."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * (1 + 0.2 * rng.uniform(-1, 1, vertices))
    return 256 + radii * np.cos(angles), 256 + radii * np.sin(angles)


def fill_opencv(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    cv2.fillPoly(mask, [np.rint(np.stack([xs, ys], 1)).astype(np.int32)], 1)
    return mask.astype(bool)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--polygons", type=int, default=10, help="polygons per size and round")
    args = p.parse_args()
    if args.rounds < 1 or args.polygons < 1:
        p.error("--rounds and --polygons must be >= 1")
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    fills = {"scanline (fill_polygon)": lambda xs, ys: fill_polygon(xs, ys, SHAPE),
             "cv2.fillPoly": fill_opencv}  # fmt: skip
    print("| vertices | fill | ms per polygon by round | median | pixels off the centre test |")
    print("|---|---|---|---|---|")
    for vertices, radius in SIZES:
        polygons = [star(np.random.default_rng(k), vertices, radius) for k in range(args.polygons)]
        times = {name: [] for name in fills}
        for _ in range(args.rounds):
            for name, fill in fills.items():
                start = time.perf_counter()
                for xs, ys in polygons:
                    fill(xs, ys)
                times[name].append(1000 * (time.perf_counter() - start) / len(polygons))
        for name, fill in fills.items():
            off = sum(int((fill(xs, ys) != MplPath(np.stack([xs, ys], 1)).contains_points(
                centres).reshape(SHAPE)).sum()) for xs, ys in polygons)  # fmt: skip
            by_round = ", ".join(f"{t:.2f}" for t in times[name])
            print(f"| {vertices} | {name} | {by_round} | {statistics.median(times[name]):.2f} "
                  f"| {off} over {len(polygons)} polygons |")


if __name__ == "__main__":
    main()
