"""Training: the plugin's Trainer and the set-up shared by tools/train_net.py and benchmarks."""

from .trainer import Trainer, build_cfg_from_args, ensure_weights_available

__all__ = ["Trainer", "build_cfg_from_args", "ensure_weights_available"]
