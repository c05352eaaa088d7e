"""tools/train_net.py: train, resume, eval-only, CPU multi-process, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
INSTANT = str(ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml")


def _train_net(args, root, timeout=600):
    env = dict(os.environ, DETECTRON2_DATASETS=str(root))
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_net.py"), *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT,
    )


def test_train_resume_and_eval_only(phantom_dataset, tmp_path):
    out = tmp_path / "run"
    base = ["--config-file", INSTANT]
    # No evaluation after training (about 2 min on 2 CPU cores each): the eval-only step does it.
    no_test = ["DATASETS.TEST", "()"]
    r = _train_net(base + ["OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "3", *no_test],
                   phantom_dataset["root"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model_final.pth").is_file()
    ckpt = torch.load(out / "model_final.pth", map_location="cpu")  # torch>=2.6 weights_only
    assert ckpt["iteration"] == 2

    r = _train_net(
        base + ["--resume", "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "5", *no_test],
        phantom_dataset["root"],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "Starting training from iteration 3" in log
    assert "[BrainSegDatasetMapper] train" in log  # the plugin's own messages are logged too
    assert torch.load(out / "model_final.pth", map_location="cpu")["iteration"] == 4

    # Five iterations from scratch may score nothing above the default 0.05, and then
    # COCOEvaluator prints "No predictions from the model!" instead of a segm table.
    # Threshold 0 keeps one detection per slice, so COCO segm evaluation always runs.
    # The test split (one volume) is half the val split's slices.
    r = _train_net(
        base + ["--eval-only", "OUTPUT_DIR", str(out),
                "MODEL.WEIGHTS", str(out / "model_final.pth"),
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "1",
                "DATASETS.TEST", "('phantom_test',)"],
        phantom_dataset["root"],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Evaluation results for segm" in r.stdout + r.stderr


class _Crash(RuntimeError):
    pass


def test_killed_run_resumes_from_last_checkpoint(phantom_dataset, tmp_path):
    from detectron2.engine import HookBase

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.data.datasets import register_all
    from brainseg_d2.engine import Trainer

    register_all(phantom_dataset["root"])
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(INSTANT)
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path), "SOLVER.MAX_ITER", "5",
                         "SOLVER.CHECKPOINT_PERIOD", "2",
                         "DATASETS.TEST", "()"])  # no evaluation after training: ~2 min
    cfg.freeze()

    class CrashAt(HookBase):
        def after_step(self):
            if self.trainer.iter == 2:
                raise _Crash("simulated kill")

    trainer = Trainer(cfg)
    trainer.register_hooks([CrashAt()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(_Crash):
        trainer.train()
    assert (tmp_path / "model_0000001.pth").is_file()
    assert not (tmp_path / "model_final.pth").exists()

    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2  # checkpoint written after iteration 1
    saved = torch.load(tmp_path / "model_0000001.pth", map_location="cpu")["model"]
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    resumed.train()
    assert resumed.iter == 5
    assert torch.load(tmp_path / "model_final.pth", map_location="cpu")["iteration"] == 4


def test_cpu_multiprocess_training_with_gloo(phantom_dataset, tmp_path):
    r = _train_net(
        ["--config-file", INSTANT, "--num-gpus", "2", "OUTPUT_DIR", str(tmp_path),
         "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "TEST.EVAL_PERIOD", "0",
         "DATASETS.TEST", "()"],
        phantom_dataset["root"],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = (tmp_path / "log.txt").read_text()
    assert "Rank of current process: 0. World size: 2" in log
    assert (tmp_path / "model_final.pth").is_file()


@pytest.mark.parametrize(
    "opts, message",
    [
        (["NOT_A.KEY", "1"], "bad config"),
        (["DATASETS.TRAIN", "('nope_train',)"], "'nope_train' is not registered"),
        (["MODEL.WEIGHTS", "/nonexistent/model.pkl"], "/nonexistent/model.pkl does not exist"),
    ],
    ids=["bad-key", "missing-dataset", "missing-weights"],
)
def test_bad_input_gives_one_clear_line(phantom_dataset, tmp_path, opts, message):
    r = _train_net(["--config-file", INSTANT, "OUTPUT_DIR", str(tmp_path), *opts],
                   phantom_dataset["root"])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("count", ["0", "-1"])
def test_no_process_at_all_is_an_error_not_a_silent_success(count):
    from brainseg_d2.engine import launch

    ran = []
    with pytest.raises(ValueError, match=f"must be at least 1, got {count} and 1"):
        launch(ran.append, int(count), args=(1,))
    assert not ran


def test_unreachable_zoo_weights_explain_offline_use(monkeypatch):
    from detectron2.utils.file_io import PathManager

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.engine import ensure_weights_available

    def offline(path, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(PathManager, "get_local_path", offline)
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "brats" / "mask_rcnn_R_50_FPN_bs16_20k.yaml"))
    with pytest.raises(ValueError, match='MODEL.WEIGHTS ""') as e:
        ensure_weights_available(cfg)
    assert "/path/to/" in str(e.value)
