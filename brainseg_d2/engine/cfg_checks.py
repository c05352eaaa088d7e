"""Config values that cannot work, caught before anything is built or written.

Each check raises one ``ValueError`` line that names the key, its value and
where it was set: the config file, or the command line for ``KEY VALUE``
overrides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from brainseg_d2.engine.solver import OPTIMIZERS

__all__ = ["check_cfg_values", "check_input_channels", "check_num_classes"]


def _file_setting(key: str, config_file: str) -> str | None:
    """The config file that sets ``key`` (``config_file`` or a ``_BASE_`` it names);
    ``""`` when none does (a default); None when a base cannot be read (``zoo://``)."""
    import yaml

    path = Path(config_file)
    for _ in range(16):  # a _BASE_ chain; the config loader already refused cycles
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            return None
        node = data
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return str(path)
        base = data.get("_BASE_")
        if not base:
            return ""
        if str(base).startswith(("zoo://", "detectron2://")):
            return None
        path = path.parent / base
    return None


def _origin(key: str, args) -> str:
    """Where the value of ``key`` was set, for messages."""
    if key in list(args.opts)[0::2]:
        return "on the command line"
    where = _file_setting(key, args.config_file)
    if where == "":
        return f"Detectron2's default: neither {args.config_file} nor its bases set it"
    return f"in {where or args.config_file}"


def check_cfg_values(cfg, args) -> None:
    """Values that cannot work, before anything is built or written.

    Training: ``SOLVER.IMS_PER_BATCH`` a positive multiple of the number of
    processes (``--num-gpus`` x ``--num-machines``), ``SOLVER.MAX_ITER`` and
    ``SOLVER.BASE_LR`` positive, ``BRAINSEG.SOLVER.OPTIMIZER`` one of
    :data:`~brainseg_d2.engine.solver.OPTIMIZERS`, ``BRAINSEG.SOLVER.INSTANCE_PERIOD``
    at least 1, ``BRAINSEG.SOLVER.EMA_DECAY`` in [0, 1). Always:
    ``BRAINSEG.SEM_SEG.CONTEXT_CONVS`` at least 0, ``BRAINSEG.INFERENCE.BATCH_SIZE``
    at least 1 and ``CPU_CONCURRENT_BATCHES`` at least 0; ``MODEL.DEVICE`` cuda needs a CUDA device.

    Raises:
        ValueError: naming the key, its value and where it was set.
    """

    def bad(key: str, value, need: str) -> ValueError:
        return ValueError(f"{key} is {value!r} ({_origin(key, args)}): {need}")

    if not args.eval_only:
        world = max(1, int(getattr(args, "num_gpus", 1))) * max(
            1, int(getattr(args, "num_machines", 1))
        )
        batch = cfg.SOLVER.IMS_PER_BATCH
        if batch <= 0 or batch % world:
            need = "it must be a positive number of images per iteration"
            if world > 1:
                need = f"it must be a positive multiple of the {world} processes"
            raise bad("SOLVER.IMS_PER_BATCH", batch, need)
        if cfg.SOLVER.MAX_ITER <= 0:
            raise bad("SOLVER.MAX_ITER", cfg.SOLVER.MAX_ITER, "it must be positive")
        if not cfg.SOLVER.BASE_LR > 0:
            raise bad("SOLVER.BASE_LR", cfg.SOLVER.BASE_LR, "it must be positive")
        if cfg.BRAINSEG.SOLVER.OPTIMIZER not in OPTIMIZERS:
            need = f"it must be one of {', '.join(OPTIMIZERS)}"
            raise bad("BRAINSEG.SOLVER.OPTIMIZER", cfg.BRAINSEG.SOLVER.OPTIMIZER, need)
        if cfg.BRAINSEG.SOLVER.INSTANCE_PERIOD < 1:
            need = "it must be at least 1 (1: the instance branch trains every iteration)"
            raise bad("BRAINSEG.SOLVER.INSTANCE_PERIOD", cfg.BRAINSEG.SOLVER.INSTANCE_PERIOD, need)
        if not 0.0 <= cfg.BRAINSEG.SOLVER.EMA_DECAY < 1.0:
            need = "it must be in [0, 1) (0: no weight average)"
            raise bad("BRAINSEG.SOLVER.EMA_DECAY", cfg.BRAINSEG.SOLVER.EMA_DECAY, need)
    if cfg.BRAINSEG.SEM_SEG.CONTEXT_CONVS < 0:
        need = "it must be at least 0"
        raise bad("BRAINSEG.SEM_SEG.CONTEXT_CONVS", cfg.BRAINSEG.SEM_SEG.CONTEXT_CONVS, need)
    inference = cfg.BRAINSEG.INFERENCE
    if inference.BATCH_SIZE < 1:
        raise bad("BRAINSEG.INFERENCE.BATCH_SIZE", inference.BATCH_SIZE, "it must be at least 1")
    if inference.CPU_CONCURRENT_BATCHES < 0:
        key, need = "BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES", "it must be at least 0"
        raise bad(key, inference.CPU_CONCURRENT_BATCHES, need + " (0: one batch per torch thread)")
    if str(cfg.MODEL.DEVICE).startswith("cuda") and not torch.cuda.is_available():
        raise bad("MODEL.DEVICE", cfg.MODEL.DEVICE, "no CUDA device here; use MODEL.DEVICE cpu")


def check_num_classes(cfg, args) -> None:
    """``MODEL.ROI_HEADS.NUM_CLASSES`` equals each configured dataset's class count,
    and every dataset names the same classes (a ``labels`` test set is not scored
    as a ``regions`` model's classes). With ``--eval-only``, the test datasets only.

    Raises:
        ValueError: naming the key, where it was set, and the dataset's classes;
            or the two datasets whose classes differ.
    """
    from detectron2.data import MetadataCatalog

    key, num = "MODEL.ROI_HEADS.NUM_CLASSES", cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = [*cfg.DATASETS.TEST] if args.eval_only else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
    first = None  # (dataset, classes): every dataset must name the model's classes alike
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is None:
            continue
        if len(classes) != num:
            raise ValueError(
                f"{key} is {num} ({_origin(key, args)}) but dataset '{name}' has "
                f"{len(classes)} classes {list(classes)}"
            )
        if first is None:
            first = (name, list(classes))
        elif list(classes) != first[1]:
            raise ValueError(
                f"dataset '{name}' has classes {list(classes)} but '{first[0]}' has "
                f"{first[1]}: one model predicts one set of classes (converted with "
                "another --target?)"
            )


def check_input_channels(cfg, args, sources: dict[str, Sequence[str]] | None = None) -> None:
    """``MODEL.PIXEL_MEAN``/``PIXEL_STD`` have one value per input channel of each dataset.

    A slice of a dataset with N channels (``dataset.json`` channels) and K context
    slices per side (``BRAINSEG.INPUT.CONTEXT_SLICES``) feeds N x (2K + 1) channels.

    Args:
        sources: what feeds the model, name -> channel names, for data not yet
            registered (the demo's phantom); default: the registered datasets of
            ``DATASETS.TRAIN`` and ``DATASETS.TEST``.

    Raises:
        ValueError: naming the key, its length, where it was set, and the dataset.
    """
    from detectron2.data import MetadataCatalog

    if sources is None:
        sources = {
            f"dataset '{name}'": MetadataCatalog.get(name).get("channels")
            for name in [*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]
        }
    slices = 2 * cfg.BRAINSEG.INPUT.CONTEXT_SLICES + 1
    for key in ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD"):
        values = cfg.MODEL.PIXEL_MEAN if key.endswith("MEAN") else cfg.MODEL.PIXEL_STD
        for source, channels in sources.items():
            if channels is None:
                continue
            need = len(channels) * slices
            if len(values) != need:
                raise ValueError(
                    f"{key} has {len(values)} values ({_origin(key, args)}) but {source} "
                    f"feeds {need} channels ({len(channels)} sequences "
                    f"{list(channels)} x {slices} slices)"
                )
