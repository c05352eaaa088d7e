"""``BrainSegRCNN``: Mask R-CNN with a dense multi-label head beside it.

The shape of Detectron2's ``PanopticFPN``: one FPN backbone feeds the RPN and ROI
heads (instances, for detection and COCO AP) and a semantic head
(:class:`~brainseg_d2.modeling.semantic_head.RefinedSemSegHead`, category masks
for every pixel). Training inputs carry ``instances`` and ``sem_seg`` (bool
``(C, H, W)`` category masks, from ``BrainSegDatasetMapper``); the losses of both
branches are summed. Inference returns, per image, ``instances`` and ``sem_seg``:
float ``(C, height, width)`` category probabilities at the requested output size.
Inside :func:`dense_head_only` inference skips the RPN and ROI heads and returns
``sem_seg`` alone, for callers that read only the category masks.
With ``instance_period`` k > 1 (``BRAINSEG.SOLVER.INSTANCE_PERIOD``) the RPN and
ROI heads train on every k-th iteration only, and the backbone and dense head
on every one: a step without the instance branch takes about 0.6 of a full one
on CPU, so more steps fit in the same time.
With ``flip_tta`` (``BRAINSEG.INFERENCE.FLIP_TTA``) the category probabilities
are the mean of the image's and its left-right mirror's (test-time
augmentation, as nnU-Net mirrors); instances come from the image alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_sem_seg_head
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import ImageList
from detectron2.utils.events import get_event_storage
from torch import nn

__all__ = ["BrainSegRCNN", "dense_head_only"]


@META_ARCH_REGISTRY.register()
class BrainSegRCNN(GeneralizedRCNN):
    """GeneralizedRCNN plus a semantic head that also sees the input image."""

    @configurable
    def __init__(
        self, *, sem_seg_head: nn.Module, instance_period: int = 1, flip_tta: bool = False, **kwargs
    ):
        """
        Args:
            sem_seg_head: called as ``head(features, images, targets)``.
            instance_period: in training, the RPN and ROI heads get their losses on
                iterations divisible by it (the event storage's ``iter``); 1: always.
            flip_tta: in inference, average the category probabilities of each
                image and its left-right mirror (one backbone pass over both).
            **kwargs: :class:`GeneralizedRCNN` arguments.
        """
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head
        if int(instance_period) < 1:
            raise ValueError(f"instance_period must be >= 1, got {instance_period}")
        self.instance_period = int(instance_period)
        self.flip_tta = bool(flip_tta)
        #: Inference runs the instance branch (False inside :func:`dense_head_only`).
        self.infer_instances = True

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["sem_seg_head"] = build_sem_seg_head(cfg, ret["backbone"].output_shape())
        ret["instance_period"] = cfg.BRAINSEG.SOLVER.INSTANCE_PERIOD
        ret["flip_tta"] = cfg.BRAINSEG.INFERENCE.FLIP_TTA
        return ret

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        losses = {}
        if self.trains_instances():
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
            _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
            losses.update(proposal_losses, **detector_losses)
        targets = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            pad_value=0,
        ).tensor
        _, sem_seg_losses = self.sem_seg_head(features, images.tensor, targets)
        return {**losses, **sem_seg_losses}

    def trains_instances(self) -> bool:
        """Whether this training iteration runs the RPN and ROI heads (``instance_period``)."""
        return self.instance_period == 1 or get_event_storage().iter % self.instance_period == 0

    def inference(self, batched_inputs: list[dict], detected_instances=None, do_postprocess=True):
        """Per image ``{"instances": Instances, "sem_seg": (C, height, width) probabilities}``.

        Without ``instances`` when :attr:`infer_instances` is off.
        """
        assert do_postprocess and detected_instances is None, "not supported by BrainSegRCNN"
        images = self.preprocess_image(batched_inputs)
        count = len(batched_inputs)
        x = images.tensor
        if self.flip_tta:
            # The padded batch is mirrored whole, so mirroring the logits back puts
            # every pixel where it was (the padding returns to the right).
            x = torch.cat([x, x.flip(-1)])
        features = self.backbone(x)
        results = [None] * count
        if self.infer_instances:
            own = {name: f[:count] for name, f in features.items()} if self.flip_tta else features
            proposals, _ = self.proposal_generator(images, own, None)
            results, _ = self.roi_heads(images, own, proposals, None)
        logits, _ = self.sem_seg_head(features, x)
        outputs = []
        for i, (result, inp, size) in enumerate(zip(results, batched_inputs, images.image_sizes)):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            probs = sem_seg_postprocess(logits[i], size, height, width).sigmoid()
            if self.flip_tta:
                mirrored = logits[count + i].flip(-1)
                probs = (probs + sem_seg_postprocess(mirrored, size, height, width).sigmoid()) / 2
            out = {"sem_seg": probs}
            if result is not None:
                out["instances"] = detector_postprocess(result, height, width)
            outputs.append(out)
        return outputs


@contextlib.contextmanager
def dense_head_only(model) -> Iterator[None]:
    """Inside the block, a :class:`BrainSegRCNN`'s inference returns ``sem_seg`` alone.

    The RPN and ROI heads are skipped (about half of inference on CPU), for callers
    that read only the dense head's category masks (``BRAINSEG.MASK_SOURCE
    semantic``). ``model`` may be wrapped in DDP or ``ConcurrentBatches``; any
    other model or wrapper is left alone. The switch is an
    attribute, so it holds in worker threads too; it is restored on exit.
    """
    from torch.nn.parallel import DistributedDataParallel

    from brainseg_d2.engine.test_inference import ConcurrentBatches  # (engine imports us)

    inner = model
    while not isinstance(inner, BrainSegRCNN):
        if isinstance(inner, DistributedDataParallel):
            inner = inner.module
        elif isinstance(inner, ConcurrentBatches):
            inner = inner.model
        else:
            yield
            return
    before = inner.infer_instances
    inner.infer_instances = False
    try:
        yield
    finally:
        inner.infer_instances = before
