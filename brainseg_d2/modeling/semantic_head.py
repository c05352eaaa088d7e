"""A dense head that gives every category (nested regions included) a training signal.

Mask R-CNN assigns each proposal to one ground-truth box, so categories whose
boxes coincide with another's (``regions``: ET inside TC inside WT, often with the
same box) get almost no positive samples. This head predicts, for every pixel,
an independent probability per category (sigmoid, multi-label), so overlapping
categories are learned side by side, as region-based training does in nnU-Net.

Shapes: FPN features ``{name: (B, D, H/s, W/s)}``; ``images`` the normalised
model input ``(B, N, H, W)``; targets bool ``(B, C, H, W)``; logits ``(B, C, H, W)``
at the input's (padded) resolution.

Structure: Detectron2's :class:`SemSegFPNHead` fuses the FPN levels at stride 4;
optionally the slice's average of them is added back everywhere (``image_pooling``:
every pixel then sees statistics of the whole slice, as in DeepLabv3's image-level
features) and a few more 3x3 convs mix the fused levels there (``context_convs``);
a 1x1 conv reduces them, they are upsampled to full resolution and fused with a
small full-resolution branch on the image itself, so structures one or two
pixels thick (enhancing rims at 1.5 mm) are not lost to the stride-4 grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from detectron2.modeling.meta_arch.semantic_seg import SemSegFPNHead
from fvcore.nn import weight_init
from torch import nn

__all__ = ["RefinedSemSegHead", "multilabel_losses"]


def multilabel_losses(
    logits: torch.Tensor, targets: torch.Tensor, dice_weight: float = 1.0, eps: float = 1.0
) -> dict[str, torch.Tensor]:
    """Binary cross-entropy plus soft Dice, per category, for multi-label masks.

    Args:
        logits: float ``(B, C, H, W)``.
        targets: bool or float ``(B, C, H, W)``.
        dice_weight: weight of the Dice term (0: cross-entropy only).
        eps: smoothing of the Dice ratio (in pixels), so that a category absent
            from the whole batch and predicted absent costs ~0.

    Returns:
        ``{"loss_sem_seg_bce": ..., "loss_sem_seg_dice": ...}``; Dice is computed
        over the whole batch per category ("batch Dice"), then averaged over
        categories, so empty slices do not dominate it.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    logits = logits.float()
    targets = targets.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    probs = logits.sigmoid()
    dims = (0, 2, 3)
    inter = (probs * targets).sum(dims)
    dice = (2 * inter + eps) / (probs.sum(dims) + targets.sum(dims) + eps)
    return {"loss_sem_seg_bce": bce, "loss_sem_seg_dice": dice_weight * (1 - dice).mean()}


@SEM_SEG_HEADS_REGISTRY.register()
class RefinedSemSegHead(SemSegFPNHead):
    """Multi-label category masks from FPN features plus a full-resolution image branch."""

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        conv_dims: int,
        common_stride: int,
        image_channels: int,
        refine_dims: int = 16,
        context_convs: int = 0,
        image_pooling: bool = False,
        loss_weight: float = 1.0,
        dice_weight: float = 1.0,
        norm: str = "GN",
    ):
        """
        Args:
            input_shape: FPN features used, name -> shape.
            num_classes: C, the dataset's categories (``ROI_HEADS.NUM_CLASSES``).
            conv_dims: channels of the fused FPN features.
            common_stride: stride the FPN levels are fused at (4: FPN's P2).
            image_channels: N, channels of the model input.
            refine_dims: channels of the full-resolution branch.
            context_convs: 3x3 convs (``conv_dims`` channels) applied to the summed
                FPN levels at ``common_stride``, before they are reduced; 0: none.
            image_pooling: add a 1x1 conv of the fused levels' spatial mean to them.
            loss_weight: weight of both loss terms.
            dice_weight: weight of the Dice term relative to cross-entropy.
            norm: normalisation of every conv ("GN", "" for none).
        """
        super().__init__(
            input_shape, num_classes=num_classes, conv_dims=conv_dims,
            common_stride=common_stride, loss_weight=loss_weight, norm=norm,
        )  # fmt: skip
        self.dice_weight = dice_weight
        del self.predictor

        def conv(cin: int, cout: int, k: int = 3) -> Conv2d:
            # Detectron2's "GN" has 32 groups; the narrow full-resolution branch
            # gets groups of 8 channels instead.
            gn = norm == "GN"
            layer_norm = nn.GroupNorm(max(cout // 8, 1), cout) if gn else get_norm(norm, cout)
            layer = Conv2d(
                cin, cout, kernel_size=k, padding=k // 2, bias=not norm,
                norm=layer_norm, activation=F.relu,
            )  # fmt: skip
            weight_init.c2_msra_fill(layer)
            return layer

        self.pool = conv(conv_dims, conv_dims, k=1) if image_pooling else None
        self.context = nn.Sequential(*(conv(conv_dims, conv_dims) for _ in range(context_convs)))
        self.reduce = conv(conv_dims, refine_dims, k=1)
        self.image_branch = nn.Sequential(
            conv(image_channels, refine_dims), conv(refine_dims, refine_dims)
        )
        self.fuse = nn.Sequential(
            conv(2 * refine_dims, refine_dims), conv(refine_dims, refine_dims)
        )
        self.predictor = Conv2d(refine_dims, num_classes, kernel_size=1)
        weight_init.c2_msra_fill(self.predictor)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "common_stride": head.COMMON_STRIDE,
            "image_channels": len(cfg.MODEL.PIXEL_MEAN),
            "refine_dims": cfg.BRAINSEG.SEM_SEG.REFINE_DIM,
            "context_convs": cfg.BRAINSEG.SEM_SEG.CONTEXT_CONVS,
            "image_pooling": cfg.BRAINSEG.SEM_SEG.IMAGE_POOLING,
            "loss_weight": head.LOSS_WEIGHT,
            "dice_weight": cfg.BRAINSEG.SEM_SEG.DICE_WEIGHT,
            "norm": head.NORM,
        }

    def forward(self, features, images: torch.Tensor, targets: torch.Tensor | None = None):
        """
        Args:
            features: FPN features by name.
            images: normalised input ``(B, N, H, W)``, H and W multiples of the
                largest FPN stride (Detectron2 pads them so).
            targets: bool ``(B, C, H, W)`` in training.

        Returns:
            ``(logits (B, C, H, W), {})`` in inference, ``(None, losses)`` in training.
        """
        x = None
        for i, name in enumerate(self.in_features):
            level = self.scale_heads[i](features[name])
            x = level if x is None else x + level
        if self.pool is not None:
            x = x + self.pool(x.mean(dim=(2, 3), keepdim=True))
        x = self.reduce(self.context(x))
        x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.predictor(self.fuse(torch.cat([x, self.image_branch(images)], dim=1)))
        if not self.training:
            return logits, {}
        losses = multilabel_losses(logits, targets, self.dice_weight)
        return None, {k: v * self.loss_weight for k, v in losses.items()}
