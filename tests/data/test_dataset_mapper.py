"""The MRI dataset mapper: empty slices, RLE masks through augmentations, intensity augs."""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import transforms as T

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper, RandomGamma


@pytest.fixture
def slice_dict(tmp_path):
    img = np.zeros((32, 40, 3), np.uint8)
    img[8:20, 4:14] = 180
    path = tmp_path / "s.png"
    cv2.imwrite(str(path), img)
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 4:14] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    ann = {"bbox": [4, 8, 10, 12], "bbox_mode": 1, "segmentation": rle, "category_id": 2}
    return {
        "file_name": str(path), "height": 32, "width": 40, "image_id": 7,
        "volume_id": "v1", "slice_index": 3, "annotations": [ann],
    }


def test_flip_moves_mask_with_image_and_keeps_volume_keys(slice_dict):
    mapper = BrainSegDatasetMapper(True, augmentations=[T.RandomFlip(prob=1.0)])
    out = mapper(slice_dict)
    assert out["volume_id"] == "v1" and out["slice_index"] == 3
    image = out["image"].numpy()  # (3, H, W)
    masks = out["instances"].gt_masks.tensor.numpy()
    assert masks.shape == (1, 32, 40)
    assert masks[0, 8:20, 26:36].all() and masks[0].sum() == 120  # columns 4..13 -> 26..35
    assert (image[0][masks[0]] == 180).all()
    assert out["instances"].gt_classes.tolist() == [2]
    assert out["instances"].gt_boxes.tensor.tolist() == [[26.0, 8.0, 36.0, 20.0]]


def test_empty_slice_gives_empty_instances(slice_dict):
    slice_dict["annotations"] = []
    out = BrainSegDatasetMapper(True, augmentations=[])(slice_dict)
    assert len(out["instances"]) == 0


def test_inference_drops_annotations(slice_dict):
    out = BrainSegDatasetMapper(False, augmentations=[])(slice_dict)
    assert "annotations" not in out and "instances" not in out
    assert tuple(out["image"].shape) == (3, 32, 40)


def test_from_config_builds_mri_augmentations():
    cfg = get_brainseg_cfg()
    train = BrainSegDatasetMapper(cfg, is_train=True)
    names = [type(a).__name__ for a in train.augmentations.augs]
    assert names[0] == "ResizeShortestEdge"
    for expected in ("RandomFlip", "RandomRotation", "RandomBrightness", "RandomContrast",
                     "RandomGamma"):
        assert expected in names
    test = BrainSegDatasetMapper(cfg, is_train=False)
    assert [type(a).__name__ for a in test.augmentations.augs] == ["ResizeShortestEdge"]


def test_random_gamma_is_monotonic_and_keeps_range():
    img = np.tile(np.arange(256, dtype=np.uint8), (2, 1))[..., None].repeat(3, 2)
    out = RandomGamma(2.0, 2.0).get_transform(img).apply_image(img)
    assert out[0, 0, 0] == 0 and out[0, 255, 0] == 255
    assert np.all(np.diff(out[0, :, 0]) >= 0)
    assert out[0, 128, 0] < 128  # gamma > 1 darkens mid-tones
