"""Every YAML config loads safely; ``_BASE_: zoo://`` resolves; bad keys fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainseg_d2.config import get_brainseg_cfg

CONFIGS = sorted(str(p) for p in (Path(__file__).parents[1] / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {Path(c).name for c in CONFIGS}
    assert any("instant_test" in n for n in names)
    assert any("R_101" in n for n in names) and any("R_50" in n for n in names)


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: Path(p).name)
def test_config_loads_without_unsafe_yaml(config_file):
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(config_file, allow_unsafe=False)
    assert cfg.MODEL.MASK_ON
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert cfg.INPUT.MASK_FORMAT == "bitmask"
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS is False
    assert "POSTPROCESS" in cfg.BRAINSEG


def test_zoo_base_inherits_model_zoo_settings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        '_BASE_: "zoo://COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml"\n'
        "SOLVER:\n  MAX_ITER: 7\n"
    )
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(f), allow_unsafe=False)
    assert cfg.MODEL.RESNETS.DEPTH == 101  # from the zoo file
    assert cfg.MODEL.BACKBONE.NAME == "build_resnet_fpn_backbone"  # from the zoo's own _BASE_
    assert cfg.SOLVER.MAX_ITER == 7  # our override on top


def test_unknown_zoo_base_names_it(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text('_BASE_: "zoo://COCO-InstanceSegmentation/nope.yaml"\n')
    with pytest.raises(ValueError, match="nope.yaml"):
        get_brainseg_cfg().merge_from_file(str(f), allow_unsafe=False)


def test_unknown_key_is_rejected(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("BRAINSEG:\n  NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        get_brainseg_cfg().merge_from_file(str(f), allow_unsafe=False)
