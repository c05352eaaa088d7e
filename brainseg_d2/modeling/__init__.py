"""Model parts registered in Detectron2's registries (importing this module registers them).

* :class:`~brainseg_d2.modeling.meta_arch.BrainSegRCNN` (``META_ARCHITECTURE``):
  Mask R-CNN plus a dense head, like Detectron2's ``PanopticFPN``;
  :func:`~brainseg_d2.modeling.meta_arch.dense_head_only` skips its instance
  branch at inference.
* :class:`~brainseg_d2.modeling.semantic_head.RefinedSemSegHead`
  (``MODEL.SEM_SEG_HEAD.NAME``): multi-label category masks at full resolution.
"""

from brainseg_d2.modeling.meta_arch import BrainSegRCNN, dense_head_only
from brainseg_d2.modeling.semantic_head import RefinedSemSegHead, multilabel_losses

__all__ = ["BrainSegRCNN", "RefinedSemSegHead", "dense_head_only", "multilabel_losses"]
