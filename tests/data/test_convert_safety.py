"""brainseg-convert never touches the input, lists every bad case, splits after filtering."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.cli.convert import main
from brainseg_d2.data.convert import MARKER, ConvertOptions, convert_dataset
from brainseg_d2.data.sources import find_brats_cases

SHAPE = (6, 16, 16)  # (z, y, x)


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_case(root: Path, case_id: str, seed: int = 0) -> Path:
    """A small BraTS-2021 case folder: four channels and a label map."""
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    brain = ((zz - 2.5) / 2.6) ** 2 + ((yy - 7.5) / 7) ** 2 + ((xx - 7.5) / 7) ** 2 < 1
    rng = np.random.default_rng(seed)
    folder = root / case_id
    for i, channel in enumerate(("flair", "t1", "t1ce", "t2")):
        array = (rng.gamma(4.0, 40.0, SHAPE) + 5 + 10 * i).astype(np.float32) * brain
        _write(array, folder / f"{case_id}_{channel}.nii.gz")
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:4, 5:11, 5:11] = 2
    seg[2:4, 7:9, 7:9] = 4
    _write(seg * brain, folder / f"{case_id}_seg.nii.gz")
    return folder


def make_cases(root: Path, n: int = 3) -> Path:
    for i in range(n):
        make_case(root, f"Case_{i:03d}", seed=i)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file and folder under ``root`` (files with their bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    rc = main([*args, "--no-progress"])
    captured = capsys.readouterr()
    return rc, captured.err.strip().splitlines(), captured.out


# ------------------------------------------------------------------ item 1: overwrite
@pytest.mark.parametrize(
    "out_of",
    [
        pytest.param(lambda src: src, id="out-is-input"),
        pytest.param(lambda src: src.parent, id="out-contains-input"),
        pytest.param(lambda src: src / "Case_001", id="out-is-a-case-folder"),
        pytest.param(lambda src: src / "converted", id="out-inside-input"),
    ],
)
def test_overwrite_never_touches_the_input(tmp_path, capsys, out_of):
    src = make_cases(tmp_path / "data" / "in")
    (tmp_path / "data" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    out = out_of(src)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(out), "--overwrite")
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: --out")
    assert str(out) in err[0] and "input" in err[0]
    assert snapshot(tmp_path) == before  # byte-identical, nothing added


def test_overwrite_replaces_only_a_dataset_the_converter_wrote(tmp_path, capsys):
    src = make_cases(tmp_path / "in")
    user = tmp_path / "results"
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "model.pth").write_bytes(b"weights")
    (user / "dataset.json").write_text("{}")  # looks like a dataset, but not ours
    before = snapshot(user)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(user), "--overwrite")
    assert rc == 2 and len(err) == 1
    assert str(user) in err[0] and MARKER in err[0]
    assert snapshot(user) == before

    out = tmp_path / "ds"
    assert run(capsys, "--input", str(src), "--output", str(out))[0] == 0
    assert (out / MARKER).is_file()
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(out))
    assert rc == 2 and "pass --overwrite" in err[0]
    again = run(capsys, "--input", str(src), "--output", str(out), "--overwrite", "--seed", "3")
    assert again[0] == 0
    assert json.loads((out / "dataset.json").read_text())["options"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in", "results"]

    made = tmp_path / "made_by_user"  # mkdir first, then convert: an empty folder is taken
    made.mkdir()
    assert run(capsys, "--input", str(src), "--output", str(made))[0] == 0
    assert (made / "dataset.json").is_file() and (made / MARKER).is_file()


@pytest.mark.parametrize(
    "add",
    [
        pytest.param(lambda ds: (ds / "my_notes.txt").write_text("mine"), id="file-at-top"),
        pytest.param(lambda ds: (ds / "images" / "train" / "x.png").write_bytes(b"m"),
                     id="file-among-images"),
        pytest.param(lambda ds: (ds / "checkpoints").mkdir(), id="empty-folder"),
    ],
)
def test_overwrite_stops_at_a_file_the_user_added_to_a_dataset(tmp_path, capsys, add):
    src = make_cases(tmp_path / "in")
    out = tmp_path / "ds"
    assert run(capsys, "--input", str(src), "--output", str(out))[0] == 0
    listed = (out / MARKER).read_text().splitlines()[1:]
    assert "dataset.json" in listed and "annotations/" in listed
    add(out)
    before = snapshot(out)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(out), "--overwrite")
    assert rc == 2 and len(err) == 1
    extra = sorted(set(before) - {str(Path(e.rstrip("/"))) for e in listed} - {MARKER})
    assert len(extra) == 1 and f"holds {Path(extra[0]).as_posix()}" in err[0]
    assert snapshot(out) == before  # the old dataset and the user's file, untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "in"]  # no work folder left


def test_work_and_old_folder_names_never_clobber_user_folders(tmp_path, capsys):
    src = make_cases(tmp_path / "in")
    out = tmp_path / "ds"
    assert run(capsys, "--input", str(src), "--output", str(out))[0] == 0
    old = tmp_path / "ds.tmp-old"  # the name an earlier version deleted
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    assert run(capsys, "--input", str(src), "--output", str(out), "--overwrite")[0] == 0
    assert (old / "keep.txt").read_text() == "mine"

    work = tmp_path / "other.tmp-convert"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(tmp_path / "other"))
    assert rc == 2 and len(err) == 1 and str(work) in err[0]
    assert [p.name for p in work.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------ item 4: splits
def test_skip_bad_splits_the_good_cases_after_filtering(tmp_path, capsys):
    src = make_cases(tmp_path / "in", n=3)
    (src / "Case_000" / "Case_000_t2.nii.gz").unlink()
    (src / "Case_002" / "Case_002_flair.nii.gz").write_bytes(b"")
    out = tmp_path / "ds"
    rc, err, stdout = run(capsys, "--input", str(src), "--output", str(out), "--skip-bad")
    assert rc == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"] == {"train": ["Case_001"]}
    assert [s["case_id"] for s in info["skipped"]] == ["Case_000", "Case_002"]
    warning = [line for line in err if line.startswith("warning:")]
    assert len(warning) == 1 and "val, test" in warning[0]
    assert "train: 1 volumes" in stdout


@pytest.mark.parametrize(
    "args, says",
    [
        pytest.param(["--skip-bad"], "ask for fewer splits", id="nothing-skipped"),
        pytest.param(["--folds", "9", "--fold", "7"], "ask for fewer folds", id="folds"),
        pytest.param(["--workers", "0", "--split", "1", "0", "0"], "workers must be at least 1",
                     id="workers"),
        pytest.param(["--min-area", "-3"], "min_area must be >= 0, got -3", id="min-area"),
        pytest.param(["--lower-percentile", "99", "--upper-percentile", "1"],
                     "need 0 <= lower_percentile < upper_percentile", id="percentiles"),
        pytest.param(["--channels", "flair", "flair"], "each once", id="channels-twice"),
    ],
)
def test_option_errors_are_one_line_before_any_case(tmp_path, capsys, args, says):
    src = make_cases(tmp_path / "in", n=2)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(tmp_path / "ds"), *args)
    assert rc == 2 and len(err) == 1 and says in err[0], err
    assert not err[0].startswith("error: case")  # an option's fault, said once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_skip_bad_resplits_after_a_bad_voxel_case(tmp_path):
    src = make_cases(tmp_path / "in", n=3)
    cases = find_brats_cases(src)
    options = ConvertOptions(split=(0.34, 0.33, 0.33))
    first = convert_dataset(cases, tmp_path / "all", options, progress=False)["splits"]
    bad = first["train"][0]
    flair = src / bad / f"{bad}_flair.nii.gz"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(flair)))
    _write(np.where(array > 150, np.nan, array).astype(np.float32), flair)
    warnings = []
    info = convert_dataset(
        cases, tmp_path / "ds", options, skip_bad=True, progress=False, on_warning=warnings.append
    )
    assert [s["case_id"] for s in info["skipped"]] == [bad]
    assert "train" in info["splits"] and len(info["splits"]["train"]) == 1
    assert len(warnings) == 1 and "would be empty" in warnings[0]
    volumes = json.loads((tmp_path / "ds" / "volumes.json").read_text())["volumes"]
    for vid, entry in volumes.items():  # each case's PNGs sit in its final split only
        assert (tmp_path / "ds" / "images" / entry["split"] / vid).is_dir()
    assert len(list((tmp_path / "ds" / "images").glob("*/*"))) == 2


def test_a_requested_split_left_empty_is_an_error(tmp_path, capsys):
    src = make_cases(tmp_path / "in", n=2)
    out = tmp_path / "ds"
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(out))
    assert rc == 2 and len(err) == 1
    assert "splits val, test would be empty" in err[0] and "--split" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    split = run(capsys, "--input", str(src), "--output", str(out), "--split", "0.5", "0.5", "0")
    assert split[0] == 0


# ------------------------------------------------------------------ item 5: links
def test_symlinked_case_folders_are_found_without_looping(tmp_path):
    store = make_cases(tmp_path / "shared", n=3)
    linked = tmp_path / "mine"
    (linked / "HGG").mkdir(parents=True)
    os.symlink(store / "Case_000", linked / "HGG" / "Case_000")
    os.symlink(store / "Case_001", linked / "renamed")  # link named otherwise than the case
    os.symlink(linked, linked / "HGG" / "loop")  # a cycle
    os.symlink(store / "Case_000", linked / "again")  # one folder twice
    cases = find_brats_cases(linked)
    assert [c.case_id for c in cases] == ["Case_000", "Case_001"]
    assert all(Path(p).is_file() for c in cases for p in c.files())


# ------------------------------------------------------------------ items 6 and 7: listing
def _break(src: Path) -> dict[str, str]:
    """Break cases 0-3 differently; case id -> what the message must say."""
    (src / "Case_000" / "Case_000_t1ce.nii.gz").unlink()
    (src / "Case_001" / "Case_001_t2.nii.gz").write_bytes(b"")
    seg = src / "Case_002" / "Case_002_seg.nii.gz"
    _write(np.zeros((6, 16, 12), np.uint8), seg)
    (src / "Case_003" / "Case_003_flair.nii.gz").write_bytes(b"\x1f\x8b not gzip" * 20)
    return {
        "Case_000": "missing channel 't1ce'",
        "Case_001": "Case_001_t2.nii.gz: empty file (0 bytes)",
        "Case_002": f"size of 'mask' ({seg})",
        "Case_003": "Case_003_flair.nii.gz",
    }


def test_every_bad_case_is_listed_one_line_each_and_nothing_written(tmp_path, capsys):
    src = make_cases(tmp_path / "in", n=5)
    expected = _break(src)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(tmp_path / "ds"))
    assert rc == 2
    assert len(err) == len(expected)
    for line, (case_id, text) in zip(err, expected.items()):
        assert line.startswith(f"error: case {case_id}: ") and text in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_many_bad_cases_are_counted_after_twenty(tmp_path, capsys):
    src = tmp_path / "in"
    for i in range(23):  # a flair file only: t1, t1ce, t2 missing
        shutil.copytree(make_case(tmp_path / "one", "X", seed=i), src / f"Case_{i:03d}")
        for p in (src / f"Case_{i:03d}").iterdir():
            if p.name.endswith("_flair.nii.gz"):
                p.rename(p.with_name(f"Case_{i:03d}_flair.nii.gz"))
            else:
                p.unlink()
        shutil.rmtree(tmp_path / "one")
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(tmp_path / "ds"))
    assert rc == 2 and len(err) == 21
    assert all("missing channel" in line for line in err[:20])
    assert err[20] == "error: ... and 3 more bad cases (23 in all)"
    assert not (tmp_path / "ds").exists()


def test_bad_voxels_in_several_cases_are_all_listed(tmp_path, capsys):
    src = make_cases(tmp_path / "in", n=4)
    for case_id in ("Case_001", "Case_003"):
        flair = src / case_id / f"{case_id}_flair.nii.gz"
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(flair)))
        _write(np.where(array > 150, np.inf, array).astype(np.float32), flair)
    rc, err, _ = run(capsys, "--input", str(src), "--output", str(tmp_path / "ds"))
    assert rc == 2 and len(err) == 2
    assert err[0].startswith("error: case Case_001") and err[1].startswith("error: case Case_003")
    assert all("NaN or Inf" in line for line in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
