"""The plugin's ``Trainer(DefaultTrainer)`` and config set-up.

The Trainer overrides only what it must: the data loaders (MRI mapper), the
evaluators (volume metrics next to COCO AP) and the hooks (periodic volume
evaluation with best-checkpoint keeping).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from detectron2.data import (
    DatasetCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper
from brainseg_d2.data.datasets import check_datasets_exist, dataset_root, register_all
from brainseg_d2.engine.hooks import EarlyStop, build_eval_hooks
from brainseg_d2.evaluation.evaluator import BrainSegEvaluator

logger = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("http://", "https://", "detectron2://", "catalog://")


class Trainer(DefaultTrainer):
    """DefaultTrainer with the MRI mapper, volume evaluators and best-checkpoint hook."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=BrainSegDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=BrainSegDatasetMapper(cfg, False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluators = [BrainSegEvaluator.from_config(cfg, dataset_name, output_folder)]
        if cfg.BRAINSEG.EVAL.COCO_AP:
            # The pure-Python COCO eval works with or without Detectron2's compiled ops.
            evaluators.append(COCOEvaluator(dataset_name, output_dir=output_folder,
                                            use_fast_impl=False))
        return DatasetEvaluators(evaluators)

    def build_hooks(self):
        """Detectron2's hooks plus best checkpoint / early stop right after ``EvalHook``."""
        hooks = super().build_hooks()
        at = next(i for i, h in enumerate(hooks) if isinstance(h, d2_hooks.EvalHook)) + 1
        hooks[at:at] = build_eval_hooks(self.cfg, self.checkpointer)
        return hooks

    def train(self):
        """Train; an early stop (``BRAINSEG.EVAL.EARLY_STOP_PATIENCE``) ends it normally.

        After an early stop ``model_final.pth`` holds the last weights, as after a
        complete run; ``model_best.pth`` the best ones.
        """
        try:
            return super().train()
        except EarlyStop:
            self.checkpointer.save("model_final", iteration=self.iter)
            comm.synchronize()
            return getattr(self, "_last_eval_results", None)


def ensure_weights_available(cfg) -> None:
    """Fail early, clearly, when ``MODEL.WEIGHTS`` is remote and cannot be fetched.

    Model-zoo URLs are fetched (and cached) by Detectron2's PathManager; offline,
    that fails deep inside the checkpointer. Resolve it here instead.
    """
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        return
    if weights.startswith(_REMOTE_PREFIXES):
        try:
            PathManager.get_local_path(weights)
        except Exception as e:  # network errors come in many types (URLError, OSError, ...)
            raise ValueError(
                f"cannot download MODEL.WEIGHTS {weights} ({type(e).__name__}: {e}). Offline? "
                "Train from scratch with `MODEL.WEIGHTS \"\"` (use a config with trainable "
                "norms, e.g. GN, such as configs/phantom/*), or download the file elsewhere "
                "and pass `MODEL.WEIGHTS /path/to/model_final.pkl`."
            ) from None
    elif not Path(weights).is_file():
        raise ValueError(f"MODEL.WEIGHTS {weights} does not exist")


def build_cfg_from_args(args):
    """Build the frozen config from ``default_argument_parser`` args, with clear errors.

    Registers the converted datasets under the datasets root, merges the config
    file and the trailing ``KEY VALUE`` opts, and checks that every dataset the
    config names exists and is not empty.

    Raises:
        ValueError: for a bad config file or key, a missing or empty dataset, or
            unreachable weights; the message names the culprit.
    """
    cfg = get_brainseg_cfg()
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file, allow_unsafe=False)
        cfg.merge_from_list(args.opts)
    except (KeyError, ValueError, AssertionError, FileNotFoundError) as e:
        msg = str(e).strip("'\"")
        raise ValueError(f"bad config ({args.config_file or 'opts'}): {msg}") from None
    cfg.freeze()
    register_all(dataset_root(cfg.BRAINSEG.DATASET_ROOT))
    check_datasets_exist(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if not args.eval_only:
        for name in cfg.DATASETS.TRAIN:
            DatasetCatalog.get(name)  # lazy loader raises ValueError if empty or unreadable
        ensure_weights_available(cfg)
    return cfg
