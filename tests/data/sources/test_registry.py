"""brainseg_d2.data.sources: the layout registry and the case protocol."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.data.sources import (
    LAYOUTS,
    Case,
    SliceCase,
    SliceFile,
    SourceError,
    find_cases,
    get_layout,
)
from brainseg_d2.labels import get_target
from brainseg_d2.structures import PreprocessOptions


def test_layouts_in_the_order_the_cli_lists_them():
    assert LAYOUTS == ("brats", "decathlon", "pairs", "csv", "tcga_lgg", "via")
    detected = {name for name in LAYOUTS if get_layout(name).detect}
    assert detected == {"brats", "decathlon", "tcga_lgg", "via"}


def test_unknown_layout_names_the_known_ones(tmp_path):
    with pytest.raises(SourceError, match="unknown layout 'nifti'; choose auto or one of brats"):
        find_cases(tmp_path, "nifti")


def test_a_3d_case_checks_and_loads_itself(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 1:3, 1:4] = np.arange(6).reshape(2, 3) + 1
    labels = np.zeros((3, 4, 5), np.uint8)
    labels[1, 2, 2] = 255
    for name, data in (("image", array), ("seg", labels)):
        sitk.WriteImage(sitk.GetImageFromArray(data), str(tmp_path / f"{name}.nii.gz"))
    case = Case("c", "c", {"image": str(tmp_path / "image.nii.gz")},
                str(tmp_path / "seg.nii.gz"), "binary")  # fmt: skip
    case.check(["image"])
    with pytest.raises(ValueError, match="case c: missing channel 'flair'"):
        case.check(["flair"])
    pre = case.load(PreprocessOptions(channels=("image",)), get_target("binary"))
    assert pre.slices.shape == (3, 4, 5, 1)
    assert pre.brain_any.tolist() == [False, True, False]
    assert pre.tissue[1, 2, 2] > 0 and pre.tissue.sum() == pre.tissue[1, 2, 2]  # 255 counts as 1
    assert case.source_record() == {"channels": dict(case.channels), "mask": case.mask}


def test_a_slice_case_names_the_bad_mask_file(tmp_path):
    import cv2

    files = []
    for n in range(2):
        image, mask = tmp_path / f"c_{n}.png", tmp_path / f"c_{n}_mask.png"
        assert cv2.imwrite(str(image), np.full((4, 5, 3), 10 + n, np.uint8))
        assert cv2.imwrite(str(mask), np.full((4, 5), 7 * n, np.uint8))
        files.append(SliceFile(n, str(image), str(mask)))
    case = SliceCase("c", "c", "tcga_lgg", ("r", "g", "b"), tuple(files))
    case.check(["r"], get_target("binary"))
    with pytest.raises(ValueError, match=r"c_1_mask.png: label values \[7\]"):
        case.load(PreprocessOptions(channels=("r", "g", "b")), get_target("binary"))
