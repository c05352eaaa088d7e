#!/usr/bin/env python
"""Wall time of the test suite in one process and in pytest-xdist workers, one after another.

Runs the same selection three ways in this script, so the ratios compare like with
like on one machine:

* ``one process``: ``-n 0`` (pytest-xdist loaded, no workers);
* ``N workers, all threads``: ``-n N`` with ``OMP_NUM_THREADS`` set to the core
  count, so every worker (and every subprocess a test starts) uses every core, as
  torch does by default;
* ``N workers, cores shared``: ``-n N`` with the suite's own set-up
  (``tests/conftest.py``: cores / N threads per worker), what ``make test`` runs.

    .venv/bin/python bench/test_workers.py                       # the whole suite
    .venv/bin/python bench/test_workers.py --workers 2 -- tests/engine tests/inference

Prints one line per run (wall seconds, ratio to one process, pytest's last line).
Every run must pass; a failure stops the script (exit 1) with a line naming the command.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {done.returncode}): {last}")
    return wall, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="xdist workers (default 2)")
    parser.add_argument("--dist", default="loadfile", help="xdist --dist mode (default loadfile)")
    parser.add_argument("tests", nargs="*", default=["tests"], help="pytest arguments")
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error(f"--workers must be >= 2, got {args.workers}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    base_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    parallel = ["-n", str(args.workers), "--dist", args.dist, *args.tests]
    runs = [
        ("one process", ["-n", "0", *args.tests], base_env),
        (f"{args.workers} workers, all threads", parallel,
         {**base_env, "OMP_NUM_THREADS": str(cores)}),
        (f"{args.workers} workers, cores shared", parallel, base_env),
    ]  # fmt: skip
    print(f"{cores} cores; pytest {' '.join(args.tests)}")
    baseline = None
    for name, pytest_args, env in runs:
        wall, last = _run(pytest_args, env)
        baseline = baseline or wall
        print(f"{name:28s} {wall:7.1f} s  x{wall / baseline:.2f}  ({last})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
