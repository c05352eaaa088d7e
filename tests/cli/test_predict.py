"""brainseg-predict: strict weights, --skip-existing, --skip-bad, outputs never inputs."""

from __future__ import annotations

import shutil

import pytest
import torch

from brainseg_d2.cli.predict import main


def _args(weights_files, phantom_dataset, input_dir, output, weights="good", *extra):
    return [
        "--config-file", weights_files["config"],
        "--input", str(input_dir),
        "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json"),
        "--output", str(output),
        "--no-progress",
        *extra,
        "MODEL.WEIGHTS", str(weights_files[weights]),
        *weights_files["opts"],
    ]  # fmt: skip


@pytest.mark.parametrize(
    "weights, expected",
    [
        ("five", "do not fit the model (0 missing, 0 unexpected, 6 shape-mismatched"),
        ("nores5", "missing, 0 unexpected, 0 shape-mismatched parameters; missing: backbone"),
        ("truncated", "truncated or not a checkpoint"),
    ],
    ids=["other-class-count", "no-res5", "truncated"],
)
def test_weights_that_do_not_fit_are_one_line_and_write_nothing(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys, weights, expected
):
    out = tmp_path / "out"
    rc = main(_args(weights_files, phantom_dataset, tiny_cases, out, weights))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert expected in err[0] and f"weights {weights_files[weights]}" in err[0]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine with no GPU")
def test_cuda_with_no_gpu_is_one_line_and_writes_nothing(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    out = tmp_path / "out"
    args = _args(weights_files, phantom_dataset, tiny_cases, out)
    assert main([*args, "MODEL.DEVICE", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: MODEL.DEVICE is 'cuda' (on the command line): no CUDA device here; "
                   "use MODEL.DEVICE cpu"]  # fmt: skip
    assert not out.exists()


def test_skip_bad_predicts_the_rest_and_skip_existing_resumes(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    cases = shutil.copytree(tiny_cases, tmp_path / "cases")
    out = tmp_path / "out"
    flair_b = cases / "Tiny_B" / "Tiny_B_flair.nii.gz"
    flair_b.unlink()
    bad = f"case Tiny_B: missing channel 'flair' ({flair_b})"
    rc = main(_args(weights_files, phantom_dataset, cases, out))
    assert rc == 2 and capsys.readouterr().err.strip().splitlines() == [f"error: {bad}"]
    assert not out.exists()

    rc = main(_args(weights_files, phantom_dataset, cases, out, "good", "--skip-bad"))
    captured = capsys.readouterr()
    assert rc == 1 and captured.err.strip().splitlines() == [f"skipped: {bad}"]
    assert sorted(p.name for p in out.iterdir()) == ["Tiny_A_pred.nii.gz"]
    first = (out / "Tiny_A_pred.nii.gz").read_bytes()

    shutil.copy(tiny_cases / "Tiny_B" / "Tiny_B_flair.nii.gz", flair_b)
    rc = main(_args(weights_files, phantom_dataset, cases, out))
    assert rc == 2 and "--skip-existing" in capsys.readouterr().err
    (out / "Tiny_A_pred.nii.gz").write_bytes(b"kept as it is")
    rc = main(_args(weights_files, phantom_dataset, cases, out, "good", "--skip-existing"))
    captured = capsys.readouterr()
    assert rc == 0 and "skipping 1 of 2 cases" in captured.out and captured.err == ""
    assert sorted(p.name for p in out.iterdir()) == ["Tiny_A_pred.nii.gz", "Tiny_B_pred.nii.gz"]
    assert (out / "Tiny_A_pred.nii.gz").read_bytes() == b"kept as it is"
    assert len(first) > 100


def test_an_output_that_is_an_input_file_is_refused(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    case = shutil.copytree(tiny_cases / "Tiny_A", tmp_path / "Tiny_A")
    flair = case / "Tiny_A_flair.nii.gz"
    before = flair.read_bytes()
    rc = main(_args(weights_files, phantom_dataset, case, flair, "good", "--overwrite"))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"--output {flair} is the input {flair}" in err[0]
    assert flair.read_bytes() == before
    assert sorted(p.name for p in case.iterdir()) == sorted(
        p.name for p in (tiny_cases / "Tiny_A").iterdir()
    )

    # Nor beside the case's own files, or anywhere under the input folder.
    for out in (case, tmp_path / "Tiny_A" / "preds"):
        rc = main(_args(weights_files, phantom_dataset, case, out, "good"))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and f"the input {case}" in err[0]
    assert sorted(p.name for p in case.iterdir()) == sorted(
        p.name for p in (tiny_cases / "Tiny_A").iterdir()
    )


def test_overwrite_and_skip_existing_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config-file", "c.yaml", "--input", "i", "--output", "o", "--overwrite",
              "--skip-existing"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not allowed with argument" in err[0]
