"""The MRI dataset mapper: N channels, empty slices, masks and label maps through augmentations."""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import transforms as T

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper
from brainseg_d2.data.intensity_augment import RandomLesionContrast
from brainseg_d2.data.io.png import encode_png, tile_channels
from brainseg_d2.data.transforms import RandomGamma
from brainseg_d2.labels import TARGETS


@pytest.fixture
def slice_dict(tmp_path):
    img = np.zeros((32, 40, 4), np.uint8)
    img[8:20, 4:14] = 180
    img[..., 3] = 7  # a fourth channel that must survive every transform
    path = tmp_path / "s.png"
    path.write_bytes(encode_png(tile_channels(img)))
    mask = np.zeros((32, 40), np.uint8)
    mask[8:20, 4:14] = 1
    labels = np.zeros((32, 40), np.uint8)
    labels[8:20, 4:14] = 2  # edema
    labels[10:14, 6:9] = 3  # enhancing
    cv2.imwrite(str(tmp_path / "l.png"), labels)
    rle = mask_util.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode()
    ann = {"bbox": [4, 8, 10, 12], "bbox_mode": 1, "segmentation": rle, "category_id": 2}
    return {
        "file_name": str(path), "height": 32, "width": 40, "image_id": 7,
        "volume_id": "v1", "slice_index": 3, "annotations": [ann],
        "sem_seg_file_name": str(tmp_path / "l.png"),
    }


def _mapper(is_train, augmentations, **kwargs):
    return BrainSegDatasetMapper(is_train, augmentations=augmentations, num_channels=4, **kwargs)


def test_flip_moves_mask_with_image_and_keeps_volume_keys(slice_dict):
    mapper = _mapper(True, [T.RandomFlip(prob=1.0)])
    out = mapper(slice_dict)
    assert out["volume_id"] == "v1" and out["slice_index"] == 3
    image = out["image"].numpy()  # (4, H, W)
    assert image.shape == (4, 32, 40) and (image[3] == 7).all()
    masks = out["instances"].gt_masks.tensor.numpy()
    assert masks.shape == (1, 32, 40)
    assert masks[0, 8:20, 26:36].all() and masks[0].sum() == 120  # columns 4..13 -> 26..35
    assert (image[0][masks[0]] == 180).all()
    assert out["instances"].gt_classes.tolist() == [2]
    assert out["instances"].gt_boxes.tensor.tolist() == [[26.0, 8.0, 36.0, 20.0]]


def test_empty_slice_gives_empty_instances(slice_dict):
    slice_dict["annotations"] = []
    out = _mapper(True, [])(slice_dict)
    assert len(out["instances"]) == 0


def test_inference_drops_annotations(slice_dict):
    out = _mapper(False, [])(slice_dict)
    assert "annotations" not in out and "instances" not in out and "sem_seg" not in out
    assert tuple(out["image"].shape) == (4, 32, 40)


def test_sem_seg_targets_are_category_masks_of_every_labelled_pixel(slice_dict):
    regions = list(TARGETS["regions"].categories.values())  # WT, TC, ET
    out = _mapper(True, [T.RandomFlip(prob=1.0)], sem_seg_categories=regions)(slice_dict)
    sem = out["sem_seg"].numpy()
    assert sem.shape == (3, 32, 40) and sem.dtype == bool
    assert sem[0].sum() == 120 and sem[0, 8:20, 26:36].all()  # WT: edema + enhancing, flipped
    assert sem[1].sum() == sem[2].sum() == 12  # TC = ET here (no necrosis)
    assert sem[2, 10:14, 31:34].all()


def test_resize_and_rotation_keep_every_channel_and_the_label_map(slice_dict):
    augs = [T.ResizeShortestEdge(64, 200), T.RandomRotation([30, 30], expand=False)]
    out = _mapper(True, augs, sem_seg_categories=[(2, 3)])(slice_dict)
    image, sem = out["image"].numpy(), out["sem_seg"].numpy()
    assert image.shape == (4, 64, 80) and sem.shape == (1, 64, 80)
    inside = np.abs(np.mgrid[0:64, 0:80] - np.array([32, 40])[:, None, None]).max(0) < 20
    assert (image[3][inside] == 7).all()  # resampled per channel, value kept
    assert 0 < sem.sum() < 64 * 80 and (image[0][sem[0]] > 100).mean() > 0.9


def test_wrong_channel_count_names_the_file(slice_dict):
    mapper = BrainSegDatasetMapper(False, augmentations=[], num_channels=3)
    with pytest.raises(ValueError, match="s.png"):
        mapper(slice_dict)


def test_from_config_builds_mri_augmentations():
    cfg = get_brainseg_cfg()
    train = BrainSegDatasetMapper(cfg, is_train=True)
    names = [type(a).__name__ for a in train.augmentations.augs]
    assert names[0] == "ResizeShortestEdge"
    for expected in ("RandomFlip", "RandomRotation", "RandomZoom"):
        assert expected in names
    applied = [type(a.aug).__name__ for a in train.augmentations.augs if hasattr(a, "aug")]
    assert applied == ["RandomBiasField", "RandomChannelContrast", "RandomChannelGamma",
                       "RandomNoise"]  # per channel, each with CHANNEL_PROB
    test = BrainSegDatasetMapper(cfg, is_train=False)
    assert [type(a).__name__ for a in test.augmentations.augs] == ["ResizeShortestEdge"]
    cfg.BRAINSEG.AUGMENT.LESION_CONTRAST = (0.8, 1.25)
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [40.0] * 12, [50.0] * 12
    cfg.BRAINSEG.INPUT.CONTEXT_SLICES = 1
    first = BrainSegDatasetMapper(cfg, is_train=True).augmentations.augs
    lesion = [a.aug for a in first if isinstance(getattr(a, "aug", None), RandomLesionContrast)]
    assert len(lesion) == 1 and lesion[0].sequences == 4  # 12 channels, 3 slices of 4


def test_sagittal_training_slices_get_no_horizontal_flip():
    # On a sagittal slice a horizontal flip swaps front and back: not an anatomy.
    from detectron2.data import MetadataCatalog

    cfg = get_brainseg_cfg()
    for name, axis in (("flip_axial_train", "axial"), ("flip_sagittal_train", "sagittal")):
        MetadataCatalog.get(name).set(slice_axis=axis)
    cfg.DATASETS.TRAIN = ("flip_axial_train",)
    names = [type(a).__name__ for a in BrainSegDatasetMapper(cfg, is_train=True).augmentations.augs]
    assert "RandomFlip" in names
    cfg.DATASETS.TRAIN = ("flip_axial_train", "flip_sagittal_train")
    names = [type(a).__name__ for a in BrainSegDatasetMapper(cfg, is_train=True).augmentations.augs]
    assert "RandomFlip" not in names and "RandomRotation" in names


def test_input_crop_crops_image_masks_and_label_map_in_training(slice_dict):
    cfg = get_brainseg_cfg()
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", (16, 20)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (16,), 1000  # no resize after the crop
    augs = BrainSegDatasetMapper.from_config(cfg, is_train=True)["augmentations"]
    assert type(augs[0]).__name__ == "RandomCrop"
    assert "RandomCrop" not in [type(a).__name__
                                for a in BrainSegDatasetMapper(cfg, is_train=False)
                                .augmentations.augs]  # fmt: skip
    regions = list(TARGETS["regions"].categories.values())
    mapper = _mapper(True, [augs[0]], sem_seg_categories=regions)
    np.random.seed(0)
    for _ in range(10):
        out = mapper(slice_dict)
        image, sem = out["image"].numpy(), out["sem_seg"].numpy()
        assert image.shape == (4, 16, 20) and sem.shape[1:] == (16, 20)
        assert (image[3] == 7).all()
        bright = image[0] == 180  # the cropped part of the lesion, in image, WT and mask
        assert (sem[0] == bright).all()
        masks = out["instances"].gt_masks.tensor.numpy()
        assert (masks.any(axis=0) == bright).all()
        for box, m in zip(out["instances"].gt_boxes.tensor.tolist(), masks):
            ys, xs = np.nonzero(m)
            assert box == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_random_gamma_is_monotonic_and_keeps_range():
    img = np.tile(np.arange(256, dtype=np.uint8), (2, 1))[..., None].repeat(4, 2)
    out = RandomGamma(2.0, 2.0).get_transform(img).apply_image(img)
    assert out[0, 0, 0] == 0 and out[0, 255, 0] == 255
    assert np.all(np.diff(out[0, :, 0]) >= 0)
    assert out[0, 128, 0] < 128  # gamma > 1 darkens mid-tones


def test_zoom_keeps_label_values_nearest_neighbour(slice_dict):
    """Detectron2 0.6 resamples label maps bilinearly in ExtentTransform (0 next to 2
    becomes 1); the mapper must not invent tissue codes."""
    from brainseg_d2.data.transforms import RandomZoom

    out = _mapper(True, [RandomZoom(1.37, 1.37)], sem_seg_categories=[(1,), (2,), (3,)])(
        slice_dict
    )
    sem = out["sem_seg"].numpy()
    assert not sem[0].any()  # no necrosis anywhere in the source labels
    assert sem[1].any() and sem[2].any()


def test_context_slices_are_stacked_with_zeros_for_missing_neighbours(tmp_path):
    from brainseg_d2.data.dataset_mapper import with_context

    folder = tmp_path / "vol"
    folder.mkdir()
    slices = {s: np.full((6, 5, 2), 10 * s + 1, np.uint8) for s in (3, 4, 6)}
    for s, img in slices.items():
        (folder / f"{s:04d}.png").write_bytes(encode_png(tile_channels(img)))
    d = {"file_name": str(folder / "0004.png"), "height": 6, "width": 5, "image_id": 1,
         "slice_index": 4, "annotations": []}  # fmt: skip
    mapper = BrainSegDatasetMapper(False, augmentations=[], num_channels=2, context_slices=2)
    image = mapper(d)["image"].numpy()  # slices 2..6: 2 missing, 5 missing
    assert image.shape == (10, 6, 5)
    assert [int(image[c].max()) for c in range(10)] == [0, 0, 31, 31, 41, 41, 0, 0, 61, 61]
    same = with_context(lambda s: slices.get(s), 4, 2)
    np.testing.assert_array_equal(same.transpose(2, 0, 1), image)


def test_slice_channels_splits_pixel_mean_over_context_slices():
    from brainseg_d2.data.dataset_mapper import slice_channels

    cfg = get_brainseg_cfg()
    cfg.MODEL.PIXEL_MEAN = [40.0] * 12
    cfg.BRAINSEG.INPUT.CONTEXT_SLICES = 1
    assert slice_channels(cfg) == 4
    cfg.BRAINSEG.INPUT.CONTEXT_SLICES = 2
    with pytest.raises(ValueError, match="12 values, not a multiple of the 5 slices"):
        slice_channels(cfg)
