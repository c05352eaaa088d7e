"""An exponential moving average (EMA) of the weights, which become the final model.

``BRAINSEG.SOLVER.EMA_DECAY`` d > 0 keeps, beside the trained model, a copy whose
weights (and buffers) follow ``avg = d * avg + (1 - d) * weights`` after every
optimizer step (:class:`torch.optim.swa_utils.AveragedModel`; about the last
``1 / (1 - d)`` steps count). After the last iteration, and before an early stop's
final checkpoint, the average replaces the model's weights, so ``model_final.pth``,
the final evaluation and everything downstream (tuning, prediction) use it with no
other change. Periodic evaluations during training (``TEST.EVAL_PERIOD``) score the
current weights, not the average. The average is part of the trainer's state, so a
resumed run continues it.
"""

from __future__ import annotations

import logging

import torch
from detectron2.engine.train_loop import HookBase
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAverage"]

logger = logging.getLogger(__name__)


class WeightAverage(HookBase):
    """EMA of a model's weights; :meth:`apply` copies it into the model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        """
        Args:
            model: the trained model (DDP-wrapped or not).
            decay: in (0, 1); the weight of the old average at each update.
        """
        if not 0.0 < decay < 1.0:
            raise ValueError(f"BRAINSEG.SOLVER.EMA_DECAY must be in (0, 1), got {decay}")
        if isinstance(model, DistributedDataParallel):
            model = model.module
        self._model = model
        self.decay = decay
        self.average = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )
        self._applied = False

    def after_step(self):
        self.average.update_parameters(self._model)
        if self.trainer.iter >= self.trainer.max_iter - 1:
            self.apply()

    def apply(self) -> None:
        """Copy the averaged weights and buffers into the model (once)."""
        if self._applied:
            return
        with torch.no_grad():
            for dst, src in zip(
                self._model.state_dict().values(), self.average.module.state_dict().values()
            ):
                dst.copy_(src)
        self._applied = True
        logger.info("Weights replaced by their moving average (decay %g)", self.decay)

    def state_dict(self):
        return {"average": self.average.state_dict()}

    def load_state_dict(self, state_dict):
        self.average.load_state_dict(state_dict["average"])
