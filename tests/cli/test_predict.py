"""brainseg-predict: strict weights, --skip-existing, --skip-bad, outputs never inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
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


def test_volume_files_paired_by_globs_or_listed_in_a_csv(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    import SimpleITK as sitk

    # One case in MHA and NRRD files, named otherwise than BraTS does.
    scans = tmp_path / "scans"
    scans.mkdir()
    for channel in ("flair", "t1", "t1ce", "t2"):
        image = sitk.ReadImage(str(tiny_cases / "Tiny_A" / f"Tiny_A_{channel}.nii.gz"))
        sitk.WriteImage(image, str(scans / f"p7.{channel}.{'mha' if channel < 't2' else 'nrrd'}"))
    globs = ["flair=*.flair.mha", "t1=*.t1.mha", "t1ce=*.t1ce.mha", "t2=*.t2.nrrd"]
    out = tmp_path / "out"
    # The globs run into the trailing KEY VALUE overrides: those are handed back.
    argv = ["--config-file", weights_files["config"], "--input", str(scans), "--dataset-info",
            str(phantom_dataset["dataset"] / "dataset.json"), "--output", str(out),
            "--no-progress", "--raw", "--images", *globs,
            "MODEL.WEIGHTS", str(weights_files["good"]), *weights_files["opts"]]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    paired = out / "p7_pred.nii.gz"
    reference = tmp_path / "ref"
    assert main(_args(weights_files, phantom_dataset, tiny_cases / "Tiny_A", reference,
                      "good", "--raw")) == 0  # fmt: skip
    ours = sitk.ReadImage(str(paired))
    theirs = sitk.ReadImage(str(reference / "Tiny_A_pred.nii.gz"))
    assert set(sitk.GetArrayFromImage(theirs).ravel().tolist()) == {0, 1, 2, 4}  # not trivial
    assert ours.GetSize() == theirs.GetSize() and ours.GetSpacing() == theirs.GetSpacing()
    assert (sitk.GetArrayFromImage(ours) == sitk.GetArrayFromImage(theirs)).all()

    manifest = tmp_path / "cases.csv"
    manifest.write_text("case_id,image_flair,image_t1,image_t1ce,image_t2\n"
                        "p7," + ",".join(f"scans/{g.split('=')[1].replace('*', 'p7')}"
                                         for g in globs) + "\n")  # fmt: skip
    assert main(_args(weights_files, phantom_dataset, manifest, tmp_path / "csv", "good",
                      "--raw")) == 0  # fmt: skip
    listed = sitk.ReadImage(str(tmp_path / "csv" / "p7_pred.nii.gz"))
    assert (sitk.GetArrayFromImage(listed) == sitk.GetArrayFromImage(theirs)).all()

    # A case id is an output name, never a way out of --output (nor into another folder).
    row = manifest.read_text().splitlines()[1]
    for bad in ("../../escaped", "/tmp/absolute", "a//b"):
        manifest.write_text(manifest.read_text().splitlines()[0] + "\n"
                            + row.replace("p7,", f"{bad},", 1) + "\n")  # fmt: skip
        assert main(_args(weights_files, phantom_dataset, manifest, tmp_path / "esc" / "o",
                          "good")) == 2  # fmt: skip
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{manifest} line 2: case_id {bad!r} is not a plain name" in line
    assert not (tmp_path / "esc").exists() and not list(tmp_path.glob("*_pred.nii.gz"))


def test_an_output_name_outside_the_output_folder_is_refused(tmp_path):
    from brainseg_d2.data.sources import Case
    from brainseg_d2.inference.case_files import output_paths

    case = Case("../x", "x", {"flair": "x.nii.gz"}, None, "brats2021", {})
    with pytest.raises(ValueError, match=r"case id '../x' would write .*, outside --output"):
        output_paths([case], tmp_path / "out")


def test_dataset_info_that_is_not_a_dataset_json_is_named(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    args = _args(weights_files, phantom_dataset, tiny_cases / "Tiny_A", tmp_path / "o")
    volumes = phantom_dataset["dataset"] / "volumes.json"
    args[args.index("--dataset-info") + 1] = str(volumes)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{volumes} is not a dataset.json" in err[0]


def test_images_without_a_channel_name_are_named_as_such(tmp_path, capsys):
    """Not "bad config override: Non-existent key: *_flair.mha"."""
    argv = ["--config-file", "c.yaml", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
            "--images", "*_flair.mha", "*_t1.mha"]  # fmt: skip
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: --images takes NAME=GLOB, one per channel (e.g. "
                    "flair='*_flair.mha'); got '*_flair.mha'")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_option_and_channel_errors_name_what_to_change(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    out = tmp_path / "o"
    assert main(_args(weights_files, phantom_dataset, tiny_cases, out, "good",
                      "--batch-size", "0")) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: --batch-size must be >= 1, got 0"
    three = ["MODEL.PIXEL_MEAN", "[40.0, 40.0, 40.0]", "MODEL.PIXEL_STD", "[50.0, 50.0, 50.0]"]
    assert main([*_args(weights_files, phantom_dataset, tiny_cases, out), *three]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the model takes 3 channels (MODEL.PIXEL_MEAN) but the dataset has 4 (" in line
    assert not out.exists()


def test_a_decathlon_task_is_predicted_in_its_own_labels(
    weights_files, phantom_dataset, tiny_cases, write_task, tmp_path, capsys
):
    import SimpleITK as sitk

    # Tiny_A as a Decathlon training case (one 4D image), Tiny_B as its test case.
    task = write_task(tiny_cases, tmp_path / "Task01_BrainTumour", "msd", test_cases=1)
    out = tmp_path / "out"
    assert main(_args(weights_files, phantom_dataset, task / "imagesTs", out, "good",
                      "--raw")) == 0, capsys.readouterr().err  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["BRATS_002_pred.nii.gz"]
    reference = tmp_path / "ref"
    assert main(_args(weights_files, phantom_dataset, tiny_cases / "Tiny_B", reference,
                      "good", "--raw")) == 0  # fmt: skip
    ours = sitk.ReadImage(str(out / "BRATS_002_pred.nii.gz"))
    theirs = sitk.ReadImage(str(reference / "Tiny_B_pred.nii.gz"))
    assert ours.GetDimension() == 3 and ours.GetSize() == theirs.GetSize()
    assert ours.GetOrigin() == theirs.GetOrigin() and ours.GetDirection() == theirs.GetDirection()
    brats = sitk.GetArrayFromImage(theirs)
    assert set(brats.ravel().tolist()) == {0, 1, 2, 4}  # not trivial
    # The same prediction, written as the Decathlon labels it: 1 edema, 2 core, 3 enhancing.
    as_msd = np.select([brats == 2, brats == 1, brats == 4], [1, 2, 3], 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ours), as_msd)
    # The API's layout "auto" finds the task too, and writes the same labels.
    from brainseg_d2.cli.predict import build_parser, setup_cfg
    from brainseg_d2.inference.case_files import predict_cases

    args = build_parser().parse_args(_args(weights_files, phantom_dataset, task, out, "good",
                                           "--raw"))  # fmt: skip
    api = tmp_path / "api"
    assert predict_cases(setup_cfg(args), task / "imagesTs", api, layout="auto", progress=False,
                         dataset_info=args.dataset_info) == 0  # fmt: skip
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(api / "BRATS_002_pred.nii.gz")))
    np.testing.assert_array_equal(written, as_msd)
    # Never into the task: its labelsTr would then hold predictions.
    assert main(_args(weights_files, phantom_dataset, task / "imagesTs", task / "labelsTr",
                      "good", "--raw")) == 2  # fmt: skip
    assert "inside the input" in capsys.readouterr().err
    assert sorted(p.name for p in (task / "labelsTr").iterdir()) == ["BRATS_001.nii.gz"]
    # The whole task folder: every case, the training case too.
    assert main(_args(weights_files, phantom_dataset, task, tmp_path / "all", "good",
                      "--raw")) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "BRATS_001_pred.nii.gz", "BRATS_002_pred.nii.gz"]  # fmt: skip
    # A task whose labels are no built-in's is predicted in the convention named.
    spec = json.loads((task / "dataset.json").read_text())
    spec["labels"] = {"0": "background", "1": "NCR", "2": "ED", "3": "ET"}
    (task / "dataset.json").write_text(json.dumps(spec))
    assert main(_args(weights_files, phantom_dataset, task / "imagesTs", tmp_path / "named",
                      "good", "--raw")) == 2  # fmt: skip
    assert "pass --label-convention" in capsys.readouterr().err
    assert main(_args(weights_files, phantom_dataset, task / "imagesTs", tmp_path / "named",
                      "good", "--raw", "--label-convention", "brats2023")) == 0  # fmt: skip
    named = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "named/BRATS_002_pred.nii.gz")))
    np.testing.assert_array_equal(named, np.where(brats == 4, 3, brats))  # 1 NCR, 2 ED, 3 ET


def test_a_brats_2015_case_folder_is_predicted_in_its_labels(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys
):
    import SimpleITK as sitk

    # Tiny_B as BraTS 2015 stores a case: an .mha per sequence, each in a VSD folder.
    case = tmp_path / "brats_2013_pat0002_1"
    for k, (channel, name) in enumerate({"flair": "Flair", "t1": "T1", "t1ce": "T1c",
                                         "t2": "T2"}.items()):  # fmt: skip
        vsd = case / f"VSD.Brain.XX.O.MR_{name}.{100 + k}"
        vsd.mkdir(parents=True)
        image = sitk.ReadImage(str(tiny_cases / "Tiny_B" / f"Tiny_B_{channel}.nii.gz"))
        sitk.WriteImage(image, str(vsd / f"{vsd.name}.mha"))
    out, reference = tmp_path / "out", tmp_path / "ref"
    assert main(_args(weights_files, phantom_dataset, case, out, "good", "--raw")) == 0, (
        capsys.readouterr().err
    )
    assert main(_args(weights_files, phantom_dataset, tiny_cases / "Tiny_B", reference,
                      "good", "--raw")) == 0  # fmt: skip
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "brats_2013_pat0002_1_pred.nii.gz")))
    theirs = sitk.GetArrayFromImage(sitk.ReadImage(str(reference / "Tiny_B_pred.nii.gz")))
    # BraTS 2015 labels: 1 necrosis (the core, as one), 2 edema, 4 enhancing, as 2021's.
    assert set(theirs.ravel().tolist()) == {0, 1, 2, 4}
    np.testing.assert_array_equal(ours, theirs)
