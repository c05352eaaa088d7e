#!/usr/bin/env python
"""Optimizer step of the demo's model: Detectron2's clipped AdamW against the plugin's.

``BRAINSEG.SOLVER.OPTIMIZER AdamW`` with ``SOLVER.CLIP_GRADIENTS`` (per-parameter
norm clipping, as the phantom configs use) was Detectron2's
``maybe_add_gradient_clipping`` around ``torch.optim.AdamW``: one
``clip_grad_norm_`` call per parameter, then torch's per-tensor AdamW loop on CPU.
The plugin's (``engine/solver.py``) clips in multi-tensor operations and uses
torch's fused AdamW. Both step the same model's parameters with the same
gradients, in one process, rounds interleaved; the table gives milliseconds per
``step()`` (median over rounds) and the ratio to Detectron2's. The parameters
they reach are compared after the timed steps.

    .venv/bin/python bench/optimizer_step.py --rounds 5 --steps 20
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/phantom/mask_rcnn_R_18_FPN_cpu_bf16_adamw_slim_1500.yaml"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(CONFIG), help="model config")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    args = p.parse_args()

    from detectron2.modeling import build_model
    from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

    from brainseg_d2.config import setup_cfg
    from brainseg_d2.engine.solver import build_optimizer

    cfg = setup_cfg(args.config)
    torch.manual_seed(0)
    models = {"Detectron2 (clip per parameter, per-tensor AdamW)": build_model(cfg),
              "plugin (multi-tensor clip, fused AdamW)": build_model(cfg)}  # fmt: skip
    first, second = models.values()
    second.load_state_dict(first.state_dict())
    params = [p for p in first.parameters() if p.requires_grad]
    grads = [torch.randn_like(p) * 10 for p in params]  # large enough that clipping acts

    def d2_optimizer(model):
        solver = cfg.SOLVER
        groups = get_default_optimizer_params(
            model, base_lr=solver.BASE_LR, weight_decay_norm=solver.WEIGHT_DECAY_NORM,
            bias_lr_factor=solver.BIAS_LR_FACTOR, weight_decay_bias=solver.WEIGHT_DECAY_BIAS,
        )  # fmt: skip
        return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
            groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
        )

    optimizers = dict(zip(models, (d2_optimizer(first), build_optimizer(cfg, second))))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            opt = optimizers[name]
            trainable = [p for p in model.parameters() if p.requires_grad]
            start = time.perf_counter()
            for _ in range(args.steps):
                for p, g in zip(trainable, grads):
                    p.grad = g.clone()
                opt.step()
            times[name].append((time.perf_counter() - start) / args.steps)
    # the grad copies are in both timings alike; time them alone to report the step itself
    start = time.perf_counter()
    for _ in range(args.steps):
        copies = [g.clone() for g in grads]
    copy_s = (time.perf_counter() - start) / args.steps
    del copies
    worst = max(
        float((p - q).abs().max()) for p, q in zip(first.parameters(), second.parameters())
    )
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(params)} parameter tensors, "
          f"{sum(p.numel() for p in params) / 1e6:.1f} M values; config {args.config}")
    print("| optimizer | ms per step by round | median | speed-up |\n|---|---|---|---|")
    base = statistics.median(times[next(iter(models))]) - copy_s
    for name, values in times.items():
        step = [1000 * (v - copy_s) for v in values]
        med = statistics.median(step)
        print(f"| {name} | {', '.join(f'{v:.1f}' for v in step)} | {med:.1f} | "
              f"{1000 * base / med:.2f}x |")
    print(f"largest parameter difference after {args.rounds * args.steps} steps: {worst:.2e}")


if __name__ == "__main__":
    main()
