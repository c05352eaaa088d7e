"""brainseg_d2.checkpoint.load_strict: a tensor the model reaches by two names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainseg_d2.checkpoint import CheckpointError, load_strict


def _shared_model() -> nn.Module:
    """A model whose ``head`` is also ``tower.0``: its two tensors have two names each."""
    model = nn.Module()
    model.head = nn.Linear(2, 2)
    model.tower = nn.Sequential(model.head)
    model.out = nn.Linear(2, 1)
    return model


def _save(model: nn.Module, path, keep) -> str:
    state = {k: v for k, v in model.state_dict().items() if keep(k)}
    torch.save({"model": state}, path)
    return str(path)


def test_a_tensor_saved_under_one_of_its_names_is_loaded(tmp_path):
    source, model = _shared_model(), _shared_model()
    path = _save(source, tmp_path / "w.pth", lambda k: not k.startswith("tower."))
    load_strict(model, path)  # tower.0.* are head.*, which the file holds
    assert torch.equal(model.tower[0].weight, source.head.weight)


def test_a_tensor_absent_under_every_name_is_missing(tmp_path):
    path = _save(_shared_model(), tmp_path / "w.pth", lambda k: k.startswith("out."))
    with pytest.raises(CheckpointError, match=r"\(4 missing, 0 unexpected"):
        load_strict(_shared_model(), path)


def test_a_checkpoint_pickling_more_than_tensors_says_how_to_convert_it(tmp_path):
    import numpy as np

    path = tmp_path / "old.pth"
    torch.save({"model": _shared_model().state_dict(), "extra": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="Weights only load failed") as info:
        load_strict(_shared_model(), str(path))
    assert "truncated" not in str(info.value) and "how to convert" in str(info.value)
