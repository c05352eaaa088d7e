"""The optimizer a config asks for: Detectron2's SGD, or AdamW over the same parameter groups."""

from __future__ import annotations

import torch
from detectron2.solver import build_optimizer as d2_build_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("SGD", "AdamW")


def build_optimizer(cfg, model) -> torch.optim.Optimizer:
    """The optimizer ``BRAINSEG.SOLVER.OPTIMIZER`` names, over Detectron2's parameter groups.

    "SGD" is Detectron2's own ``build_optimizer``. "AdamW" uses the same groups
    (``SOLVER.WEIGHT_DECAY_NORM``, ``BIAS_LR_FACTOR``, ``WEIGHT_DECAY_BIAS``), the
    same gradient clipping (``SOLVER.CLIP_GRADIENTS``), ``SOLVER.BASE_LR`` and
    decoupled ``SOLVER.WEIGHT_DECAY``; ``SOLVER.MOMENTUM`` does not apply.

    Raises:
        ValueError: an optimizer name other than those in :data:`OPTIMIZERS`.
    """
    name = cfg.BRAINSEG.SOLVER.OPTIMIZER
    if name == "SGD":
        return d2_build_optimizer(cfg, model)
    if name != "AdamW":
        raise ValueError(
            f"BRAINSEG.SOLVER.OPTIMIZER is {name!r}: it must be one of {', '.join(OPTIMIZERS)}"
        )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.AdamW)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
