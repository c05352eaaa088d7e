"""Dataset mapper for MRI slices: RLE/bitmask masks, MRI-appropriate augmentation."""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

logger = logging.getLogger(__name__)


class RandomGamma(T.Augmentation):
    """Gamma correction ``255 * (x / 255) ** gamma`` with gamma uniform in a range.

    MRI contrast varies non-linearly across scanners; gamma mimics that better than
    a linear contrast change alone.
    """

    def __init__(self, gamma_min: float, gamma_max: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        gamma = float(np.random.uniform(self.gamma_min, self.gamma_max))
        lut = (255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.float32)

        def apply(img: np.ndarray) -> np.ndarray:
            return lut[np.clip(img, 0, 255).astype(np.uint8)]

        return T.ColorTransform(apply)


def build_mri_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """Resize (as Detectron2 does) plus, in training, flip/rotation/scale/intensity.

    Geometric augmentations stay mild: anatomy has a canonical orientation, and
    large rotations never occur in real axial MRI.
    """
    augs: list[T.Augmentation] = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN if is_train else cfg.INPUT.MIN_SIZE_TEST,
            cfg.INPUT.MAX_SIZE_TRAIN if is_train else cfg.INPUT.MAX_SIZE_TEST,
            cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING if is_train else "choice",
        )
    ]
    if not is_train:
        return augs
    a = cfg.BRAINSEG.AUGMENT
    if a.FLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=a.FLIP_PROB, horizontal=True, vertical=False))
    if a.ROTATION > 0:
        augs.append(T.RandomRotation([-a.ROTATION, a.ROTATION], expand=False))
    if tuple(a.SCALE) != (1.0, 1.0):
        # Zoom about the centre, output keeps its size so batches stay uniform.
        augs.append(_RandomZoom(*a.SCALE))
    if tuple(a.BRIGHTNESS) != (1.0, 1.0):
        augs.append(T.RandomBrightness(*a.BRIGHTNESS))
    if tuple(a.CONTRAST) != (1.0, 1.0):
        augs.append(T.RandomContrast(*a.CONTRAST))
    if tuple(a.GAMMA) != (1.0, 1.0):
        augs.append(RandomGamma(*a.GAMMA))
    return augs


class _RandomZoom(T.Augmentation):
    """Scale the image about its centre by a factor in [lo, hi], keeping its size."""

    def __init__(self, lo: float, hi: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        s = float(np.random.uniform(self.lo, self.hi))
        # Source rectangle (x0, y0, x1, y1) whose content fills the output.
        cw, ch = w / s, h / s
        x0, y0 = (w - cw) / 2, (h - ch) / 2
        return T.ExtentTransform((x0, y0, x0 + cw, y0 + ch), (h, w))


class BrainSegDatasetMapper:
    """Map a slice's dataset dict to the model's input format.

    Reads the 8-bit slice image, applies augmentations, converts annotations
    (compressed RLE) to bitmask ``Instances``. Slices without annotations are
    allowed (empty ``Instances``), so the model learns what healthy tissue looks
    like. All other keys of the dict (``volume_id``, ``slice_index``, ...) pass
    through for evaluators.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list[T.Augmentation],
        image_format: str = "BGR",
        mask_format: str = "bitmask",
    ):
        """
        Args:
            is_train: keep annotations (training) or drop them (inference).
            augmentations: applied in order to image and masks.
            image_format: Detectron2 image format of the model input (``BGR``/``RGB``).
            mask_format: ``bitmask`` (RLE decoded) or ``polygon``.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.mask_format = mask_format
        logger.info(f"[BrainSegDatasetMapper] augmentations ({'train' if is_train else 'test'}): "
                    f"{augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": build_mri_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "mask_format": cfg.INPUT.MASK_FORMAT,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        h, w = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
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
