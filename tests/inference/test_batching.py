"""Batches on CPU threads come back in order, whatever finishes first."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from brainseg_d2.inference.batching import run_in_order


@pytest.mark.parametrize("workers", [1, 3], ids=["one-at-a-time", "three-threads"])
def test_results_come_back_in_batch_order(workers):
    threads = set()

    def run(batch):
        threads.add(threading.get_ident())
        time.sleep(0.01 * (5 - batch))  # early batches finish last
        return batch, torch.get_num_threads()

    results = list(run_in_order(run, list(range(5)), workers=workers))
    assert [b for b, _ in results] == list(range(5))
    if workers > 1:
        assert all(n == 1 for _, n in results)  # one torch thread per worker
        assert len(threads) > 1


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    list(run_in_order(lambda b: b, [1, 2, 3], workers=2))
    assert torch.get_num_threads() == before
