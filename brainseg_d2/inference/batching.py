"""Batches through a model on CPU threads, results in order.

On CPU, several batches run at once, each on one torch thread: a slice of a few
hundred pixels a side cannot keep several intra-op threads busy, two
single-threaded forward passes can (torch releases the GIL in its kernels).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

from brainseg_d2.env import library_threads

__all__ = ["batch_workers", "run_in_order"]

Batch = TypeVar("Batch")
Result = TypeVar("Result")


def batch_workers(concurrent_batches: int, device: str) -> int:
    """Batches to run at once: ``concurrent_batches`` (0: torch's threads) on CPU, 1 on CUDA."""
    if str(device).startswith("cuda"):
        return 1
    return concurrent_batches or torch.get_num_threads()


def run_in_order(
    run: Callable[[Batch], Result], batches: Sequence[Batch], *, workers: int
) -> Iterator[Result]:
    """``run`` on every batch, ``workers`` at a time, each on one torch thread.

    Args:
        run: one batch -> its result (enters its own ``torch.inference_mode``:
            that mode is thread-local).
        batches: in order.
        workers: batches at once; 1 runs them one after the other on torch's threads.

    Yields:
        the results in the order of ``batches``. At most ``2 * workers`` batches
        are in flight, so memory does not grow with the volume.
    """
    if workers == 1 or len(batches) < 2:
        yield from map(run, batches)
        return
    with (
        library_threads(torch.get_num_threads, torch.set_num_threads, 1),
        ThreadPoolExecutor(workers) as pool,
    ):
        pending: deque[Future] = deque()
        for batch in batches:
            pending.append(pool.submit(run, batch))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
