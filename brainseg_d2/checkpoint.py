"""Strict loading of trained weights, for prediction and evaluation.

Detectron2's ``DetectionCheckpointer.load`` is made for fine-tuning: a
parameter that is missing from the file, or has another shape, is skipped with
a logged warning and keeps its random initialisation. For prediction and
evaluation that silently gives a wrong answer (a model trained for another
number of classes, or a file without whole stages), so :func:`load_strict`
treats any missing, unexpected or mismatched parameter as an error. Training
keeps Detectron2's partial loading (``Trainer.resume_or_load``).

Detectron2's own file handling is kept: ``.pkl`` model-zoo files (and Caffe2
names, renamed by Detectron2's matching heuristics) load as Detectron2 loads
them, and are then held to the same rule: after renaming, every parameter of
the model must come from the file with its shape. A zoo *detection* model of
the same architecture and class count passes; an ImageNet backbone does not.
Like Detectron2, ``pixel_mean``/``pixel_std`` (set from the config) may be
absent, old ``anchor_generator.cell_anchors`` buffers are ignored, and a tensor
the model reaches by several names counts as loaded when the file holds it under
one of them.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlparse

import torch

__all__ = ["CheckpointError", "load_strict", "read_checkpoint"]

#: Names shown per kind of problem in the one-line message.
SHOWN = 3
#: Loggers that describe the partial load, which is refused here anyway.
_NOISY_LOGGERS = ("fvcore.common.checkpoint", "detectron2.checkpoint")


class CheckpointError(ValueError):
    """The weights file cannot be read, or does not fit the model exactly."""


@contextmanager
def _quiet(names: Sequence[str]) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_sentence(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
    return text or type(exc).__name__


def _not_loaded_under_any_name(model: torch.nn.Module, missing: Sequence[str]) -> list[str]:
    """The keys of ``missing`` whose tensor was not loaded under any other name.

    A model can reach one parameter or buffer by several names: a module
    registered at two places (a shared head, say) puts each of its tensors in the
    state dict once per place. A file may hold such a tensor under one of its
    names only, and then loading fills it while the state dict's other names are
    reported missing. Those are not missing; a tensor is missing only when every
    one of its names is. Keys keep their order in ``missing``.
    """
    names_of: dict[int, set[str]] = defaultdict(set)  # tensor id -> its full names
    # remove_duplicate=False: a module registered at two places is walked at both.
    for prefix, module in model.named_modules(remove_duplicate=False):
        tensors = (
            *module.named_parameters(recurse=False),
            *module.named_buffers(recurse=False),
        )
        for name, tensor in tensors:
            names_of[id(tensor)].add(f"{prefix}.{name}" if prefix else name)
    reported = set(missing)
    loaded_aliases: set[str] = set()
    for names in names_of.values():
        absent = names & reported
        if absent and absent != names:  # loaded under one of its other names
            loaded_aliases |= absent
    return [k for k in missing if k not in loaded_aliases]


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (", ..." if len(items) > SHOWN else "")


def read_checkpoint(path: str, checkpointer=None) -> dict:
    """Read a local weights file as Detectron2's checkpointer reads it, or raise.

    Args:
        path: a local ``.pth`` checkpoint or Detectron2 ``.pkl``.
        checkpointer: the ``DetectionCheckpointer`` to read with (default: one
            on an empty module; reading needs no model).

    Returns:
        The checkpoint, a dict with a ``model`` state dict.

    Raises:
        CheckpointError: unreadable or truncated file, or no model state dict;
            one line naming the file.
    """
    if checkpointer is None:
        from detectron2.checkpoint import DetectionCheckpointer

        checkpointer = DetectionCheckpointer(torch.nn.Module())
    if hasattr(checkpointer, "_parsed_url_during_load"):
        # Detectron2 after v0.6 asserts that _load_file runs inside load(), which sets this.
        checkpointer._parsed_url_during_load = urlparse(path)
    try:
        checkpoint = checkpointer._load_file(path)
    except Exception as exc:  # torch, pickle and zip readers raise many types
        first = _first_sentence(exc)
        why = "truncated or not a checkpoint?"
        if "weights only load failed" in str(exc).lower():
            # A whole checkpoint that pickles other objects (NumPy arrays, classes).
            why = ("it pickles more than tensors, which torch no longer loads by default; "
                   "README.md, 'Weights only load failed', says how to convert a file "
                   "you trust")
        raise CheckpointError(
            f"cannot read weights {path} ({type(exc).__name__}: {first}); {why}"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"weights {path} hold no model state dict")
    return checkpoint


def load_strict(model: torch.nn.Module, path: str) -> None:
    """Load every parameter of ``model`` from ``path``, or raise.

    Args:
        model: a Detectron2 model (e.g. from ``build_model(cfg)``).
        path: a local ``.pth`` checkpoint of this project (Detectron2's
            ``Checkpointer`` format) or a Detectron2 ``.pkl``; an empty string
            loads nothing (the caller decides whether random weights are fine).

    Raises:
        CheckpointError: missing, unreadable or truncated file; or missing,
            unexpected or shape-mismatched parameters. One line, with the counts
            and the first few names of each kind.
    """
    if not path:
        return
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.utils.file_io import PathManager

    if not os.path.isfile(path):
        try:  # a URL (model zoo): Detectron2 downloads and caches it
            path = PathManager.get_local_path(path)
        except Exception:  # many types: no handler, network errors
            raise CheckpointError(f"weights {path} not found") from None
        if not os.path.isfile(path):
            raise CheckpointError(f"weights {path} not found")
    checkpointer = DetectionCheckpointer(model)
    with _quiet(_NOISY_LOGGERS):
        checkpoint = read_checkpoint(path, checkpointer)
        try:
            incompatible = checkpointer._load_model(checkpoint)
        except Exception as exc:
            raise CheckpointError(f"cannot load weights {path} ({_first_sentence(exc)})") from None
    mismatched = {k for k, _, _ in incompatible.incorrect_shapes}  # also "missing": not loaded
    missing = [
        k
        for k in _not_loaded_under_any_name(model, list(incompatible.missing_keys))
        if k not in mismatched
    ]
    unexpected = list(incompatible.unexpected_keys)
    shapes = [
        f"{k} {tuple(ckpt)} in the file, {tuple(mine)} in the model"
        for k, ckpt, mine in incompatible.incorrect_shapes
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing: {_names(sorted(missing))}")
        if unexpected:
            parts.append(f"unexpected: {_names(sorted(unexpected))}")
        if shapes:
            parts.append(f"other shape: {_names(shapes)}")
        raise CheckpointError(
            f"weights {path} do not fit the model ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} shape-mismatched parameters; "
            + "; ".join(parts)
            + "); check the config (e.g. MODEL.ROI_HEADS.NUM_CLASSES, the backbone) "
            "is the one the weights were trained with"
        )
