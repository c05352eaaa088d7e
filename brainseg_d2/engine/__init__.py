"""Training: the plugin's Trainer, its launcher, and the set-up shared by tools/train_net.py
and the benchmarks."""

from .distributed import create_ddp_model, launch
from .trainer import Trainer, build_cfg_from_args, ensure_weights_available

__all__ = [
    "Trainer",
    "build_cfg_from_args",
    "create_ddp_model",
    "ensure_weights_available",
    "launch",
]
