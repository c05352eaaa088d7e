"""Evaluation inference in batches: same-size slices together, several batches at once on CPU.

Detectron2's test loader hands the model one image per call. On 2 CPU cores a
slice of a few hundred pixels a side cannot keep both threads busy, which is why
:class:`~brainseg_d2.inference.VolumePredictor` predicts slices in batches and,
on CPU, several batches at once (BENCHMARKS.md "Prediction"). The Trainer's
evaluation (``Trainer.test``: the EvalHook during training,
``tools/train_net.py --eval-only``, the demo's held-out scores) does the same here:

- :func:`build_batched_test_loader` yields lists of up to ``BATCH_SIZE x workers``
  consecutive dataset entries of one image size (consecutive slices of a volume),
  so a batch never pads one slice to another's size and the outputs do not
  depend on the batching;
- :class:`ConcurrentBatches` wraps the model: it splits each list into batches
  of ``BRAINSEG.INFERENCE.BATCH_SIZE`` and runs ``CPU_CONCURRENT_BATCHES`` of
  them at once, each on one torch thread (:func:`run_in_order`).

Evaluators see the same inputs and outputs, in the same order, as with
Detectron2's loader. With several processes (``comm.get_world_size() > 1``)
Detectron2's sharded one-image loader is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList, MapDataset
from detectron2.utils import comm
from torch import nn

from brainseg_d2.inference.batching import batch_workers, run_in_order

__all__ = [
    "ConcurrentBatches",
    "build_batched_test_loader",
    "inference_batching",
    "same_size_batches",
]


def inference_batching(cfg) -> tuple[int, int]:
    """``(batch_size, workers)`` of evaluation inference from ``cfg.BRAINSEG.INFERENCE``.

    ``workers`` is ``CPU_CONCURRENT_BATCHES`` (0: torch's thread count) on CPU,
    1 on CUDA; both are 1 with several processes.

    Raises:
        ValueError: ``BATCH_SIZE`` < 1 or ``CPU_CONCURRENT_BATCHES`` < 0.
    """
    batch_size = int(cfg.BRAINSEG.INFERENCE.BATCH_SIZE)
    concurrent = int(cfg.BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES)
    if batch_size < 1:
        raise ValueError(f"BRAINSEG.INFERENCE.BATCH_SIZE must be >= 1, got {batch_size}")
    if concurrent < 0:
        raise ValueError(
            f"BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES must be >= 0, got {concurrent}"
        )
    if comm.get_world_size() > 1:
        return 1, 1
    return batch_size, batch_workers(concurrent, cfg.MODEL.DEVICE)


def same_size_batches(dicts: Sequence[dict], max_size: int) -> list[list[int]]:
    """Indices of ``dicts`` in order, cut into runs of at most ``max_size`` with one image size.

    A run ends where ``(height, width)`` changes, so a batch never mixes sizes.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    batches: list[list[int]] = []
    size = None
    for i, d in enumerate(dicts):
        this = (d.get("height"), d.get("width"))
        if not batches or this != size or len(batches[-1]) == max_size:
            batches.append([])
        batches[-1].append(i)
        size = this
    return batches


def build_batched_test_loader(cfg, dataset_name: str, mapper):
    """A test loader yielding lists of same-size inputs (see the module docstring).

    Its length is the number of lists; with one image per list (several
    processes, or ``BATCH_SIZE`` and workers 1) it is Detectron2's own loader.
    """
    batch_size, workers = inference_batching(cfg)
    if batch_size * workers == 1:
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
    dicts = DatasetCatalog.get(dataset_name)
    dataset = MapDataset(DatasetFromList(dicts, copy=False), mapper)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=same_size_batches(dicts, batch_size * workers),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
    )


class ConcurrentBatches(nn.Module):
    """A model wrapper: a list of inputs in, batches of it run ``workers`` at a time.

    Outputs come back in the inputs' order. ``train()``/``eval()`` reach the
    wrapped model (it is a submodule); the wrapper starts in the model's mode.
    """

    def __init__(self, model: nn.Module, batch_size: int, workers: int):
        super().__init__()
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be >= 1, got {batch_size}, {workers}")
        self.model = model
        self.batch_size = batch_size
        self.workers = workers
        self.train(model.training)

    def forward(self, inputs: list[dict]) -> list[dict]:
        batches = [
            inputs[start : start + self.batch_size]
            for start in range(0, len(inputs), self.batch_size)
        ]

        def run(batch: list[dict]) -> list[dict]:
            with torch.inference_mode():  # thread-local: entered in each worker
                return self.model(batch)

        return [out for outs in run_in_order(run, batches, workers=self.workers) for out in outs]
