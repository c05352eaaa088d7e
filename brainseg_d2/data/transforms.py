"""Augmentations and transforms for multi-channel MRI slices.

Images are ``(H, W, N)`` uint8 with any number of channels N (one per MRI
sequence, see :mod:`brainseg_d2.data.preprocess`). Detectron2's resampling
transforms go through PIL, which only knows 1, 3 or 4 channels, so
:func:`apply_image_transform` runs them channel by channel; everything else
(flips, crops, intensity transforms) sees the whole image. The training mapper
and the volume predictor build model inputs with the same
:func:`apply_image_transform` and :func:`image_to_tensor`, so both feed the model
identical tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.data import transforms as T
from PIL import Image

from brainseg_d2.data.intensity_augment import build_intensity_augmentations

__all__ = [
    "MultiChannelAugInput",
    "RandomGamma",
    "RandomZoom",
    "apply_image_transform",
    "apply_segmentation_transform",
    "build_mri_augmentations",
    "image_to_tensor",
]

#: Transforms that resample through PIL or OpenCV: applied one channel at a time.
_RESAMPLING = (T.ResizeTransform, T.ExtentTransform, T.RotationTransform)


def apply_image_transform(tfm: T.Transform, image: np.ndarray) -> np.ndarray:
    """Apply a Detectron2 transform to an ``(H, W, N)`` image with any N.

    Args:
        tfm: a transform or a ``TransformList``.
        image: ``(H, W, N)`` uint8.

    Returns:
        the transformed ``(H', W', N)`` image.
    """
    for t in tfm.transforms if isinstance(tfm, T.TransformList) else [tfm]:
        if isinstance(t, _RESAMPLING):
            image = np.stack([t.apply_image(image[..., c]) for c in range(image.shape[2])], -1)
        else:
            image = t.apply_image(image)
    return image


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, N)`` uint8 array -> ``(N, H, W)`` uint8 tensor, Detectron2's ``image`` input."""
    return torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))


def apply_segmentation_transform(tfm: T.Transform, labels: np.ndarray) -> np.ndarray:
    """Apply a transform to an ``(H, W)`` label map with nearest-neighbour sampling.

    Detectron2 0.6's ``ExtentTransform.apply_segmentation`` asks for
    ``Image.NEAREST``, which is 0, and then reads ``interp if interp else
    self.interp``: it resamples label maps bilinearly, inventing label 1 where 0
    meets 2. Here every extent is applied with an explicit nearest-neighbour copy.
    """
    for t in tfm.transforms if isinstance(tfm, T.TransformList) else [tfm]:
        if isinstance(t, T.ExtentTransform):
            t = T.ExtentTransform(t.src_rect, t.output_size, interp=Image.NEAREST, fill=0)
            labels = t.apply_image(labels)
        else:
            labels = t.apply_segmentation(labels)
    return labels


class MultiChannelAugInput(T.AugInput):
    """``AugInput`` whose image may have any number of channels (see module docstring)."""

    def transform(self, tfm: T.Transform) -> None:
        self.image = apply_image_transform(tfm, self.image)
        if self.boxes is not None:
            self.boxes = tfm.apply_box(self.boxes)
        if self.sem_seg is not None:
            self.sem_seg = apply_segmentation_transform(tfm, self.sem_seg)


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


class RandomZoom(T.Augmentation):
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


def build_mri_augmentations(cfg, is_train: bool, flip: bool = True) -> list[T.Augmentation]:
    """Resize (as Detectron2 does) plus, in training, flip/rotation/scale/intensity.

    ``INPUT.CROP`` works as in Detectron2's mapper: in training, a random crop first.

    Geometric augmentations stay mild: anatomy has a canonical orientation, and
    large rotations never occur in real axial MRI. ``flip`` False leaves out the
    horizontal flip, which is a left-right mirror only on axial and coronal
    slices (on sagittal ones it would swap front and back).
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
    if cfg.INPUT.CROP.ENABLED:
        # As Detectron2's DatasetMapper: a random crop of the slice before the resize
        # (the mapper recomputes boxes from the cropped masks).
        augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    a = cfg.BRAINSEG.AUGMENT
    if a.FLIP_PROB > 0 and flip:
        augs.append(T.RandomFlip(prob=a.FLIP_PROB, horizontal=True, vertical=False))
    if a.ROTATION > 0:
        augs.append(T.RandomRotation([-a.ROTATION, a.ROTATION], expand=False))
    if tuple(a.SCALE) != (1.0, 1.0):
        # Zoom about the centre, output keeps its size so batches stay uniform.
        augs.append(RandomZoom(*a.SCALE))
    # Per-channel intensity before the whole-image ones: Detectron2's RandomContrast
    # blends with the image mean, so the background would no longer be 0.
    augs += build_intensity_augmentations(
        contrast=tuple(a.CHANNEL_CONTRAST), shift=a.CHANNEL_SHIFT, gamma=tuple(a.CHANNEL_GAMMA),
        bias_sd=a.BIAS_FIELD, noise_sd=a.NOISE, lesion_contrast=tuple(a.LESION_CONTRAST),
        sequences=len(cfg.MODEL.PIXEL_MEAN) // (2 * cfg.BRAINSEG.INPUT.CONTEXT_SLICES + 1),
        prob=a.CHANNEL_PROB,
    )  # fmt: skip
    if tuple(a.BRIGHTNESS) != (1.0, 1.0):
        augs.append(T.RandomBrightness(*a.BRIGHTNESS))
    if tuple(a.CONTRAST) != (1.0, 1.0):
        augs.append(T.RandomContrast(*a.CONTRAST))
    if tuple(a.GAMMA) != (1.0, 1.0):
        augs.append(RandomGamma(*a.GAMMA))
    return augs
