"""The Trainer's parts that make it behave the same on every Detectron2 install."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTANT = ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"


@pytest.fixture
def instant_cfg(phantom_dataset, tmp_path):
    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.datasets import register_all

    register_all(phantom_dataset["root"])
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path)])
    cfg.freeze()
    return cfg


def test_checkpoint_holds_optimizer_state(instant_cfg, caplog):
    """Detectron2 v0.6 did not checkpoint it; upstream main does; the Trainer always does."""
    from brainseg_d2.engine import Trainer

    trainer = Trainer(instant_cfg)
    state = trainer.state_dict()
    assert "optimizer" in state["_trainer"]
    trainer.load_state_dict(state)
    v06 = {k: v for k, v in state.items() if k != "_trainer"}  # as Detectron2 v0.6 saved it
    with caplog.at_level(logging.WARNING):
        trainer.load_state_dict(v06)
    assert "no optimizer state" in caplog.text


def test_train_sampler_is_seeded_from_the_global_rng(instant_cfg, monkeypatch):
    """As Detectron2 v0.6 seeds it (upstream main uses SEED itself): one slice order on both."""
    from brainseg_d2.engine import trainer as trainer_mod

    seeds = []
    real = trainer_mod.TrainingSampler

    def spy(size, seed="not given", **kwargs):
        seeds.append(seed)
        return real(size, seed=seed, **kwargs)

    monkeypatch.setattr(trainer_mod, "TrainingSampler", spy)
    trainer_mod.Trainer.build_train_loader(instant_cfg)
    assert seeds == [None]  # None: TrainingSampler draws it from the seeded global RNG


def test_trainer_adapts_three_channel_weights_to_the_mri_channels(instant_cfg, tmp_path):
    """Fine-tuning from zoo (RGB) weights: the first convolution is adapted, not skipped."""
    import torch

    from brainseg_d2.engine import Trainer
    from brainseg_d2.modeling.weights import adapt_input_conv

    trainer = Trainer(instant_cfg)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    key = "backbone.bottom_up.stem.conv1.weight"
    assert state[key].shape[1] == 4
    rgb = torch.randn(state[key].shape[0], 3, *state[key].shape[2:])
    state[key] = rgb
    torch.save({"model": state}, tmp_path / "rgb_weights.pth")
    trainer.checkpointer.resume_or_load(str(tmp_path / "rgb_weights.pth"), resume=False)
    loaded = trainer.model.state_dict()[key]
    torch.testing.assert_close(loaded, adapt_input_conv(rgb, 4))
