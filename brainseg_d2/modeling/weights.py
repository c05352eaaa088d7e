"""Fine-tuning from 3-channel (RGB) weights with N-channel MRI input.

Model-zoo and ImageNet checkpoints have a first convolution of shape
``(64, 3, k, k)``; a model fed N MRI sequences has ``(64, N, k, k)``, which
Detectron2 would skip as a shape mismatch and leave random. Here the RGB filters
are averaged over their three input channels, repeated for each of the N
channels and scaled by ``3 / N``: an input whose N channels are all equal to a
grey image then gives exactly the response the original filters give that grey
image in all three colour channels, so the pretrained features start from
where they were trained, and every channel starts with the same weight.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["BrainSegCheckpointer", "adapt_input_conv"]

logger = logging.getLogger(__name__)

#: Names of the first convolution's weight: Detectron2's, and Caffe2 ImageNet files'.
FIRST_CONV_SUFFIXES = ("stem.conv1.weight", "conv1_w")


def adapt_input_conv(weight: torch.Tensor, num_channels: int) -> torch.Tensor:
    """``(O, 3, k, k)`` RGB filters -> ``(O, N, k, k)`` filters for N input channels.

    Args:
        weight: the pretrained first-convolution weight (tensor or array).
        num_channels: N.

    Returns:
        the channel mean, repeated N times and scaled by ``C_in / N``.
    """
    weight = torch.as_tensor(weight)
    if weight.ndim != 4:
        raise ValueError(f"expected a conv weight (O, C, k, k), got shape {tuple(weight.shape)}")
    mean = weight.float().mean(dim=1, keepdim=True) * (weight.shape[1] / num_channels)
    return mean.repeat(1, num_channels, 1, 1).to(weight.dtype)


#: Below this share of the model's tensors loaded, a partial load is warned about.
LOADED_SHARE_WARNING = 0.25


class BrainSegCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer that adapts a 3-channel first convolution to the model's N.

    Partial loading stays Detectron2's (fine-tuning across class counts), but when
    less than :data:`LOADED_SHARE_WARNING` of the model's tensors come from the
    file (weights of another architecture), one warning says so: Detectron2 only
    lists every skipped name.
    """

    def _load_model(self, checkpoint):
        state: MutableMapping = checkpoint.get("model", {})
        first = next(
            (m for n, m in self.model.named_modules() if n.endswith("stem.conv1")), None
        )
        if first is not None:
            wanted = first.weight.shape[1]
            for key in [k for k in state if k.endswith(FIRST_CONV_SUFFIXES)]:
                have = torch.as_tensor(state[key])
                if have.ndim == 4 and have.shape[1] != wanted:
                    logger.info(
                        f"adapting {key} from {have.shape[1]} to {wanted} input channels "
                        "(channel mean, scaled)"
                    )
                    state[key] = adapt_input_conv(have, wanted)
        incompatible = super()._load_model(checkpoint)
        total = len(self.model.state_dict())
        loaded = total - len(set(incompatible.missing_keys))
        if total and loaded < LOADED_SHARE_WARNING * total:
            logger.warning(
                "only %d of the model's %d tensors came from the weights file (another "
                "architecture?): the rest start from random initialisation", loaded, total,
            )
        return incompatible
