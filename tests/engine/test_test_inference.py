"""Evaluation inference in same-size batches, several at once on CPU (engine/test_inference.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from brainseg_d2.engine.test_inference import ConcurrentBatches, same_size_batches

ROOT = Path(__file__).resolve().parents[2]
INSTANT = ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"


def test_same_size_batches_cut_where_the_size_changes_and_keep_order():
    sizes = [(10, 8)] * 5 + [(12, 8)] * 2 + [(10, 8)] * 3
    dicts = [{"height": h, "width": w} for h, w in sizes]
    assert same_size_batches(dicts, 2) == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    assert same_size_batches(dicts, 16) == [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]]
    assert same_size_batches([], 4) == []
    with pytest.raises(ValueError, match="max_size"):
        same_size_batches(dicts, 0)


class _Recorder(nn.Module):
    """Returns each input's id with the size of the batch it came in and the grad mode."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, str]] = []
        self.lock = threading.Lock()

    def forward(self, batch):
        with self.lock:
            self.calls.append((len(batch), threading.current_thread().name))
        return [
            {"id": d["id"], "batch": len(batch), "grad": torch.is_grad_enabled()} for d in batch
        ]


def test_concurrent_batches_split_the_list_and_return_outputs_in_order():
    model = _Recorder().eval()
    wrapped = ConcurrentBatches(model, batch_size=3, workers=2)
    outputs = wrapped([{"id": i} for i in range(11)])
    assert [o["id"] for o in outputs] == list(range(11))
    assert sorted(size for size, _ in model.calls) == [2, 3, 3, 3]
    assert not any(o["grad"] for o in outputs)  # each worker thread enters inference mode
    assert torch.get_num_threads() >= 1


def test_concurrent_batches_start_in_the_model_mode_and_pass_mode_changes_on():
    model = _Recorder().eval()
    wrapped = ConcurrentBatches(model, batch_size=2, workers=1)
    assert not wrapped.training
    wrapped.train()
    assert model.training
    with pytest.raises(ValueError, match="batch_size and workers"):
        ConcurrentBatches(model, batch_size=0, workers=1)


class _Keep:
    """A DatasetEvaluator that keeps every output's image id and category probabilities."""

    def __init__(self):
        self.rows: list[tuple[int, torch.Tensor]] = []

    def reset(self):
        self.rows = []

    def process(self, inputs, outputs):
        self.rows += [(i["image_id"], o["sem_seg"].clone()) for i, o in zip(inputs, outputs)]

    def evaluate(self):
        return {}


@pytest.mark.parametrize("batching", [("3", "2"), ("8", "0")])
def test_trainer_test_in_batches_equals_one_slice_at_a_time(eval_phantom_dataset, batching):
    """Same outputs, same order, fewer model calls than slices."""
    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.engine import Trainer

    def cfg_with(batch_size: str, concurrent: str):
        cfg = get_brainseg_cfg()
        cfg.merge_from_file(str(INSTANT))
        cfg.merge_from_list([
            "DATASETS.TEST", "('eval_phantom_val',)", "INPUT.MIN_SIZE_TEST", "64",
            "TEST.DETECTIONS_PER_IMAGE", "5",  # an untrained model keeps 100 boxes: slow, no gain
            "BRAINSEG.INFERENCE.BATCH_SIZE", batch_size,
            "BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES", concurrent,
        ])  # fmt: skip
        cfg.freeze()
        return cfg

    one, batched = cfg_with("1", "1"), cfg_with(*batching)
    torch.manual_seed(0)
    model = build_model(one).eval()
    num_slices = len(DatasetCatalog.get("eval_phantom_val"))
    assert len(Trainer.build_test_loader(one, "eval_phantom_val")) == num_slices
    loader = Trainer.build_test_loader(batched, "eval_phantom_val")
    assert len(loader) < num_slices

    expected, got = _Keep(), _Keep()
    Trainer.test(one, model, evaluators=[expected])
    Trainer.test(batched, model, evaluators=[got])
    assert not model.training  # the model's own mode is restored
    assert [i for i, _ in got.rows] == [i for i, _ in expected.rows]
    assert len(got.rows) == num_slices
    for (_, a), (_, b) in zip(expected.rows, got.rows):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)  # oneDNN: batch-size kernels


def test_trainer_test_skips_instances_only_when_no_evaluator_reads_them(
    eval_phantom_dataset, tmp_path, monkeypatch
):
    from detectron2.modeling import build_model

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.engine import Trainer
    from brainseg_d2.evaluation.evaluator import BrainSegEvaluator

    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list([
        "DATASETS.TEST", "('eval_phantom_val',)", "INPUT.MIN_SIZE_TEST", "64",
        "TEST.DETECTIONS_PER_IMAGE", "5",
        "BRAINSEG.EVAL.COCO_AP", "False", "OUTPUT_DIR", str(tmp_path),
    ])  # fmt: skip
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    proposals = []
    forward = model.proposal_generator.forward
    monkeypatch.setattr(
        model.proposal_generator, "forward", lambda *a: proposals.append(1) or forward(*a)
    )
    volume = BrainSegEvaluator.from_config(cfg, "eval_phantom_val", str(tmp_path))
    assert not volume.uses_instances
    results = Trainer.test(cfg, model, evaluators=[volume])
    assert not proposals and "volume_dice_WT_raw" in results["brainseg"]
    Trainer.test(cfg, model)  # the Trainer's own evaluators: the volume one alone here
    assert not proposals
    keep = _Keep()  # an evaluator that does not say: it gets the instances
    Trainer.test(cfg, model, evaluators=[keep])
    assert proposals and model.infer_instances
