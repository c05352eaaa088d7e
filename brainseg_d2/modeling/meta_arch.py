"""``BrainSegRCNN``: Mask R-CNN with a dense multi-label head beside it.

The shape of Detectron2's ``PanopticFPN``: one FPN backbone feeds the RPN and ROI
heads (instances, for detection and COCO AP) and a semantic head
(:class:`~brainseg_d2.modeling.semantic_head.RefinedSemSegHead`, category masks
for every pixel). Training inputs carry ``instances`` and ``sem_seg`` (bool
``(C, H, W)`` category masks, from ``BrainSegDatasetMapper``); the losses of both
branches are summed. Inference returns, per image, ``instances`` and ``sem_seg``:
float ``(C, height, width)`` category probabilities at the requested output size.
"""

from __future__ import annotations

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_sem_seg_head
from detectron2.modeling.postprocessing import detector_postprocess, sem_seg_postprocess
from detectron2.structures import ImageList
from torch import nn

__all__ = ["BrainSegRCNN"]


@META_ARCH_REGISTRY.register()
class BrainSegRCNN(GeneralizedRCNN):
    """GeneralizedRCNN plus a semantic head that also sees the input image."""

    @configurable
    def __init__(self, *, sem_seg_head: nn.Module, **kwargs):
        """
        Args:
            sem_seg_head: called as ``head(features, images, targets)``.
            **kwargs: :class:`GeneralizedRCNN` arguments.
        """
        super().__init__(**kwargs)
        self.sem_seg_head = sem_seg_head

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["sem_seg_head"] = build_sem_seg_head(cfg, ret["backbone"].output_shape())
        return ret

    def forward(self, batched_inputs: list[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, proposal_losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        targets = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs],
            self.backbone.size_divisibility,
            pad_value=0,
        ).tensor
        _, sem_seg_losses = self.sem_seg_head(features, images.tensor, targets)
        return {**proposal_losses, **detector_losses, **sem_seg_losses}

    def inference(self, batched_inputs: list[dict], detected_instances=None, do_postprocess=True):
        """Per image ``{"instances": Instances, "sem_seg": (C, height, width) probabilities}``."""
        assert do_postprocess and detected_instances is None, "not supported by BrainSegRCNN"
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        logits, _ = self.sem_seg_head(features, images.tensor)
        outputs = []
        for logit, result, inp, size in zip(logits, results, batched_inputs, images.image_sizes):
            height, width = inp.get("height", size[0]), inp.get("width", size[1])
            outputs.append(
                {
                    "instances": detector_postprocess(result, height, width),
                    "sem_seg": sem_seg_postprocess(logit, size, height, width).sigmoid(),
                }
            )
        return outputs
