"""Training hooks: keep the best checkpoint and stop early, by a validation metric.

Detectron2's ``EvalHook`` evaluates every ``TEST.EVAL_PERIOD`` iterations and after
the last one, and puts the flattened metrics (``brainseg/volume_dice_mean_post``,
``segm/AP``, ...) into the ``EventStorage``, hence into ``metrics.json`` and
TensorBoard. The hooks here read the metric from the storage, so they must come
*after* ``EvalHook`` in the hook list (:func:`build_eval_hooks` says where).

With one test dataset the metric is ``<task>/<key>`` (``brainseg/...``); with
several, ``DefaultTrainer.test`` nests results by dataset, so the metric must read
``<dataset>/<task>/<key>``.
"""

from __future__ import annotations

import logging
import math

from detectron2.engine import hooks as d2_hooks
from detectron2.engine.train_loop import HookBase
from detectron2.utils import comm

__all__ = ["BestCheckpointer", "EarlyStop", "EarlyStopping", "build_eval_hooks", "metric_mode"]

logger = logging.getLogger(__name__)


def metric_mode(metric: str) -> str:
    """``"min"`` for distances and losses (``hd95``, ``loss``), else ``"max"``.

    Derived from the name so that BEST_METRIC is the only key to set.
    """
    name = metric.lower()
    return "min" if ("hd95" in name or "loss" in name) else "max"


def _is_eval_iter(trainer, period: int) -> bool:
    """The iterations at which ``EvalHook.after_step`` evaluates (the last one excluded)."""
    next_iter = trainer.iter + 1
    return period > 0 and next_iter % period == 0 and next_iter != trainer.max_iter


class BestCheckpointer(d2_hooks.BestCheckpointer):
    """Detectron2's ``BestCheckpointer`` that also checks the final evaluation.

    Detectron2 v0.6 checks only the periodic evaluations, so a best model found
    by the evaluation after the last iteration was never saved (later versions
    added the same ``after_train``). After the loop the storage's iteration is
    ``max_iter``, one past the last iteration run; a checkpoint records the last
    iteration run (``--resume`` starts after it), so the best checkpoint of the
    final evaluation records ``max_iter - 1``, as ``model_final.pth`` does.
    Saving it also points ``last_checkpoint`` at it: the same weights and
    iteration as the final model.
    """

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:  # same condition as EvalHook
            # The trainer's own state (saved in the checkpoint, and what an upstream
            # Detectron2 resumes from) must say the last iteration run too.
            after, self.trainer.iter = self.trainer.iter, self.trainer.max_iter - 1
            try:
                self._best_checking()
            finally:
                self.trainer.iter = after

    def _best_checking(self):
        found = self.trainer.storage.latest().get(self._val_metric)
        if found is None:
            logger.warning(f"[BestCheckpointer] metric {self._val_metric} is not computed; "
                           "no best checkpoint is kept")
            return
        value, iteration = found
        iteration = min(iteration, self.trainer.max_iter - 1)  # the last iteration run
        if self.best_metric is not None and not self._compare(value, self.best_metric):
            logger.info(f"{self._val_metric} {value:.5f} at iteration {iteration}: not better "
                        f"than {self.best_metric:.5f} at iteration {self.best_iter}")
            return
        if not self._update_best(value, iteration):  # NaN or inf: never the best
            return
        self._checkpointer.save(self._file_prefix, iteration=iteration)
        logger.info(f"saved {self._file_prefix}: {self._val_metric} {value:.5f} at "
                    f"iteration {iteration}")


class EarlyStop(BaseException):
    """Raised by :class:`EarlyStopping` to leave the training loop.

    A ``BaseException`` on purpose: ``TrainerBase.train`` logs every ``Exception``
    as a failure with its traceback; this one passes through its ``finally``
    (``after_train`` hooks still run) to ``Trainer.train``, which catches it.
    """


class EarlyStopping(HookBase):
    """Stop training after ``patience`` evaluations without improvement of a metric.

    Checks after each periodic evaluation (same iterations as ``EvalHook``). The
    main process reads the metric; the decision is shared with every rank so that
    all leave the loop at the same iteration. A NaN metric never improves; a
    missing metric is warned about once and never stops training.
    """

    def __init__(self, eval_period: int, val_metric: str, patience: int, mode: str = "max"):
        """
        Args:
            eval_period: the ``EvalHook`` period (``TEST.EVAL_PERIOD``).
            val_metric: key in the ``EventStorage``, e.g. ``brainseg/volume_dice_mean_post``.
            patience: number of evaluations without improvement that stops training (>= 1).
            mode: ``"max"`` or ``"min"``: whether larger or smaller is better.
        """
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self._period = eval_period
        self._metric = val_metric
        self._patience = patience
        self._mode = mode
        self.best_value: float | None = None
        self.best_iter: int | None = None
        self.num_bad_evals = 0
        self._warned = False

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self._mode == "max" else value < self.best_value

    def _should_stop(self) -> bool:
        latest = self.trainer.storage.latest().get(self._metric)
        if latest is None:
            if not self._warned:
                logger.warning(f"[EarlyStopping] metric {self._metric} is not computed; "
                               "early stopping is inactive")
                self._warned = True
            return False
        value, iteration = latest
        if self._improved(value):
            self.best_value, self.best_iter, self.num_bad_evals = float(value), iteration, 0
        else:
            self.num_bad_evals += 1
        return self.num_bad_evals >= self._patience

    def after_step(self):
        if not _is_eval_iter(self.trainer, self._period):
            return
        stop = self._should_stop() if comm.is_main_process() else False
        if comm.get_world_size() > 1:
            stop = comm.all_gather(stop)[0]  # rank 0 alone holds the metrics
        if stop:
            best = (
                "no valid value yet"
                if self.best_value is None
                else f"best {self.best_value:.4f} after iteration {self.best_iter}"
            )
            message = (
                f"Early stop after iteration {self.trainer.iter}: {self._metric} has not improved "
                f"for {self._patience} evaluations ({best})"
            )
            logger.info(message)
            raise EarlyStop(message)


def build_eval_hooks(cfg, checkpointer) -> list[HookBase]:
    """Best-checkpoint and early-stop hooks from ``cfg``; insert them right after ``EvalHook``.

    Nothing is built without periodic evaluation (``TEST.EVAL_PERIOD`` 0), test
    datasets or ``BRAINSEG.EVAL.BEST_METRIC``. The best checkpoint is
    ``model_best.pth`` (main process only, as the metrics live there);
    ``EARLY_STOP_PATIENCE`` 0 disables early stopping.

    Args:
        cfg: the trainer's config.
        checkpointer: the trainer's ``DetectionCheckpointer``.

    Returns:
        hooks in the order they must run.
    """
    period = cfg.TEST.EVAL_PERIOD
    metric = cfg.BRAINSEG.EVAL.BEST_METRIC
    if period <= 0 or not cfg.DATASETS.TEST or not metric:
        return []
    mode = metric_mode(metric)
    hooks: list[HookBase] = []
    if comm.is_main_process():
        hooks.append(BestCheckpointer(period, checkpointer, metric, mode=mode,
                                      file_prefix="model_best"))
    if cfg.BRAINSEG.EVAL.EARLY_STOP_PATIENCE > 0:
        hooks.append(EarlyStopping(period, metric, cfg.BRAINSEG.EVAL.EARLY_STOP_PATIENCE, mode))
    return hooks
