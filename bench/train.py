#!/usr/bin/env python
"""Seconds per iteration: the plugin's Trainer vs a stock DefaultTrainer.

Same converted phantom data, same model config, same process; the two trainers
alternate in rounds so that drifting machine load hits both alike. The plugin's
cost is its mapper (MRI augmentations, RLE decoding) and its hooks.

    .venv/bin/python bench/train.py [--rounds 3] [--iters 20] [--config CFG]

Prints per-round medians and the overhead ratio (target: <= 1.03).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from detectron2.engine import DefaultTrainer, HookBase
from detectron2.utils.logger import setup_logger

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.convert import ConvertOptions, convert_dataset
from brainseg_d2.data.datasets import register_brainseg_dataset
from brainseg_d2.data.phantom import generate_dataset
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]


class _StepTimer(HookBase):
    """Wall time of each full iteration (data wait + step + other hooks)."""

    def __init__(self, skip: int):
        self.skip, self.times, self._t = skip, [], None

    def before_step(self):
        self._t = time.perf_counter()

    def after_step(self):
        # Registered last, so this includes every other hook's after_step.
        if self.trainer.iter - self.trainer.start_iter >= self.skip:
            self.times.append(time.perf_counter() - self._t)


def _run(trainer_cls, cfg, skip: int) -> float:
    torch.manual_seed(0)
    trainer = trainer_cls(cfg)
    timer = _StepTimer(skip)
    trainer.register_hooks([timer])
    trainer.resume_or_load(resume=False)
    trainer.train()
    return statistics.median(timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--config", default=str(ROOT / "configs/phantom/mask_rcnn_R_18_FPN_cpu_bs4_800.yaml")
    )
    parser.add_argument("--spacing", type=float, default=1.5, help="phantom voxel size (mm)")
    args = parser.parse_args()
    setup_logger(name="bench")

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    generate_dataset(work / "cases", 4, seed=0, spacing=args.spacing, p_empty=0.0)
    convert_dataset(find_brats_cases(work / "cases"), work / "phantom",
                    ConvertOptions(split=(1.0, 0.0, 0.0)), progress=False)
    register_brainseg_dataset(work / "phantom", name="bench_phantom")

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(args.config)
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('bench_phantom_train',)", "DATASETS.TEST", "()",
        "SOLVER.MAX_ITER", str(args.warmup + args.iters), "SOLVER.CHECKPOINT_PERIOD", "100000",
        "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(work / "out"),
    ])
    cfg.freeze()

    results = {"DefaultTrainer": [], "brainseg Trainer": []}
    for r in range(args.rounds):
        for name, cls in (("DefaultTrainer", DefaultTrainer), ("brainseg Trainer", Trainer)):
            s = _run(cls, cfg, args.warmup)
            results[name].append(s)
            print(f"round {r}: {name:<17} {s:.4f} s/iter")
    base = statistics.median(results["DefaultTrainer"])
    ours = statistics.median(results["brainseg Trainer"])
    print(f"\nconfig {Path(args.config).name}, threads {torch.get_num_threads()}")
    print(f"DefaultTrainer   {base:.4f} s/iter (median of {args.rounds} rounds)")
    print(f"brainseg Trainer {ours:.4f} s/iter")
    print(f"overhead ratio   {ours / base:.3f} (target <= 1.03)")


if __name__ == "__main__":
    main()
