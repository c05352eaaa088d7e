"""Evaluation speed: batched inference and the dense head alone, against the old way.

``Trainer.test`` (the EvalHook during training, ``tools/train_net.py --eval-only``,
the demo's held-out scores) and the post-processing tuning's score maps
(``evaluation/tuning/cache.py``) run the model over a converted dataset. Each is
timed three ways on the same model and data, in one process, rounds interleaved:

* ``one slice at a time, with instances``: ``BRAINSEG.INFERENCE.BATCH_SIZE 1``
  and ``CPU_CONCURRENT_BATCHES 1`` (Detectron2's one-image test loader), the
  instance branch run: what both did before;
* ``batched, with instances``: the config's ``BATCH_SIZE`` (8) and
  ``CPU_CONCURRENT_BATCHES`` (0: one batch per torch thread at once);
* ``batched, dense head only``: the same, and the RPN and ROI heads skipped, as
  now happens when nothing reads the instances (``BRAINSEG.MASK_SOURCE semantic``).

``Trainer.test`` runs with the project's volume evaluator (as in the demo); the
table also gives the largest difference in its volume Dice between the ways.
Pass a trained model (e.g. a ``make demo`` run's) to time realistic detections.

Run: ``python bench/eval_speed.py --dataset DIR --config CFG [--weights W]
[--split test] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import build_model

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.datasets import register_brainseg_dataset
from brainseg_d2.engine import Trainer
from brainseg_d2.evaluation.evaluator import BrainSegEvaluator
from brainseg_d2.evaluation.tuning.cache import iter_volume_scores

#: way -> (BATCH_SIZE, CPU_CONCURRENT_BATCHES; None: the config's), instance branch run
WAYS = {
    "one slice at a time, with instances": ("1", "1", True),
    "batched, with instances": (None, None, True),
    "batched, dense head only": (None, None, False),
}


class _WithInstances(DatasetEvaluator):
    """Passes everything to an evaluator, and says it reads instances (the old inference)."""

    uses_instances = True

    def __init__(self, inner: DatasetEvaluator):
        self.inner = inner

    def reset(self):
        self.inner.reset()

    def process(self, inputs, outputs):
        self.inner.process(inputs, outputs)

    def evaluate(self):
        return self.inner.evaluate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a converted dataset folder")
    parser.add_argument("--config", required=True, help="model config")
    parser.add_argument("--weights", default="", help="trained weights (default: random init)")
    parser.add_argument("--split", default="test", help="split to run over")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    names = register_brainseg_dataset(args.dataset, name="bench_eval")
    name = next(n for n in names if n.endswith("_" + args.split))
    cfgs = {}
    for way, (batch, concurrent, _) in WAYS.items():
        cfg = get_brainseg_cfg()
        cfg.merge_from_file(args.config, allow_unsafe=False)
        opts = ["DATASETS.TEST", f"('{name}',)", "MODEL.WEIGHTS", args.weights]
        if batch is not None:
            opts += ["BRAINSEG.INFERENCE.BATCH_SIZE", batch,
                     "BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES", concurrent]  # fmt: skip
        cfg.merge_from_list(opts)
        cfg.freeze()
        cfgs[way] = cfg
    torch.manual_seed(0)
    model = build_model(cfgs["batched, dense head only"]).eval()
    if args.weights:
        DetectionCheckpointer(model).load(args.weights)

    times: dict[str, list[float]] = {f"{task}, {way}": [] for task in ("evaluate", "tuning maps")
                                     for way in WAYS}  # fmt: skip
    dice: dict[str, dict] = {}
    for _ in range(args.rounds):
        for way, cfg in cfgs.items():
            instances = WAYS[way][2]
            with tempfile.TemporaryDirectory() as tmp:
                evaluator = BrainSegEvaluator.from_config(cfg, name, tmp)
                if instances:
                    evaluator = _WithInstances(evaluator)
                t = time.perf_counter()
                results = Trainer.test(cfg, model, evaluators=[evaluator])["brainseg"]
                times[f"evaluate, {way}"].append(time.perf_counter() - t)
            dice[way] = {k: v for k, v in results.items() if k.startswith("volume_dice_")}
            # A plain function is not unwrapped by dense_head_only: the instances run.
            run = (lambda batch: model(batch)) if instances else model
            t = time.perf_counter()
            for _ in iter_volume_scores(run, cfg, name):
                pass
            times[f"tuning maps, {way}"].append(time.perf_counter() - t)

    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {sys.executable}")  # fmt: skip
    print("| run | s by round | median | speed-up |")
    print("|---|---|---|---|")
    for task in ("evaluate", "tuning maps"):
        base = statistics.median(times[f"{task}, {next(iter(WAYS))}"])
        for way in WAYS:
            runs = times[f"{task}, {way}"]
            med = statistics.median(runs)
            print(f"| {task}, {way} | {', '.join(f'{t:.1f}' for t in runs)} | {med:.1f} "
                  f"| {base / med:.2f}x |")  # fmt: skip
    first = dice[next(iter(WAYS))]
    diff = max(abs(first[k] - other[k]) for other in dice.values() for k in first)
    print(f"largest volume Dice difference between the ways: {diff:.2e} "
          f"over {len(first)} metrics")  # fmt: skip


if __name__ == "__main__":
    main()
