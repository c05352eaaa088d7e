"""Model inputs of a preprocessed volume's slices, as the test-time mapper builds them.

:class:`~brainseg_d2.inference.volume_predictor.VolumePredictor` feeds the model
slices it takes straight from :func:`~brainseg_d2.data.preprocess.preprocess_volume`
instead of the converter's PNGs. For its masks to be the ones evaluation saw,
each input must be what :class:`~brainseg_d2.data.dataset_mapper.BrainSegDatasetMapper`
builds at test time from those PNGs: the slice's N channels in the dataset's
channel order (with ``CONTEXT_SLICES`` neighbours per side, zeros beyond the
volume), resized by the same ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)``
(:func:`inference_resize`) through the same
:func:`~brainseg_d2.data.transforms.apply_image_transform` and
:func:`~brainseg_d2.data.transforms.image_to_tensor`. Only the PNG round trip
(lossless) is skipped.

Slices without brain voxels are not model inputs at all (:func:`brain_slices`):
the converter drops them, so the model never saw such slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from detectron2.data import transforms as T

from brainseg_d2.data.dataset_mapper import with_context
from brainseg_d2.data.preprocess import PreprocessedVolume
from brainseg_d2.data.transforms import apply_image_transform, image_to_tensor

__all__ = ["brain_slices", "slice_model_inputs", "inference_resize"]


def inference_resize(cfg) -> T.ResizeShortestEdge:
    """The test-time resize of ``cfg``, the same as ``DefaultPredictor``'s and the mapper's."""
    return T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )


def brain_slices(pre: PreprocessedVolume) -> np.ndarray:
    """Indices (canonical order) of the slices that hold brain voxels."""
    return np.flatnonzero(pre.brain.reshape(pre.brain.shape[0], -1).any(axis=1))


def slice_model_inputs(
    pre: PreprocessedVolume,
    indices: Sequence[int],
    resize: T.Augmentation,
    context_slices: int,
) -> list[dict]:
    """Detectron2 input dicts of some slices of a volume.

    Args:
        pre: preprocessed volume, slices (S, H, W, N).
        indices: slice indices.
        resize: the test-time resize (:func:`inference_resize`).
        context_slices: neighbours per side stacked onto each slice's channels
            (``BRAINSEG.INPUT.CONTEXT_SLICES``).

    Returns:
        one dict per slice: ``image`` (N', H', W') uint8 tensor, resized (N' =
        N x (2 x ``context_slices`` + 1)); ``height`` H, ``width`` W
        (predictions come back at that size); ``slice_index``.
    """
    height, width = pre.slices.shape[1:3]
    # One transform per volume: all slices share their shape.
    transform = resize.get_transform(pre.slices[0])
    inputs = []
    num_slices = pre.slices.shape[0]

    def slice_at(index: int) -> np.ndarray | None:
        return pre.slices[index] if 0 <= index < num_slices else None

    for s in indices:
        image = with_context(slice_at, int(s), context_slices)
        inputs.append(
            {
                "image": image_to_tensor(apply_image_transform(transform, image)),
                "height": height,
                "width": width,
                "slice_index": int(s),
            }
        )
    return inputs
