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


def test_bf16_step_computes_in_bfloat16_and_keeps_float32_weights(phantom_dataset, tmp_path):
    from detectron2.utils.events import EventStorage

    from brainseg_d2.engine import Trainer
    from brainseg_d2.engine.precision import BF16Trainer

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
