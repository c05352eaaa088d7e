"""Training hooks: best checkpoint by a validation metric, early stop, and a phantom run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import hooks as d2_hooks
from detectron2.engine.train_loop import HookBase, TrainerBase

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.engine.hooks import (
    BestCheckpointer,
    EarlyStop,
    EarlyStopping,
    build_eval_hooks,
    metric_mode,
)

ROOT = Path(__file__).resolve().parents[2]
INSTANT = str(ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml")
METRIC = "brainseg/volume_dice_mean_post"


# ---------------------------------------------------------------------------
# hooks on a loop without a model
# ---------------------------------------------------------------------------


class _Loop(TrainerBase):
    def run_step(self):
        pass


class _ScriptedEval(HookBase):
    """Puts the next scripted value where EvalHook would: periodically and after training."""

    def __init__(self, period: int, values: list[float]):
        self._period, self._values = period, iter(values)
        self.after_train_ran = False

    def _put(self):
        self.trainer.storage.put_scalars(**{METRIC: next(self._values)}, smoothing_hint=False)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._put()

    def after_train(self):
        self.after_train_ran = True
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._put()


class _FakeCheckpointer:
    def __init__(self):
        self.saved: list[tuple[str, int]] = []
        self.trainer_iters: list[int] = []
        self.loop = None

    def save(self, name, **extra):
        self.saved.append((name, extra["iteration"]))
        if self.loop is not None:
            self.trainer_iters.append(self.loop.iter)


@pytest.mark.parametrize(
    "values, mode, stop_iter, best",
    [
        ([0.5, 0.6, 0.6, 0.55, 0.9], "max", 7, (0.6, 3)),  # evals at iters 1, 3, 5, 7
        ([float("nan"), float("nan")], "max", 3, (None, None)),  # NaN never improves
        ([9.0, 8.0, 8.5, 8.5], "min", 7, (8.0, 3)),
    ],
    ids=["plateau", "nan", "min-mode"],
)
def test_early_stopping_after_patience_evaluations(values, mode, stop_iter, best, caplog):
    scripted = _ScriptedEval(2, values)
    stopper = EarlyStopping(2, METRIC, patience=2, mode=mode)
    loop = _Loop()
    loop.register_hooks([scripted, stopper])
    with caplog.at_level(logging.INFO, logger="brainseg_d2"), pytest.raises(EarlyStop):
        loop.train(0, 20)
    assert loop.iter == stop_iter
    assert scripted.after_train_ran  # after_train hooks still run
    assert (stopper.best_value, stopper.best_iter) == best
    assert sum("Early stop after iteration" in r.message for r in caplog.records) == 1


def test_early_stopping_inactive_without_metric(caplog):
    loop = _Loop()
    loop.register_hooks([EarlyStopping(1, METRIC, patience=1)])
    with caplog.at_level(logging.WARNING, logger="brainseg_d2"):
        loop.train(0, 5)
    assert loop.iter == 5
    assert sum("is not computed" in r.message for r in caplog.records) == 1


def test_early_stopping_rejects_bad_arguments():
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(1, METRIC, patience=0)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(1, METRIC, patience=1, mode="best")


def test_best_checkpointer_also_checks_the_final_evaluation():
    checkpointer = _FakeCheckpointer()
    loop = checkpointer.loop = _Loop()
    loop.register_hooks([_ScriptedEval(2, [0.5, 0.4, 0.7]),
                         BestCheckpointer(2, checkpointer, METRIC, file_prefix="model_best")])
    loop.train(0, 6)  # evals after iterations 1 and 3, and after training (iteration 5)
    # The final one records the last iteration run, as model_final does: --resume goes on
    # from iteration 6, not 7.
    assert checkpointer.saved == [("model_best", 1), ("model_best", 5)]
    assert checkpointer.trainer_iters == [1, 5]  # the trainer's own state says so too
    assert loop.iter == 6  # and is put back after the save


@pytest.mark.parametrize(
    "metric, mode",
    [(METRIC, "max"), ("brainseg/volume_hd95_WT_post", "min"), ("segm/AP", "max"),
     ("total_loss", "min")],
)
def test_metric_mode(metric, mode):
    assert metric_mode(metric) == mode


@pytest.mark.parametrize(
    "opts, kinds",
    [
        (["TEST.EVAL_PERIOD", "0"], []),
        (["TEST.EVAL_PERIOD", "5"], [BestCheckpointer]),
        (["TEST.EVAL_PERIOD", "5", "BRAINSEG.EVAL.EARLY_STOP_PATIENCE", "3"],
         [BestCheckpointer, EarlyStopping]),
        (["TEST.EVAL_PERIOD", "5", "DATASETS.TEST", "()"], []),
    ],
    ids=["no-eval", "best-only", "best-and-early-stop", "no-test-set"],
)
def test_build_eval_hooks(opts, kinds):
    cfg = get_brainseg_cfg()
    cfg.merge_from_list(["DATASETS.TEST", "('x_val',)", *opts])
    assert [type(h) for h in build_eval_hooks(cfg, _FakeCheckpointer())] == kinds


# ---------------------------------------------------------------------------
# the Trainer on a converted phantom
# ---------------------------------------------------------------------------


def _val_few_slices() -> str:
    """Three tumour slices and one empty slice of the phantom's val volume.

    Inference on CPU costs about a second per slice; the other slices of the volume
    are then absent, hence empty in ground truth and prediction.
    """
    name = "eval_phantom_val_few"
    if name not in DatasetCatalog.list():
        dicts = DatasetCatalog.get("eval_phantom_val")
        tumour = [d for d in dicts if d["annotations"]]
        mid = len(tumour) // 2
        keep = tumour[mid - 2 : mid + 1] + [d for d in dicts if not d["annotations"]][:1]
        DatasetCatalog.register(name, lambda: keep)
        meta = MetadataCatalog.get("eval_phantom_val").as_dict()
        for key in ("name", "json_file"):  # COCOEvaluator converts the subset itself
            meta.pop(key)
        MetadataCatalog.get(name).set(**meta)
    return name


def _phantom_cfg(out_dir: Path, *opts):
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(INSTANT, allow_unsafe=False)
    cfg.merge_from_list([
        "DATASETS.TRAIN", "('eval_phantom_train',)", "DATASETS.TEST", f"('{_val_few_slices()}',)",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64",
        "TEST.DETECTIONS_PER_IMAGE", "10", "SOLVER.IMS_PER_BATCH", "1",
        "OUTPUT_DIR", str(out_dir), "SOLVER.CHECKPOINT_PERIOD", "100", *opts,
    ])
    cfg.freeze()
    return cfg


def test_phantom_training_keeps_best_checkpoint_and_logs_metrics(
    eval_phantom_dataset, tmp_path, caplog
):
    from brainseg_d2.engine import Trainer

    cfg = _phantom_cfg(tmp_path, "SOLVER.MAX_ITER", "2", "TEST.EVAL_PERIOD", "1")
    trainer = Trainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(d2_hooks.EvalHook) < kinds.index(BestCheckpointer)
    trainer.resume_or_load(resume=False)
    with caplog.at_level(logging.INFO, logger="brainseg_d2"):
        trainer.train()

    assert (tmp_path / "model_best.pth").is_file()
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu")["iteration"]
    assert torch.load(tmp_path / "model_best.pth", map_location="cpu")["iteration"] in (0, final)
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    evals = [r for r in records if METRIC in r]
    assert [r["iteration"] for r in evals] == [0, 2]  # periodic and final evaluation
    for key in (METRIC, "brainseg/volume_dice_mean_raw", "brainseg/volume_hd95_WT_post",
                "brainseg/lesion_dice_ET_raw", "segm/AP"):
        assert key in evals[-1], key
    assert any("BrainSeg metrics on eval_phantom_val_few" in r.message for r in caplog.records)
    out = tmp_path / "inference" / "eval_phantom_val_few"
    assert (out / "brainseg_cases.csv").is_file() and (out / "brainseg_summary.json").is_file()


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step()`")
def test_trainer_early_stop_ends_training_normally(eval_phantom_dataset, tmp_path, caplog):
    from brainseg_d2.engine import Trainer

    scores = iter([0.5, 0.4, 0.3])

    class ScriptedTrainer(Trainer):
        @classmethod
        def test(cls, cfg, model, evaluators=None):  # no inference: scripted metrics
            return {"brainseg": {"volume_dice_mean_post": next(scores)}}

        def run_step(self):  # no training either: only the loop and its hooks
            pass

    cfg = _phantom_cfg(tmp_path, "SOLVER.MAX_ITER", "10", "TEST.EVAL_PERIOD", "1",
                       "BRAINSEG.EVAL.EARLY_STOP_PATIENCE", "1", "BRAINSEG.SOLVER.EMA_DECAY", "0.5")
    trainer = ScriptedTrainer(cfg)
    trainer.resume_or_load(resume=False)
    with caplog.at_level(logging.INFO, logger="brainseg_d2"):
        trainer.train()  # returns normally
    assert trainer.iter == 1
    assert torch.load(tmp_path / "model_best.pth", map_location="cpu")["iteration"] == 0
    assert torch.load(tmp_path / "model_final.pth", map_location="cpu")["iteration"] == 1
    assert sum("Early stop after iteration 1" in r.message for r in caplog.records) == 1
    # The weight average replaced the weights before model_final.pth was written.
    assert any("moving average" in r.message for r in caplog.records)


def test_trainer_with_ema_saves_the_averaged_weights_as_final(eval_phantom_dataset, tmp_path):
    from brainseg_d2.engine import Trainer
    from brainseg_d2.engine.weight_average import WeightAverage

    cfg = _phantom_cfg(tmp_path, "SOLVER.MAX_ITER", "3", "BRAINSEG.SOLVER.EMA_DECAY", "0.5")
    trainer = Trainer(cfg)
    kinds = [type(h) for h in trainer._hooks]
    assert kinds.index(WeightAverage) < kinds.index(d2_hooks.PeriodicCheckpointer)
    trainer.resume_or_load(resume=False)
    trainer.train()
    hook = trainer._hooks[kinds.index(WeightAverage)]
    assert int(hook.average.n_averaged) == 3
    saved = torch.load(tmp_path / "model_final.pth", map_location="cpu")
    averaged = hook.average.module.state_dict()
    assert saved["trainer"]["hooks"]["WeightAverage"]  # resumable
    for name, value in averaged.items():
        assert torch.equal(saved["model"][name], value), name
