"""A Mask R-CNN that drops low-scoring detections itself, while the volume predictor runs.

Detections scoring below the post-processing score threshold never enter the
masks, so the predictor raises the box predictor's ``test_score_thresh``
(``MODEL.ROI_HEADS.SCORE_THRESH_TEST``, usually 0.05) to that threshold: the mask
head and mask pasting then run only on detections that can enter the masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["ModelFn", "score_threshold_pushed_down"]

#: A Detectron2-style model: list of input dicts -> list of {"instances": Instances}.
ModelFn = Callable[[list[dict]], list[dict]]


@contextlib.contextmanager
def score_threshold_pushed_down(model: ModelFn, threshold: float) -> Iterator[None]:
    """Temporarily make a Mask R-CNN drop detections scoring below ``threshold`` itself.

    Detectron2's ``FastRCNNOutputLayers`` keeps boxes with ``score >
    test_score_thresh``, runs per-class NMS, keeps the top
    ``DETECTIONS_PER_IMAGE``; then the mask head runs and masks are pasted at
    full size for every kept box. When the caller keeps only ``score >=
    threshold`` anyway, filtering first gives exactly the same kept detections:
    NMS can only suppress a box through a higher-scoring box (which passes the
    same filter), and the top-k by score of the survivors starts with those
    above ``threshold``. The cut is set to the largest float32 below
    ``threshold``, so that ``>`` there equals ``>=`` here.

    Only raises the model's threshold, never lowers it; restores it on exit.
    Models without ``roi_heads.box_predictor.test_score_thresh`` (any other
    callable) are left alone.
    """
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    old = getattr(predictor, "test_score_thresh", None)
    cut = float(np.nextafter(np.float32(threshold), np.float32(-np.inf)))
    if old is None or cut <= old:
        yield
        return
    predictor.test_score_thresh = cut
    try:
        yield
    finally:
        predictor.test_score_thresh = old
