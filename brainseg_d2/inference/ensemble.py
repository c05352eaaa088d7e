"""The model a :class:`~brainseg_d2.inference.VolumePredictor` runs: one weights file, or several.

Several weights files of one config are an ensemble, as nnU-Net predicts with the
mean of its five folds: the models trained on the folds of ``brainseg-convert
--folds K --fold I`` (or on one split with different ``SEED``\\ s) each run on the
same slices, their dense heads' category probabilities (``sem_seg``, C x H x W)
are averaged, and the post-processing thresholds the mean exactly as it
thresholds one model's. Only the dense heads run (an instance's mask and score
have no mean across models), so an ensemble needs ``BRAINSEG.MASK_SOURCE
semantic`` and a :class:`~brainseg_d2.modeling.BrainSegRCNN`; every member takes
the config's architecture, input size and post-processing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from torch import nn

__all__ = ["ModelEnsemble", "build_inference_model", "ensemble_members", "load_model"]

logger = logging.getLogger(__name__)


class ModelEnsemble(nn.Module):
    """Models of one architecture whose category probabilities are averaged.

    Called as a Detectron2 model in inference: a list of input dicts in, one
    ``{"sem_seg": (C, height, width) float}`` per input out, the members' mean.
    """

    def __init__(self, models: Sequence[nn.Module]):
        """
        Args:
            models: two or more :class:`~brainseg_d2.modeling.BrainSegRCNN` in eval
                mode; their instance branches are switched off for good.

        Raises:
            ValueError: fewer than two models, or one without a dense head.
        """
        from brainseg_d2.modeling import BrainSegRCNN

        super().__init__()
        if len(models) < 2:
            raise ValueError(f"an ensemble needs two or more models, got {len(models)}")
        for model in models:
            if not isinstance(model, BrainSegRCNN):
                raise ValueError(
                    f"an ensemble averages dense heads: MODEL.META_ARCHITECTURE must be "
                    f"BrainSegRCNN, got {type(model).__name__}"
                )
            # The attribute dense_head_only sets; set once here, so that batches run
            # on several threads never switch it back and forth.
            model.infer_instances = False
        self.members = nn.ModuleList(models)

    def forward(self, batched_inputs: list[dict]) -> list[dict]:
        total = None
        for model in self.members:
            outputs = model(batched_inputs)
            if total is None:
                total = [out["sem_seg"].float() for out in outputs]
            else:
                for probs, out in zip(total, outputs):
                    probs += out["sem_seg"]
        return [{"sem_seg": probs / len(self.members)} for probs in total]


def ensemble_members(cfg) -> list[str]:
    """The weights files ``cfg`` predicts with: ``BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS``
    where set, else ``[MODEL.WEIGHTS]``.

    Raises:
        ValueError: an ensemble whose first member is not ``MODEL.WEIGHTS`` (a
            ``MODEL.WEIGHTS`` override given for a config that records an ensemble,
            which would otherwise be ignored).
    """
    members = [os.fspath(w) for w in cfg.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS]
    if not members:
        return [cfg.MODEL.WEIGHTS]
    if cfg.MODEL.WEIGHTS and _local(cfg.MODEL.WEIGHTS) != _local(members[0]):
        raise ValueError(
            f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS} is not the first of the config's ensemble "
            f"(BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS, {len(members)} files from {members[0]}): "
            "choose the models with --weights, or add BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS "
            '"()" to use MODEL.WEIGHTS alone'
        )
    return members


def build_inference_model(
    cfg, target: str, categories: Sequence[str], weights: Sequence[str | os.PathLike] | None = None
) -> nn.Module:
    """``build_model(cfg)`` with each weights file loaded; several are a :class:`ModelEnsemble`.

    Args:
        cfg: frozen config; ``MODEL.MASK_ON`` and ``ROI_HEADS.NUM_CLASSES`` are checked.
        target, categories: the training dataset's target and its categories.
        weights: weights files (local paths, or a model-zoo URL for one model);
            None: :func:`ensemble_members`; an empty ``MODEL.WEIGHTS`` loads nothing
            (warned).

    Raises:
        ValueError: a config that cannot predict volumes, a missing or unreadable
            weights file, one that does not fit the model exactly
            (:class:`~brainseg_d2.checkpoint.CheckpointError`), or an ensemble
            without ``MASK_SOURCE semantic``. Each names the file or key at fault.
    """
    if not cfg.MODEL.MASK_ON:
        raise ValueError("MODEL.MASK_ON is False: volume prediction needs a mask head")
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES != len(categories):
        raise ValueError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg.MODEL.ROI_HEADS.NUM_CLASSES} but the "
            f"dataset's target '{target}' has {len(categories)} categories {list(categories)}"
        )
    source = "weights file"
    named = weights is not None or bool(cfg.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS)
    if weights is None:
        if cfg.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS:
            source = "BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS file"
        weights = ensemble_members(cfg)
    elif not weights:
        raise ValueError("no weights file given")
    paths = [os.fspath(w) for w in weights]
    if len(paths) > 1 and cfg.BRAINSEG.MASK_SOURCE != "semantic":
        raise ValueError(
            "an ensemble averages the dense head's probabilities: it needs "
            f"BRAINSEG.MASK_SOURCE semantic, not {cfg.BRAINSEG.MASK_SOURCE!r}"
        )
    for i, path in enumerate(paths):
        which = f"{source} {path!r}" + (f" ({i + 1} of {len(paths)})" if len(paths) > 1 else "")
        if os.path.isdir(path):
            raise ValueError(f"{which} is a folder, not a checkpoint")
        if named and path and "://" not in path and not os.path.isfile(path):
            raise ValueError(f"{which} does not exist")
    models = [load_model(cfg, path) for path in paths]
    if len(models) == 1:
        return models[0]
    logger.info("ensemble of %d models: %s", len(models), ", ".join(paths))
    return ModelEnsemble(models)


def load_model(cfg, path: str | None = None) -> nn.Module:
    """``build_model(cfg)`` in eval mode with ``path`` (default ``MODEL.WEIGHTS``) loaded strictly.

    For one model's detections (instances), which an ensemble does not give.

    Raises:
        ValueError: a remote file that cannot be fetched, a missing or unfitting one
            (:class:`~brainseg_d2.checkpoint.CheckpointError`); ``path`` None with a
            config that records an ensemble (:func:`ensemble_members`).
    """
    from detectron2.modeling import build_model

    from brainseg_d2.checkpoint import load_strict
    from brainseg_d2.engine import ensure_weights_available

    if path is None:
        members = ensemble_members(cfg)
        if len(members) > 1:
            raise ValueError(
                f"this config predicts with an ensemble of {len(members)} models "
                "(BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS), which gives no detections to draw: "
                'add BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS "()" to use MODEL.WEIGHTS alone'
            )
        path = members[0]
    ensure_weights_available(cfg, path)  # a model-zoo URL is fetched, or one line
    model = build_model(cfg)
    model.eval()
    if not path:
        logger.warning("MODEL.WEIGHTS is empty: predicting with a randomly initialised model")
    load_strict(model, path)  # any missing or mismatched weight is an error
    return model


def _local(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)

