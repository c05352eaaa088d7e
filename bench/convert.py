"""Converter speed against the floor of just reading the same files.

Generates a few BraTS-size cases (4 channels x 240 x 240 x 155 float32 + seg,
.nii.gz) in a temporary folder, then reports seconds per case for

* the read floor: ``sitk.ReadImage`` of the files the converter reads
  (default channels flair, t1ce, t2 + seg), and of all five files;
* ``convert_dataset`` with 1 worker and with ``--workers`` workers.

Wall seconds are what the target is about; CPU seconds of this process (all
threads; worker processes are not counted) are printed too, because on a
shared machine they move much less with the load than wall time does.

``--memory`` also converts 1 case and then all cases in a fresh process each
(one worker) and prints the peak resident memory of each: it must not grow
with the number of cases.

Run: ``python bench/convert.py [--cases 4] [--workers 2] [--profile] [--memory]``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from brainseg_d2.data.convert import ConvertOptions, convert_dataset, process_case, resolve_options
from brainseg_d2.data.sources import find_brats_cases

SHAPE = (155, 240, 240)  # (z, y, x)


def make_case(root: Path, index: int) -> None:
    """One synthetic BraTS 2021 case: smooth brain-like intensities, integer-valued float32."""
    rng = np.random.default_rng(index)
    case = f"BraTS2021_{index:05d}"
    folder = root / case
    folder.mkdir(parents=True, exist_ok=True)
    zz, yy, xx = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    brain = ((zz - 77) / 68.0) ** 2 + ((yy - 120) / 95.0) ** 2 + ((xx - 120) / 78.0) ** 2 < 1
    tumour = ((zz - 80) / 20.0) ** 2 + ((yy - 100) / 25.0) ** 2 + ((xx - 150) / 22.0) ** 2
    seg = np.zeros(SHAPE, np.uint8)
    seg[tumour < 1] = 2
    seg[tumour < 0.45] = 4
    seg[tumour < 0.2] = 1
    seg[~brain] = 0
    for k, name in enumerate(("flair", "t1", "t1ce", "t2")):
        field = ndimage.zoom(rng.normal(size=(8, 12, 12)), (155 / 8, 20, 20), order=1)
        values = 400 + 60 * field + rng.normal(0, 25, SHAPE) + 150 * (seg > 0) * (k % 2 * 2 - 1)
        array = np.where(brain, np.maximum(np.rint(values), 1), 0).astype(np.float32)
        _write(array, folder / f"{case}_{name}.nii.gz")
    _write(seg, folder / f"{case}_seg.nii.gz")


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # as BraTS files are stored
    sitk.WriteImage(image, str(path), useCompression=True)


def read_floor(cases, channels) -> float:
    """Seconds to read the given channels + seg of every case with SimpleITK."""
    start = time.perf_counter()
    for case in cases:
        for c in channels:
            sitk.ReadImage(case.channels[c])
        sitk.ReadImage(case.mask)
    return time.perf_counter() - start


_PEAK_RSS = """
import resource, sys
from brainseg_d2.data.convert import convert_dataset
from brainseg_d2.data.sources import find_brats_cases
cases = find_brats_cases(sys.argv[1])[: int(sys.argv[2])]
convert_dataset(cases, sys.argv[3], progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mib(data: Path, n_cases: int, out: Path) -> float:
    """Peak resident memory (MiB) of a fresh process converting ``n_cases`` with one worker."""
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, str(data), str(n_cases), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile one case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak memory, 1 case vs all")
    parser.add_argument("--data", type=Path, help="keep/reuse generated cases in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = args.data or root / "in"
        t0 = time.perf_counter()
        for i in range(args.cases):
            if not (data / f"BraTS2021_{i:05d}").is_dir():
                make_case(data, i)
        print(f"{args.cases} cases ready in {time.perf_counter() - t0:.1f} s")
        cases = find_brats_cases(data)[: args.cases]
        used = ("flair", "t1ce", "t2")
        read_floor(cases, used)  # warm the page cache
        if args.profile:
            opts = resolve_options(cases, ConvertOptions())
            profiler = cProfile.Profile()
            profiler.runcall(process_case, cases[0], "val", opts, str(root / "prof"), "k")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        # Interleaved repeats, best of each: other load on the machine only adds time.
        rows: dict[str, list[float]] = {"floor": [], "floor_all": [], "w1": [], "wN": []}
        cpu: dict[str, list[float]] = {"floor": [], "w1": []}

        def timed(key: str, fn) -> None:
            wall, proc = time.perf_counter(), time.process_time()
            fn()
            rows[key].append((time.perf_counter() - wall) / len(cases))
            if key in cpu:
                cpu[key].append((time.process_time() - proc) / len(cases))

        for rep in range(args.repeats):
            timed("floor", lambda: read_floor(cases, used))
            timed("floor_all", lambda: read_floor(cases, ("flair", "t1", "t1ce", "t2")))
            for key, workers in (("w1", 1), ("wN", args.workers)):
                out = root / f"out_{key}_{rep}"
                timed(key, partial(convert_dataset, cases, out, workers=workers, progress=False))
        best = {k: min(v) for k, v in rows.items()}
        best_cpu = {k: min(v) for k, v in cpu.items()}
        print(f"cases: {len(cases)}, repeats: {args.repeats} (best of each reported)")
        print(
            f"read floor (flair, t1ce, t2, seg): {best['floor']:.3f} s/case  "
            f"(cpu {best_cpu['floor']:.3f})"
        )
        print(f"read floor (all 5 files):          {best['floor_all']:.3f} s/case")
        for key, workers in (("w1", 1), ("wN", args.workers)):
            extra = ""
            if key in best_cpu:
                extra = f"  (cpu {best_cpu[key]:.3f}, {best_cpu[key] / best_cpu['floor']:.2f}x)"
            print(
                f"convert, --workers {workers}:             {best[key]:.3f} s/case  "
                f"{best[key] / best['floor']:.2f}x floor{extra}"
            )
        if args.memory:
            for n in (1, len(cases)):
                rss = peak_rss_mib(data, n, root / f"mem_{n}")
                print(f"peak memory, {n} case(s), --workers 1: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
