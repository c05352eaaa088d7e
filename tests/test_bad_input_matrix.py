"""Bad input, run as a user would (a subprocess per command): exit 2, the tool's own lines only.

Each case asserts: a non-zero exit (2), exactly the expected number of lines on
stderr (one, or one per bad case), all of them the tool's (``error: ...``; no
traceback, no third-party warning), nothing on stdout, and nothing written or
changed (the input byte-identical, no output folder).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def _convert(w, cases, tmp):
    return [sys.executable, "-m", "brainseg_d2.cli.convert", "--input", str(cases),
            "--no-progress"]  # fmt: skip


def _predict(w, cases, tmp, weights="good"):
    return [sys.executable, "-m", "brainseg_d2.cli.predict", "--config-file", w["config"],
            "--dataset-info", str(tmp / "phantom" / "dataset.json"), "--input", str(cases),
            "--output", str(tmp / "pred"), "--no-progress", "MODEL.WEIGHTS", str(w[weights]),
            *w["opts"]]  # fmt: skip


def _train(w, cases, tmp):
    return [sys.executable, str(REPO / "tools" / "train_net.py")]


def _break_two(cases: Path) -> None:
    (cases / "Tiny_A" / "Tiny_A_t1ce.nii.gz").unlink()
    (cases / "Tiny_B" / "Tiny_B_seg.nii.gz").write_bytes(b"")


MATRIX = {
    # name: (command, extra args, how to break the input, stderr lines, text in line 1)
    "convert-out-is-input": (
        _convert, lambda c, t: ["--output", str(c), "--overwrite"], None, 1, "is the input"),
    "convert-two-bad-cases": (
        _convert, lambda c, t: ["--output", str(t / "ds")], _break_two, 2,
        "missing channel 't1ce'"),
    "convert-empty-split": (
        _convert, lambda c, t: ["--output", str(t / "ds")], None, 1, "would be empty"),
    "predict-weights-other-shape": (
        lambda w, c, t: _predict(w, c, t, "five"), lambda c, t: [], None, 1,
        "shape-mismatched"),
    "predict-missing-channel": (
        _predict, lambda c, t: [], _break_two, 1, "missing channel 't1ce'"),
    "train-bad-override": (
        _train, lambda c, t: ["--config-file", str(REPO / "configs" / "phantom" /
                                                   "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"),
                              "SOLVER.IMS_PER_BATCH", "0"],
        None, 1, "SOLVER.IMS_PER_BATCH is 0 (on the command line)"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(MATRIX))
def test_bad_input_exits_2_with_the_tools_own_lines_and_writes_nothing(
    name, weights_files, tiny_cases, phantom_dataset, tmp_path
):
    command, extra, breaker, num_lines, text = MATRIX[name]
    work = tmp_path / "work"
    cases = work / "cases"
    shutil.copytree(tiny_cases, cases)
    shutil.copytree(phantom_dataset["dataset"], work / "phantom")
    if breaker is not None:
        breaker(cases)
    before = _snapshot(work)
    env = dict(os.environ, DETECTRON2_DATASETS=str(work))
    r = subprocess.run(
        [*command(weights_files, cases, work), *extra(cases, work)],
        capture_output=True, text=True, cwd=work, env=env, timeout=300,
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert len(lines) == num_lines, r.stderr
    assert all(": error: " in line or line.startswith("error: ") for line in lines), r.stderr
    assert text in lines[0]
    assert "Traceback" not in r.stderr and "Warning" not in r.stderr
    assert r.stdout == ""  # no "Command Line Args", no progress, nothing half-done
    assert _snapshot(work) == before  # the input untouched, nothing written (no ./output)
