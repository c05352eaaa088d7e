"""Commands that write never replace what they did not write: phantom, report, demo, tools."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(relative: str):
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_safety", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_phantom_overwrite_replaces_only_its_own_cases(tmp_path, capsys):
    from brainseg_d2.cli import phantom

    out = tmp_path / "data"
    user_case = out / "Phantom_00000"
    user_case.mkdir(parents=True)
    (user_case / "Phantom_00000_flair.nii.gz").write_bytes(b"a real patient")
    args = ["--output", str(out), "--num-cases", "1", "--spacing", "4", "--overwrite"]
    assert phantom.main(args) == 2
    line = _one_error_line(capsys)
    assert str(user_case) in line and phantom.CLI_MARKER in line
    assert [p.name for p in user_case.iterdir()] == ["Phantom_00000_flair.nii.gz"]
    assert (user_case / "Phantom_00000_flair.nii.gz").read_bytes() == b"a real patient"

    ours = tmp_path / "ours"
    assert phantom.main(["--output", str(ours), "--num-cases", "1", "--spacing", "4"]) == 0
    assert phantom.main(["--output", str(ours), "--num-cases", "1", "--spacing", "4", "--seed",
                         "1", "--overwrite"]) == 0  # fmt: skip
    assert (ours / "Phantom_00000" / phantom.CLI_MARKER).is_file()
    # A case folder it wrote, where the user then put a file: that file stops --overwrite.
    (ours / "Phantom_00000" / "notes.txt").write_text("mine")
    flair = (ours / "Phantom_00000" / "Phantom_00000_flair.nii.gz").read_bytes()
    assert phantom.main(["--output", str(ours), "--num-cases", "1", "--spacing", "4", "--seed",
                         "2", "--overwrite"]) == 2  # fmt: skip
    assert "holds notes.txt, which brainseg-phantom did not write" in _one_error_line(capsys)
    assert (ours / "Phantom_00000" / "notes.txt").read_text() == "mine"
    assert (ours / "Phantom_00000" / "Phantom_00000_flair.nii.gz").read_bytes() == flair


def test_demo_replaces_a_finished_output_only_while_it_holds_nothing_of_the_users(tmp_path):
    from brainseg_d2.pipeline import MARKER, prepare_output
    from brainseg_d2.utils.paths import write_marker

    folder = tmp_path / "demo"
    prepare_output(folder)  # a run starts: the whole folder is the demo's until it finishes
    (folder / "train").mkdir()
    (folder / "train" / "model_final.pth").write_bytes(b"w")
    prepare_output(folder)  # an interrupted run's folder is replaced
    assert sorted(p.name for p in folder.iterdir()) == [MARKER]

    (folder / "summary.json").write_text("{}")
    write_marker(folder, MARKER, "the demo")  # as a finished run does
    (folder / "my_analysis.ipynb").write_text("mine")
    with pytest.raises(ValueError, match="holds my_analysis.ipynb, which the demo did not"):
        prepare_output(folder)
    assert (folder / "my_analysis.ipynb").read_text() == "mine"
    (folder / "my_analysis.ipynb").unlink()
    prepare_output(folder)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER]


def test_report_never_replaces_an_input_or_a_file_it_did_not_write(tmp_path, capsys):
    from brainseg_d2.cli.report import main

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    cases = eval_dir / "brainseg_cases.csv"
    cases.write_text(
        "volume_id,patient_id,group,name,variant,dice,iou,hd95\n"
        "A,A,region,WT,raw,0.5,0.3,4\nA,A,region,WT,post,0.6,0.4,3\n"
    )
    (eval_dir / "brainseg_summary.json").write_text(json.dumps({"volume_dice_WT_post": 0.6}))
    before = cases.read_bytes()
    assert main(["--input", str(eval_dir), "--output", str(cases)]) == 2
    assert f"report {cases} is the input {cases}" in _one_error_line(capsys)
    assert cases.read_bytes() == before

    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    assert main(["--input", str(eval_dir), "--output", str(notes)]) == 2
    assert str(notes) in _one_error_line(capsys)
    assert notes.read_text() == "<p>my notes</p>"
    (tmp_path / "folder.html").mkdir()
    assert main(["--input", str(eval_dir), "--output", str(tmp_path / "folder.html")]) == 2
    assert "is not a file" in _one_error_line(capsys)
    assert main(["--input", str(eval_dir), "--output", str(tmp_path)]) == 2
    assert f"report {tmp_path} contains the input" in _one_error_line(capsys)

    report = tmp_path / "report.html"
    assert main(["--input", str(eval_dir), "--output", str(report)]) == 0
    assert main(["--input", str(eval_dir), "--output", str(report), "--title", "again"]) == 0
    assert "again" in report.read_text(encoding="utf-8")


def test_demo_output_must_be_a_folder_it_wrote_and_hold_no_input(tmp_path, capsys):
    from brainseg_d2.pipeline import prepare_output

    afile = tmp_path / "file.txt"
    afile.write_text("mine")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_output(afile)
    assert afile.read_text() == "mine"

    run_demo = _load("tools/run_demo.py")
    folder = tmp_path / "out"
    folder.mkdir()
    weights = folder / "model.pth"
    weights.write_bytes(b"weights")
    (folder / ".brainseg-demo").write_text("")  # even a demo folder: it holds an input
    assert run_demo.main(["--output", str(folder), "MODEL.WEIGHTS", str(weights)]) == 2
    line = _one_error_line(capsys)
    assert f"--output {folder} contains the input {weights}" in line
    assert weights.read_bytes() == b"weights"


def test_visualize_data_output_stays_outside_the_dataset(phantom_dataset, capsys):
    tool = _load("tools/visualize_data.py")
    dataset = phantom_dataset["dataset"]
    before = sorted(p.name for p in dataset.iterdir())
    assert tool.main(["--input", str(dataset), "--output", str(dataset / "gt")]) == 2
    assert "lies inside the input" in _one_error_line(capsys)
    assert sorted(p.name for p in dataset.iterdir()) == before
