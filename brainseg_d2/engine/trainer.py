"""The plugin's ``Trainer(DefaultTrainer)`` and config set-up.

The Trainer overrides only what it must: the data loaders (MRI mapper; test
slices in batches), ``test`` (batches at once on CPU, engine/test_inference.py), the
evaluators (volume metrics next to COCO AP), the hooks (periodic volume
evaluation with best-checkpoint keeping), and ``__init__``, to wrap the model in
DDP the way CPU (gloo) processes need. Its behaviour does not depend on which
Detectron2 is installed (the Python-only v0.6 fallback or a build of upstream main).
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from pathlib import Path

from detectron2.data import (
    DatasetCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from brainseg_d2.config import setup_cfg
from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper
from brainseg_d2.data.datasets import check_datasets_exist, dataset_root, register_all
from brainseg_d2.engine.cfg_checks import (
    check_cfg_values,
    check_input_channels,
    check_num_classes,
)
from brainseg_d2.engine.distributed import create_ddp_model
from brainseg_d2.engine.hooks import EarlyStop, build_eval_hooks
from brainseg_d2.engine.precision import BF16Trainer, model_device_type, native_bf16
from brainseg_d2.engine.solver import build_optimizer
from brainseg_d2.engine.test_inference import (
    ConcurrentBatches,
    build_batched_test_loader,
    inference_batching,
)
from brainseg_d2.engine.weight_average import WeightAverage
from brainseg_d2.evaluation.evaluator import BrainSegEvaluator
from brainseg_d2.modeling.meta_arch import dense_head_only
from brainseg_d2.modeling.weights import BrainSegCheckpointer

logger = logging.getLogger(__name__)

_REMOTE_PREFIXES = ("http://", "https://", "detectron2://", "catalog://")


class Trainer(DefaultTrainer):
    """DefaultTrainer with the MRI mapper, volume evaluators and best-checkpoint hook."""

    def __init__(self, cfg):
        """``DefaultTrainer.__init__``, step for step, with the plugin's ``create_ddp_model``.

        Detectron2's passes CUDA ``device_ids`` to DDP for CPU models too, which
        fails in CPU multi-process (gloo) training.
        """
        super(DefaultTrainer, self).__init__()  # TrainerBase: DefaultTrainer's body follows
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        # Assume these objects must be constructed in this order.
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        # Iterations without the instance branch leave its parameters unused.
        unused = cfg.BRAINSEG.SOLVER.INSTANCE_PERIOD > 1
        model = create_ddp_model(model, broadcast_buffers=False, find_unused_parameters=unused)
        self._trainer = build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # Adapts a 3-channel (RGB) first convolution to the model's N MRI channels.
        self.checkpointer = BrainSegCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def state_dict(self):
        """The checkpointed state, with the optimizer's (and AMP scaler's), as upstream saves it.

        Detectron2 v0.6 left them out: a resumed run restarted with no momentum
        and, for one iteration, the first warm-up learning rate.
        """
        ret = super(DefaultTrainer, self).state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super(DefaultTrainer, self).load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning("The checkpoint has no optimizer state (written by Detectron2 v0.6?); "
                           "the optimizer starts afresh")

    @classmethod
    def build_optimizer(cls, cfg, model):
        """Detectron2's SGD, or AdamW with the same parameter groups and clipping.

        ``BRAINSEG.SOLVER.OPTIMIZER`` picks it; see :func:`build_optimizer`.
        """
        return build_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        """The MRI mapper; with the default sampler, the same slice order on every install.

        Detectron2 v0.6 seeds ``TrainingSampler`` from the global RNG (set by
        ``SEED``), upstream main with ``SEED`` itself, so one config trained on
        different slices in a different order on the two. The plugin makes the
        sampler itself, seeded the v0.6 way, so runs (and BENCHMARKS.md) reproduce
        on both.
        """
        mapper = BrainSegDatasetMapper(cfg, True)
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            return build_detection_train_loader(cfg, mapper=mapper)
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
        sampler = TrainingSampler(len(dataset), seed=None)  # None: drawn from the seeded RNG
        return build_detection_train_loader(cfg, mapper=mapper, dataset=dataset, sampler=sampler)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """The MRI mapper; lists of same-size slices (:func:`build_batched_test_loader`)."""
        return build_batched_test_loader(cfg, dataset_name, BrainSegDatasetMapper(cfg, False))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """``DefaultTrainer.test`` with batched (and, on CPU, concurrent) inference.

        The loader's lists of slices go through :class:`ConcurrentBatches`:
        ``BRAINSEG.INFERENCE.BATCH_SIZE`` slices per forward pass,
        ``CPU_CONCURRENT_BATCHES`` passes at once on CPU (engine/test_inference.py).
        When no evaluator reads ``instances`` (the volume evaluator with
        ``BRAINSEG.MASK_SOURCE semantic`` and ``EVAL.COCO_AP`` off), a
        :class:`BrainSegRCNN` skips its instance branch (:func:`dense_head_only`).
        """
        if evaluators is None:
            evaluators = [cls.build_evaluator(cfg, name) for name in cfg.DATASETS.TEST]
        elif isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        batch_size, workers = inference_batching(cfg)
        if batch_size * workers > 1:
            model = ConcurrentBatches(model, batch_size, workers)
        needs_instances = any(_uses_instances(e) for e in evaluators)
        with contextlib.nullcontext() if needs_instances else dense_head_only(model):
            return super().test(cfg, model, evaluators)

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
        """Detectron2's hooks plus best checkpoint / early stop right after ``EvalHook``.

        With ``BRAINSEG.SOLVER.EMA_DECAY`` a :class:`WeightAverage` follows the
        learning-rate scheduler.
        """
        hooks = super().build_hooks()
        at = next(i for i, h in enumerate(hooks) if isinstance(h, d2_hooks.EvalHook)) + 1
        hooks[at:at] = build_eval_hooks(self.cfg, self.checkpointer)
        if self.cfg.BRAINSEG.SOLVER.EMA_DECAY > 0:
            # Before the checkpointer and EvalHook, which read the final weights.
            at = next(i for i, h in enumerate(hooks) if isinstance(h, d2_hooks.LRScheduler)) + 1
            hooks.insert(at, WeightAverage(self.model, self.cfg.BRAINSEG.SOLVER.EMA_DECAY))
        return hooks

    def train(self):
        """Train; an early stop (``BRAINSEG.EVAL.EARLY_STOP_PATIENCE``) ends it normally.

        After an early stop ``model_final.pth`` holds the last weights (their moving
        average with ``BRAINSEG.SOLVER.EMA_DECAY``), as after a complete run;
        ``model_best.pth`` the best ones.
        """
        try:
            return super().train()
        except EarlyStop:
            for hook in self._hooks:
                if isinstance(hook, WeightAverage):
                    hook.apply()
            self.checkpointer.save("model_final", iteration=self.iter)
            comm.synchronize()
            return getattr(self, "_last_eval_results", None)


def _uses_instances(evaluator) -> bool:
    """Whether an evaluator reads the model's ``instances`` (unknown ones: yes)."""
    if isinstance(evaluator, DatasetEvaluators):
        return any(_uses_instances(e) for e in evaluator._evaluators)
    return bool(getattr(evaluator, "uses_instances", True))


def ensure_weights_available(cfg, weights: str | None = None) -> None:
    """Fail early, clearly, when ``weights`` (default ``MODEL.WEIGHTS``) cannot be had.

    Model-zoo URLs are fetched (and cached) by Detectron2's PathManager; offline,
    that fails deep inside the checkpointer. Resolve it here instead.
    """
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
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


def check_start_weights(cfg, resume: bool) -> None:
    """Read the weights training will start from, before ``OUTPUT_DIR`` is written.

    That is ``OUTPUT_DIR``'s last checkpoint with ``resume`` (where there is one),
    else ``MODEL.WEIGHTS``. A truncated file, or one that is not a checkpoint,
    would otherwise fail inside Detectron2's loader with a traceback, after the
    run's folder was made.

    A resumed run whose checkpoint already reached ``SOLVER.MAX_ITER`` is refused
    too: Detectron2 would train nothing and exit 0.

    Raises:
        ValueError: one line naming the file and what is wrong with it.
    """
    from brainseg_d2.checkpoint import read_checkpoint

    path = cfg.MODEL.WEIGHTS
    last = Path(cfg.OUTPUT_DIR) / "last_checkpoint"
    if resume and last.is_file():
        path = str(Path(cfg.OUTPUT_DIR) / last.read_text().strip())
        done = read_checkpoint(path).get("iteration")
        if isinstance(done, int) and done + 1 >= cfg.SOLVER.MAX_ITER:
            raise ValueError(
                f"--resume: {path} holds {done + 1} iterations and SOLVER.MAX_ITER is "
                f"{cfg.SOLVER.MAX_ITER}, so nothing is left to train; raise SOLVER.MAX_ITER to "
                "train further, or use --eval-only to evaluate it"
            )
        return
    if path.startswith(_REMOTE_PREFIXES):
        path = PathManager.get_local_path(path)  # cached by ensure_weights_available
    if path:
        read_checkpoint(path)


def build_step_trainer(cfg, model, data_loader, optimizer):
    """The object that runs one training step, by precision.

    ``BRAINSEG.SOLVER.BF16``: bfloat16 autocast (:class:`BF16Trainer`) on a device
    that runs bfloat16 natively (:func:`native_bf16`), else float32 with a warning:
    emulated, it made a step 13x slower (BENCHMARKS.md, "Training speed");
    else ``SOLVER.AMP.ENABLED``: Detectron2's float16 ``AMPTrainer`` (CUDA only);
    else float32 (``SimpleTrainer``).

    Raises:
        ValueError: both BF16 and AMP are on.
    """
    if cfg.BRAINSEG.SOLVER.BF16:
        if cfg.SOLVER.AMP.ENABLED:
            raise ValueError(
                "BRAINSEG.SOLVER.BF16 and SOLVER.AMP.ENABLED are both on: choose one precision"
            )
        device = model_device_type(model)
        if native_bf16(device):
            return BF16Trainer(model, data_loader, optimizer)
        logger.warning(
            "BRAINSEG.SOLVER.BF16 is on, but this %s has no native bfloat16 (%s): training "
            "in float32, which is faster here than emulated bfloat16",
            device.upper(),
            "AVX-512 BF16 or AMX" if device == "cpu" else "bf16 tensor cores",
        )
    return (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)


def build_cfg_from_args(args):
    """Build the frozen config from :func:`argument_parser` args, with clear errors.

    Merges the config file and the trailing ``KEY VALUE`` opts, checks values
    that cannot work, registers the converted datasets under the datasets root,
    and checks that every dataset the config names exists, is not empty and has
    ``MODEL.ROI_HEADS.NUM_CLASSES`` classes. Writes nothing (``OUTPUT_DIR`` is
    created later, by ``default_setup``).

    Raises:
        ValueError: no config file, a bad config file or key, a value that
            cannot work, a missing or empty dataset, or unreachable weights; one
            line that names the culprit and, for a value, the key and where it
            was set (the config file or the command line).
    """
    if not getattr(args, "config_file", ""):
        raise ValueError(
            "--config-file is required, e.g. --config-file "
            "configs/phantom/mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
        )
    cfg = setup_cfg(args.config_file, args.opts)
    check_cfg_values(cfg, args)
    root = dataset_root(cfg.BRAINSEG.DATASET_ROOT)
    register_all(root)
    if args.eval_only:  # as in Detectron2: evaluation needs only the test datasets
        if not cfg.DATASETS.TEST:
            raise ValueError("DATASETS.TEST is empty: --eval-only has nothing to evaluate")
        check_datasets_exist(list(cfg.DATASETS.TEST), root)
    else:
        check_datasets_exist(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST), root)
    check_num_classes(cfg, args)
    check_input_channels(cfg, args)
    if not args.eval_only:
        for name in cfg.DATASETS.TRAIN:
            DatasetCatalog.get(name)  # lazy loader raises ValueError if empty or unreadable
    ensure_weights_available(cfg)
    if not args.eval_only:  # --eval-only loads strictly, with its own messages
        check_start_weights(cfg, resume=bool(getattr(args, "resume", False)))
        if not cfg.MODEL.WEIGHTS and (cfg.MODEL.BACKBONE.FREEZE_AT > 0
                                      or cfg.MODEL.RESNETS.NORM == "FrozenBN"):
            logger.warning(
                "training from scratch (MODEL.WEIGHTS \"\") with MODEL.BACKBONE.FREEZE_AT %d "
                "and MODEL.RESNETS.NORM %s: frozen layers and norms keep their random "
                "initialisation; from scratch, use FREEZE_AT 0 and GN, as configs/phantom/ do",
                cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.RESNETS.NORM,
            )
    return cfg


def argument_parser(epilog: str | None = None):
    """Detectron2's ``default_argument_parser``, with ``--config-file`` required.

    Also shows the defaults in ``--help`` and gives one-line usage errors
    (:class:`brainseg_d2.utils.cli.ArgumentParser`).
    """
    from detectron2.engine import default_argument_parser

    from brainseg_d2.utils.cli import ArgumentParser

    parent = default_argument_parser(epilog)
    parser = ArgumentParser(
        description="Train or evaluate Mask R-CNN on converted MRI slice datasets.",
        epilog=parent.epilog,
        parents=[parent],
        add_help=False,
        conflict_handler="resolve",
    )
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="model config (YAML) to train"
    )
    return parser


def eval_weights(cfg, resume: bool = False) -> str:
    """The weights ``--eval-only`` evaluates: the last checkpoint when resuming, else MODEL.WEIGHTS.

    Raises:
        ValueError: no weights at all.
    """
    last = Path(cfg.OUTPUT_DIR) / "last_checkpoint"
    if resume and last.is_file():
        name = last.read_text(encoding="utf-8").strip()
        if name and (Path(cfg.OUTPUT_DIR) / name).is_file():
            return str(Path(cfg.OUTPUT_DIR) / name)
    if not cfg.MODEL.WEIGHTS:
        raise ValueError(
            "evaluation needs trained weights: add MODEL.WEIGHTS path/to/model_final.pth"
        )
    return PathManager.get_local_path(cfg.MODEL.WEIGHTS)


def load_eval_weights(model, cfg, resume: bool = False) -> None:
    """Load :func:`eval_weights` into ``model``, strictly (``checkpoint.load_strict``).

    Raises:
        ValueError: no weights, or weights that do not fit the model (one line).
    """
    from brainseg_d2.checkpoint import load_strict

    load_strict(model, eval_weights(cfg, resume))
