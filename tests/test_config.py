"""Every YAML config loads safely, the Detectron2 way too; ``_BASE_: zoo://`` resolves;
bad keys fail clearly; :func:`setup_cfg` is every command's way in."""

from __future__ import annotations

from pathlib import Path

import pytest
from detectron2.config import get_cfg

from brainseg_d2.config import add_brainseg_config, get_brainseg_cfg, setup_cfg

CONFIG_DIR = Path(__file__).parents[1] / "configs"
#: The model zoo's Mask R-CNN R50-FPN, copied: not a brainseg config of its own.
ZOO_COPY = CONFIG_DIR / "Base-Mask-RCNN-FPN.yaml"
CONFIGS = sorted(str(p) for p in CONFIG_DIR.rglob("*.yaml") if p != ZOO_COPY)
INSTANT = str(CONFIG_DIR / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml")


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


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda p: Path(p).name)
def test_config_loads_the_detectron2_way(config_file):
    """``add_brainseg_config(get_cfg())`` + ``merge_from_file`` gives what ``setup_cfg`` gives."""
    cfg = get_cfg()
    add_brainseg_config(cfg)
    cfg.merge_from_file(config_file, allow_unsafe=False)
    assert cfg == setup_cfg(config_file)


def test_zoo_copy_equals_the_model_zoo(tmp_path):
    f = tmp_path / "zoo.yaml"
    f.write_text('_BASE_: "zoo://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"\n')
    from_zoo, copy = get_brainseg_cfg(), get_brainseg_cfg()
    from_zoo.merge_from_file(str(f), allow_unsafe=False)
    copy.merge_from_file(str(ZOO_COPY), allow_unsafe=False)
    assert copy == from_zoo


def test_setup_cfg_merges_opts_and_freezes():
    cfg = setup_cfg(INSTANT, ["SOLVER.MAX_ITER", "7", "BRAINSEG.POSTPROCESS.ENABLED", False])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.BRAINSEG.POSTPROCESS.ENABLED is False
    assert cfg.is_frozen()
    assert not setup_cfg(INSTANT, freeze=False).is_frozen()


@pytest.mark.parametrize(
    "config_file, opts, message",
    [
        ("missing.yaml", [], "bad config (missing.yaml)"),
        (INSTANT, ["NOT_A.KEY", "1"], "bad config override on the command line: Non-existent"),
        (INSTANT, ["SOLVER.MAX_ITER"], "bad config override on the command line"),
        (INSTANT, ["SOLVER.MAX_ITER", "7", "--batch-size", "2"],
         "--batch-size comes after the KEY VALUE config overrides"),
    ],
    ids=["missing-file", "unknown-key", "odd-opts", "option-after-overrides"],
)
def test_setup_cfg_errors_are_one_line(config_file, opts, message):
    with pytest.raises(ValueError) as err:
        setup_cfg(config_file, opts)
    assert message in str(err.value) and "\n" not in str(err.value)


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
