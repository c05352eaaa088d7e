"""Dataset mapper for multi-channel MRI slices: RLE masks, semantic targets, augmentation."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from brainseg_d2.data.io.png import read_channel_png
from brainseg_d2.data.transforms import (
    MultiChannelAugInput,
    build_mri_augmentations,
    image_to_tensor,
)
from brainseg_d2.labels import get_target

logger = logging.getLogger(__name__)


def slice_channels(cfg) -> int:
    """Channels of one slice: ``len(MODEL.PIXEL_MEAN)`` over the ``2K + 1`` context slices.

    Raises:
        ValueError: ``MODEL.PIXEL_MEAN`` does not split into ``2K + 1`` slices.
    """
    slices = 2 * cfg.BRAINSEG.INPUT.CONTEXT_SLICES + 1
    total = len(cfg.MODEL.PIXEL_MEAN)
    if cfg.BRAINSEG.INPUT.CONTEXT_SLICES < 0 or total % slices:
        raise ValueError(
            f"MODEL.PIXEL_MEAN has {total} values, not a multiple of the {slices} slices "
            f"that BRAINSEG.INPUT.CONTEXT_SLICES {cfg.BRAINSEG.INPUT.CONTEXT_SLICES} gives"
        )
    return total // slices


def with_context(
    slice_at: Callable[[int], np.ndarray | None], index: int, context: int
) -> np.ndarray:
    """Slice ``index`` and ``context`` neighbours per side as one ``(H, W, N * (2K + 1))``.

    Channels run slice by slice, from ``index - K`` to ``index + K``, each slice's
    N channels in dataset order. A neighbour ``slice_at`` returns None for (outside
    the volume, or without brain) is all zeros, as such slices are.
    """
    centre = slice_at(index)
    if context == 0:
        return centre
    parts = []
    for n in range(index - context, index + context + 1):
        part = centre if n == index else slice_at(n)
        parts.append(np.zeros_like(centre) if part is None else part)
    return np.concatenate(parts, axis=2)


def read_label_png(path: str) -> np.ndarray:
    """``(H, W)`` uint8 tissue codes of a converter label PNG; ``ValueError`` names the file."""
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None or labels.ndim != 2:
        raise ValueError(f"cannot read label image {path}")
    return labels


class BrainSegDatasetMapper:
    """Map a slice's dataset dict to the model's input format.

    Reads the slice's N channels (``brainseg_d2.data.io.png.read_channel_png``), applies the
    augmentations to the image, the instance masks and, in training, the
    slice's tissue-code label PNG; converts annotations (compressed RLE) to
    bitmask ``Instances``. Training dicts also get ``sem_seg``: bool ``(C, H, W)``
    category masks of every labelled pixel (the dataset's target, see
    :mod:`brainseg_d2.labels`) for a dense head. Slices without annotations are
    allowed (empty ``Instances``), so the model learns what healthy tissue looks
    like. All other keys (``volume_id``, ``slice_index``, ...) pass through.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[T.Augmentation],
        num_channels: int,
        mask_format: str = "bitmask",
        sem_seg_categories: Sequence[Sequence[int]] | None = None,
        context_slices: int = 0,
    ):
        """
        Args:
            is_train: keep annotations (training) or drop them (inference).
            augmentations: applied in order to image, masks and label map.
            num_channels: channels of one slice (the dataset's channels).
            mask_format: ``bitmask`` (RLE decoded) or ``polygon``.
            sem_seg_categories: tissue codes of each category, in category order;
                training dicts then get ``sem_seg`` (None: no dense targets).
            context_slices: K neighbouring slices on each side stacked as extra
                channels (:func:`with_context`); read from the same volume folder.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.num_channels = int(num_channels)
        self.context_slices = int(context_slices)
        self.mask_format = mask_format
        self._category_table = None
        if sem_seg_categories is not None:
            # table[code] holds bit c when tissue `code` belongs to category c.
            table = np.zeros(256, dtype=np.uint32)
            for c, codes in enumerate(sem_seg_categories):
                table[list(codes)] |= 1 << c
            self._category_table = table
            self._num_categories = len(sem_seg_categories)
        mode = "train" if is_train else "test"
        logger.info(f"[BrainSegDatasetMapper] {mode}, {num_channels} channels: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        sem_seg = None
        if is_train and cfg.MODEL.META_ARCHITECTURE == "BrainSegRCNN" and cfg.DATASETS.TRAIN:
            target = get_target(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("target", "labels"))
            sem_seg = list(target.categories.values())
        sagittal = [d for d in cfg.DATASETS.TRAIN
                    if MetadataCatalog.get(d).get("slice_axis", "axial") == "sagittal"]
        if is_train and sagittal and cfg.BRAINSEG.AUGMENT.FLIP_PROB > 0:
            logger.info("no horizontal flip: %s holds sagittal slices, where it would swap "
                        "front and back", ", ".join(sagittal))
        return {
            "is_train": is_train,
            "augmentations": build_mri_augmentations(cfg, is_train, flip=not sagittal),
            "num_channels": slice_channels(cfg),
            "mask_format": cfg.INPUT.MASK_FORMAT,
            "sem_seg_categories": sem_seg,
            "context_slices": cfg.BRAINSEG.INPUT.CONTEXT_SLICES,
        }

    def _read_image(self, dataset_dict: dict) -> np.ndarray:
        path = Path(dataset_dict["file_name"])
        if not self.context_slices:
            return read_channel_png(path, self.num_channels)

        def slice_at(index: int) -> np.ndarray | None:
            neighbour = path.with_name(f"{index:04d}.png")
            return read_channel_png(neighbour, self.num_channels) if neighbour.is_file() else None

        return with_context(slice_at, int(dataset_dict["slice_index"]), self.context_slices)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict)
        utils.check_image_size(dataset_dict, image)
        labels = None
        if self.is_train and self._category_table is not None:
            path = dataset_dict.get("sem_seg_file_name")
            labels = read_label_png(path) if path else np.zeros(image.shape[:2], np.uint8)
        aug_input = MultiChannelAugInput(image, sem_seg=labels)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        dataset_dict["image"] = image_to_tensor(image)
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        if labels is not None:
            bits = self._category_table[aug_input.sem_seg]
            masks = [(bits >> c) & 1 for c in range(self._num_categories)]
            dataset_dict["sem_seg"] = torch.as_tensor(np.stack(masks).astype(bool))
        annos = [
            utils.transform_instance_annotations(obj, transforms, (h, w))
            for obj in dataset_dict.pop("annotations", [])
            if obj.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, (h, w), mask_format=self.mask_format)
        # Rotation/zoom can push a small lesion out of view: drop emptied instances.
        if instances.has("gt_masks"):
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
