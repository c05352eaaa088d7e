"""brainseg_d2.engine.distributed: CPU multi-process pieces that work with any Detectron2.

End to end, two CPU processes with gloo are tested by
``test_train_net.py::test_cpu_multiprocess_training_with_gloo``.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time

import pytest
import torch
import torch.multiprocessing as mp
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


def _worker_with_a_log_and_a_child(out_dir: str) -> None:
    """Logs a line to a file and leaves a daemonic child running, as a trainer's data loader can."""
    from detectron2.utils.logger import setup_logger

    rank = comm.get_rank()
    logger = setup_logger(f"{out_dir}/log_rank{rank}.txt", distributed_rank=rank, name="gloo_test")
    child = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,), daemon=True)
    child.start()
    with open(f"{out_dir}/child_rank{rank}.pid", "w") as f:
        f.write(str(child.pid))
    logger.info("rank %d done", rank)


def _failing_worker() -> None:
    if comm.get_rank() == 1:
        raise RuntimeError("rank 1 fails")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (ended, not yet reaped by its new parent) counts as ended
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_cpu_workers_end_cleanly(monkeypatch, tmp_path):
    """Finished gloo workers exit 0 with their logs written and their daemonic children ended."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    distributed.launch(_worker_with_a_log_and_a_child, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in (0, 1):
        (log_file,) = tmp_path.glob(f"log_rank{rank}.txt*")  # Detectron2 adds .rankN for N > 0
        log = log_file.read_text()
        assert f"rank {rank} done" in log
        assert not _alive(int((tmp_path / f"child_rank{rank}.pid").read_text()))


def test_a_failing_cpu_worker_fails_the_launch(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # torch's error files land here
    # Either rank's error may be reported first: rank 1's own, or rank 0's lost peer.
    with pytest.raises((mp.ProcessRaisedException, mp.ProcessExitedException)):
        distributed.launch(_failing_worker, 2, dist_url="auto")
