"""bfloat16 autocast for training on CPU or GPU, where the device runs it natively.

Detectron2's ``AMPTrainer`` autocasts through ``torch.cuda.amp`` (float16 with
a gradient scaler) and asserts CUDA. bfloat16 has float32's exponent range, so
it needs no loss scaling, and CPUs with AVX-512 BF16 or AMX run its matrix
products natively. :class:`BF16Trainer` runs the forward pass (and the losses)
under ``torch.autocast(device_type, dtype=torch.bfloat16)``; weights, gradients
and the optimizer stay float32. Enabled by ``BRAINSEG.SOLVER.BF16``; its speed
and accuracy against float32 are in BENCHMARKS.md (``bench/train_speed.py``).
A CPU without AVX-512 BF16 or AMX emulates bfloat16 at a fraction of float32's
speed, so the Trainer asks :func:`native_bf16` first and trains such machines in
float32.
"""

from __future__ import annotations

import time

import torch
from detectron2.engine import SimpleTrainer

__all__ = ["BF16Trainer", "model_device_type", "native_bf16"]


def native_bf16(device_type: str = "cpu") -> bool:
    """Whether ``device_type`` runs bfloat16 matrix products in hardware.

    CUDA: ``torch.cuda.is_bf16_supported`` without emulation. CPU: AVX-512 BF16
    or AMX, as torch detects them. Without either, a CPU emulates bfloat16 and
    autocast made a training step 13x slower than float32 (BENCHMARKS.md,
    "Training speed").
    """
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # an older torch without the keyword
            return torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def model_device_type(model: torch.nn.Module) -> str:
    """``"cpu"`` or ``"cuda"``: where ``model``'s parameters live (DDP-wrapped too)."""
    return next(model.parameters()).device.type


class BF16Trainer(SimpleTrainer):
    """``SimpleTrainer`` with the forward pass under bfloat16 autocast.

    The step is ``SimpleTrainer.run_step``'s: one batch, the summed losses,
    backward, the metrics, the optimizer step.
    """

    def __init__(self, model, data_loader, optimizer):
        super().__init__(model, data_loader, optimizer)
        self.device_type = model_device_type(model)

    def run_step(self):
        assert self.model.training, "[BF16Trainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.float().backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()
