"""bfloat16 autocast training (BRAINSEG.SOLVER.BF16) on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
INSTANT = ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"


def _cfg(phantom_dataset, tmp_path, *opts):
    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.datasets import register_all

    register_all(phantom_dataset["root"])
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), *opts])
    cfg.freeze()
    return cfg


@pytest.fixture
def native(monkeypatch):
    """Make the Trainer see a device with (True) or without (False) native bfloat16."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr("brainseg_d2.engine.trainer.native_bf16", lambda device: value)

    return set_native


def test_bf16_step_computes_in_bfloat16_and_keeps_float32_weights(
    phantom_dataset, tmp_path, native
):
    from detectron2.utils.events import EventStorage

    from brainseg_d2.engine import Trainer
    from brainseg_d2.engine.precision import BF16Trainer

    native(True)  # autocast runs (emulated) on any CPU; the Trainer asks the hardware first
    trainer = Trainer(_cfg(phantom_dataset, tmp_path, "BRAINSEG.SOLVER.BF16", "True"))
    assert isinstance(trainer._trainer, BF16Trainer)
    dtypes = []
    stem = trainer.model.backbone.bottom_up.stem.conv1
    stem.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with EventStorage(0) as storage:
        trainer.iter = trainer._trainer.iter = 0
        trainer._trainer.storage = storage
        trainer.run_step()
    assert dtypes == [torch.bfloat16]
    losses = {k: v for k, v in storage.latest().items() if k.startswith("loss")}
    assert len(losses) >= 5 and all(torch.isfinite(torch.tensor(v[0])) for v in losses.values())
    params = dict(trainer.model.named_parameters())
    assert all(p.dtype == torch.float32 for p in params.values())
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > len(params) // 2  # the optimizer stepped


def test_float32_is_the_default(phantom_dataset, tmp_path):
    from detectron2.engine import SimpleTrainer

    from brainseg_d2.engine import Trainer
    from brainseg_d2.engine.precision import BF16Trainer

    trainer = Trainer(_cfg(phantom_dataset, tmp_path))
    assert type(trainer._trainer) is SimpleTrainer and not isinstance(trainer._trainer, BF16Trainer)


def test_bf16_and_fp16_amp_together_is_an_error(phantom_dataset, tmp_path):
    from brainseg_d2.engine import Trainer

    cfg = _cfg(
        phantom_dataset, tmp_path, "BRAINSEG.SOLVER.BF16", "True", "SOLVER.AMP.ENABLED", "True"
    )
    with pytest.raises(ValueError, match="choose one precision"):
        Trainer(cfg)


def test_bf16_falls_back_to_float32_where_the_device_only_emulates_it(
    phantom_dataset, tmp_path, native, caplog
):
    from detectron2.engine import SimpleTrainer

    from brainseg_d2.engine import Trainer

    native(False)
    with caplog.at_level("WARNING", logger="brainseg_d2.engine.trainer"):
        trainer = Trainer(_cfg(phantom_dataset, tmp_path, "BRAINSEG.SOLVER.BF16", "True"))
    assert type(trainer._trainer) is SimpleTrainer
    (message,) = [r.getMessage() for r in caplog.records if "BF16" in r.getMessage()]
    assert "CPU has no native bfloat16" in message and "float32" in message


def test_native_bf16_follows_the_cpu_flags(monkeypatch):
    from brainseg_d2.engine.precision import native_bf16

    for avx512_bf16, amx, expected in [(False, False, False), (True, False, True),
                                       (False, True, True)]:  # fmt: skip
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert native_bf16("cpu") is expected
    assert native_bf16("mps") is False
    if not torch.cuda.is_available():
        assert native_bf16("cuda") is False
