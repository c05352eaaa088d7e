"""brainseg_d2.engine.distributed: CPU multi-process pieces that work with any Detectron2.

End to end, two CPU processes with gloo are tested by
``test_train_net.py::test_cpu_multiprocess_training_with_gloo``.
"""

from __future__ import annotations

import pytest
import torch
from detectron2.utils import comm

from brainseg_d2.engine import distributed


def test_single_process_model_is_not_wrapped():
    model = torch.nn.Linear(2, 2)
    assert distributed.create_ddp_model(model, broadcast_buffers=False) is model


@pytest.mark.parametrize(
    "kwargs, device_ids",
    [({}, None), ({"device_ids": [3]}, [3])],
    ids=["cpu-model-gets-no-device-ids", "explicit-device-ids-kept"],
)
def test_cpu_model_gets_no_cuda_device_ids(monkeypatch, kwargs, device_ids):
    seen = {}
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed, "_d2_create_ddp_model", lambda m, **kw: seen.update(kw) or m)
    distributed.create_ddp_model(torch.nn.Linear(2, 2), broadcast_buffers=False, **kwargs)
    assert seen["device_ids"] == device_ids and seen["broadcast_buffers"] is False


def test_launch_runs_one_process_in_place():
    out = []
    distributed.launch(out.append, 1, args=("ran",))
    assert out == ["ran"]


def test_auto_dist_url_is_for_one_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="one machine"):
        distributed.launch(print, 2, num_machines=2, dist_url="auto")
