#!/usr/bin/env python
"""The demo's recipe with a GPU-sized budget: how far does more training take it?

``make demo`` trains for 2050 iterations of 4 slices on 2 CPU cores. On those cores
three times the budget bought WT +0.05 (BENCHMARKS.md, "How far the recipe goes").
This bench asks the same question further out, on a GPU: the demo's own stages
(:mod:`brainseg_d2.pipeline`) with the same 60 + 12 phantom cases, seeds, config,
post-processing tuning and held-out scoring, but training for a wall-clock budget:

1. data: the demo's phantom cases and conversion, with ``--workers`` processes
   (the data is the same for any number);
2. probe: ``--probe-iters`` iterations at ``--batch`` slices, timed from the
   iteration after the first third to the last (a hook's wall clock, so data
   loading and the instance branch's every-third iterations are included);
3. train: ``SOLVER.MAX_ITER`` = ``--budget-s`` / (seconds per iteration), the
   learning-rate step at 85 % of it as in the demo's config, ``--lr`` (default: the
   config's rate times sqrt(batch / 4), the demo's batch being 4);
4. tune, evaluate and the FLAIR baseline, exactly as the demo does.

``<output>/summary.json`` holds the demo's figures plus the schedule and its timing.

    python bench/gpu_demo_budget.py --output /tmp/gdb                    # on a GPU machine
    python bench/gpu_demo_budget.py --output /tmp/gdb_smoke --smoke      # tiny CPU run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from detectron2.engine import HookBase

REPO = Path(__file__).resolve().parents[1]

DEMO_BATCH = 4  # SOLVER.IMS_PER_BATCH of the demo's config
DEMO_ITERS = 2050


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, required=True, help="work folder (must not exist)")
    p.add_argument("--budget-s", type=float, default=300.0, help="training wall-clock seconds")
    p.add_argument("--batch", type=int, default=16, help="SOLVER.IMS_PER_BATCH")
    p.add_argument("--lr", type=float, default=None, help="SOLVER.BASE_LR (default: scaled)")
    p.add_argument("--probe-iters", type=int, default=60)
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 16),
                   help="processes for the phantom and conversion; loader workers")  # fmt: skip
    p.add_argument("--smoke", action="store_true",
                   help="a CPU check: 4 + 2 cases at 3 mm, a 20 s budget")  # fmt: skip
    args = p.parse_args(argv)
    if args.smoke:
        args.budget_s, args.batch, args.probe_iters, args.device = 20.0, 2, 6, "cpu"
        args.workers = min(args.workers, 2)
    return args


class Clock(HookBase):
    """Wall seconds per iteration, from the end of the first third of training to the last."""

    def __init__(self) -> None:
        self.t0 = self.i0 = None
        self.s_per_iter = float("nan")

    def after_step(self) -> None:
        it = self.trainer.iter
        if self.t0 is None and it >= self.trainer.max_iter // 3:
            self.t0, self.i0 = time.perf_counter(), it
        elif it == self.trainer.max_iter - 1 and self.t0 is not None and it > self.i0:
            self.s_per_iter = (time.perf_counter() - self.t0) / (it - self.i0)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.output.exists():
        print(f"error: {args.output} exists; choose a new --output", file=sys.stderr)
        return 2
    import torch
    from detectron2.utils.logger import setup_logger

    from brainseg_d2 import pipeline

    setup_logger(name="brainseg_d2")
    logging.getLogger("brainseg_d2").setLevel(logging.INFO)
    t_all = time.perf_counter()
    opts = pipeline.DemoOptions(config=REPO / pipeline.DEMO_CONFIG, output=args.output,
                                workers=args.workers)  # fmt: skip
    if args.smoke:
        opts.train_cases, opts.heldout_cases, opts.spacing = 4, 2, 3.0
    cfg0 = pipeline.build_cfg(opts)
    lr = args.lr or cfg0.SOLVER.BASE_LR * math.sqrt(args.batch / DEMO_BATCH)
    common = [
        "MODEL.DEVICE", args.device, "SOLVER.IMS_PER_BATCH", str(args.batch),
        "SOLVER.BASE_LR", repr(lr), "SOLVER.CHECKPOINT_PERIOD", "10000000",
        "DATALOADER.NUM_WORKERS", str(min(args.workers, 12)),
        # bf16 autocast wins on this CPU but not on an H200 (BENCHMARKS.md, GPU section).
        "BRAINSEG.SOLVER.BF16", str(args.device == "cpu"),
    ]  # fmt: skip
    summary: dict = {
        "device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__, "cpus": os.cpu_count(), "batch": args.batch, "lr": lr,
    }  # fmt: skip
    timings = {}

    def stage(name, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        timings[name] = round(time.perf_counter() - t, 1)
        print(f"stage {name}: {timings[name]} s", flush=True)
        return out

    pipeline.prepare_output(opts.output)
    stage("data", pipeline.make_data, opts)

    probe = dataclasses.replace(opts, output=opts.output / "probe", opts=[
        *common, "SOLVER.MAX_ITER", str(args.probe_iters), "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", str(args.probe_iters),
    ])  # fmt: skip
    clock = Clock()
    stage("probe", pipeline.train, probe, [clock])
    iters = max(int(args.budget_s / clock.s_per_iter), 10)
    seen = iters * args.batch / (DEMO_ITERS * DEMO_BATCH)
    summary.update(probe_s_per_iter=round(clock.s_per_iter, 4), max_iter=iters,
                   samples_vs_demo=round(seen, 2))  # fmt: skip
    print(f"probe: {clock.s_per_iter:.4f} s/iter -> {iters} iterations", flush=True)

    opts.opts = [*common, "SOLVER.MAX_ITER", str(iters), "SOLVER.STEPS", f"({int(iters * 0.85)},)"]
    clock = Clock()
    model = stage("train", pipeline.train, opts, [clock])
    summary["train_s_per_iter"] = round(clock.s_per_iter, 4)
    tuned = stage("tune", pipeline.tune, opts, model)
    results = stage("evaluate", pipeline.evaluate, opts, model)
    rows = stage("baseline", pipeline.flair_baseline, opts)

    summary["volume_dice"] = {k: round(v, 4) for k, v in results.items()
                              if k.startswith("volume_dice_") and "present" not in k}  # fmt: skip
    summary["lesion_dice"] = {k: round(v, 4) for k, v in results.items()
                              if k.startswith("lesion_dice_")}  # fmt: skip
    wt = [r["dice"] for r in rows if r["name"] == "WT" and r["group"] == "region"
          and r["variant"] == "raw"]  # fmt: skip
    summary["baseline_flair_wt_raw"] = round(sum(wt) / len(wt), 4)
    summary["postprocess"] = tuned.to_cfg_dict() if tuned else None
    summary["timings_s"] = timings
    summary["total_s"] = round(time.perf_counter() - t_all, 1)
    (opts.output / "summary.json").write_text(json.dumps(summary, indent=1, default=list))
    print(json.dumps(summary, indent=1, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
