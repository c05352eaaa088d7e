"""Converter: round trips, splits, determinism, resume and bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from brainseg_d2.cli.convert import main
from brainseg_d2.data import convert
from brainseg_d2.data.convert import ConversionError, ConvertOptions, convert_dataset
from brainseg_d2.data.io.png import read_channel_png
from brainseg_d2.data.preprocess import PreprocessOptions, preprocess_volume
from brainseg_d2.data.sources import SourceError, find_brats_cases, find_cases, read_manifest
from brainseg_d2.labels import get_convention, get_target, raw_to_tissue, tissue_to_raw
from brainseg_d2.structures import SliceGeometry
from brainseg_d2.utils.paths import write_marker

SHAPE = (12, 20, 24)  # (z, y, x): 24 x 20 x 12 voxels
SPACING = (0.9, 1.3, 2.5)
REPO = Path(__file__).resolve().parents[2]
# Permuted + flipped axes, rotated by ~6 degrees: an oblique acquisition.
_ROT = np.array([[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]])
OBLIQUE = tuple((np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]) @ _ROT).ravel())
BRATS21 = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}
BRATS23 = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}


def _brain() -> np.ndarray:
    """Ellipsoid touching neither the first nor the last z slice (those have no brain)."""
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    return ((zz - 5.5) / 5) ** 2 + ((yy - 9.5) / 8.5) ** 2 + ((xx - 11.5) / 10.5) ** 2 < 1


def _tissue(seed: int) -> np.ndarray:
    """Tissue codes: edema blob with necrotic core and enhancing rim, plus a small blob."""
    rng = np.random.default_rng(seed)
    t = np.zeros(SHAPE, np.uint8)
    z0, y0, x0 = 3 + rng.integers(0, 2), 5 + rng.integers(0, 3), 6 + rng.integers(0, 3)
    t[z0 : z0 + 5, y0 : y0 + 8, x0 : x0 + 8] = 2
    t[z0 + 1 : z0 + 4, y0 + 2 : y0 + 6, x0 + 2 : x0 + 6] = 3
    t[z0 + 2 : z0 + 3, y0 + 3 : y0 + 5, x0 + 3 : x0 + 5] = 1
    t[6:8, 14:16, 17:20] = 2  # second component
    return t & np.where(_brain(), 0xFF, 0).astype(np.uint8)


def _write(array: np.ndarray, path: Path, direction=None, spacing=SPACING) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.0, 30.5, 4.0))
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def _channel(seed: int) -> np.ndarray:
    array = (np.random.default_rng(seed).gamma(4.0, 40.0, SHAPE) + 5).astype(np.float32)
    array[~_brain()] = 0
    return array


def make_brats_case(
    root: Path, case_id: str, *, seed=0, style="2021", labelled=True, direction=None
) -> Path:
    names, sep, conv = (
        (BRATS21, "_", "brats2021") if style == "2021" else (BRATS23, "-", "brats2023")
    )
    folder = root / case_id
    for i, logical in enumerate(("flair", "t1", "t1ce", "t2")):
        _write(
            _channel(seed * 10 + i), folder / f"{case_id}{sep}{names[logical]}.nii.gz", direction
        )
    if labelled:
        raw = tissue_to_raw(_tissue(seed), get_convention(conv))
        _write(raw, folder / f"{case_id}{sep}seg.nii.gz", direction)
    return folder


def make_brats(root: Path, n: int = 4, **kwargs) -> Path:
    for i in range(n):
        make_brats_case(root, f"BraTS2021_{i:05d}", seed=i, **kwargs)
    return root


def rebuild(out: Path, target_name: str) -> dict[str, np.ndarray]:
    """Volume id -> tissue volume (z, y, x) rebuilt from the COCO files and volumes.json."""
    target = get_target(target_name)
    volumes = json.loads((out / "volumes.json").read_text())["volumes"]
    masks = {
        v: np.zeros(
            (len(target.categories), g["geometry"]["num_slices"], *g["geometry"]["slice_shape"]),
            bool,
        )
        for v, g in volumes.items()
    }
    for path in sorted((out / "annotations").glob("instances_*.json")):
        coco = json.loads(path.read_text())
        images = {im["id"]: im for im in coco["images"]}
        for ann in coco["annotations"]:
            im = images[ann["image_id"]]
            masks[im["volume_id"]][ann["category_id"] - 1, im["slice_index"]] |= mask_util.decode(
                ann["segmentation"]
            ).astype(bool)
    out_volumes = {}
    for vid, entry in volumes.items():
        geometry = SliceGeometry.from_json(entry["geometry"])
        image = geometry.slices_to_image(target.tissue_from_masks(masks[vid]))
        out_volumes[vid] = image
    return out_volumes


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


EXACT = {"min_area": 1, "empty_ratio": 1.0}


@pytest.mark.parametrize("target", ["labels", "regions"])
@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_round_trip_is_exact(tmp_path, axis, target):
    src = make_brats(tmp_path / "in", n=3, direction=OBLIQUE)
    out = tmp_path / "ds"
    opts = ConvertOptions(slice_axis=axis, target=target, **EXACT)
    convert_dataset(find_brats_cases(src), out, opts, progress=False)
    rebuilt = rebuild(out, target)
    volumes = json.loads((out / "volumes.json").read_text())["volumes"]
    assert sorted(rebuilt) == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    for vid, image in rebuilt.items():
        seg = sitk.ReadImage(str(src / vid / f"{vid}_seg.nii.gz"))
        expected = raw_to_tissue(sitk.GetArrayFromImage(seg), get_convention("brats2021"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)
        assert image.GetSize() == seg.GetSize()
        assert image.GetSpacing() == seg.GetSpacing()
        assert image.GetOrigin() == seg.GetOrigin()
        assert image.GetDirection() == seg.GetDirection()
        # Dropped slices hold no brain (so nothing to predict there).
        geometry = SliceGeometry.from_json(volumes[vid]["geometry"])
        flair = geometry.label_slices(sitk.ReadImage(str(src / vid / f"{vid}_flair.nii.gz")))
        dropped = sorted(set(range(geometry.num_slices)) - set(geometry.kept_slices))
        assert not flair[dropped].any()
        if axis == "axial":
            assert dropped  # the first and last slices have no brain


def test_images_match_preprocessing_and_coco_is_valid(tmp_path):
    src = make_brats(tmp_path / "in", n=3, direction=OBLIQUE)
    out = tmp_path / "ds"
    info = convert_dataset(
        find_brats_cases(src), out, ConvertOptions(slice_axis="coronal"), progress=False
    )
    assert info["channels"] == ["flair", "t1", "t1ce", "t2"]
    assert info["image_layout"] == "channel_tiles"
    # Label maps default to the nested BraTS regions (the configs' formulation).
    assert info["target"] == "regions"
    assert info["categories"] == get_target("regions").coco_categories()
    for split in info["splits"]:
        coco = COCO(str(out / "annotations" / f"instances_{split}.json"))
        assert coco.getCatIds() == [1, 2, 3]
        for ann in coco.loadAnns(coco.getAnnIds()):
            m = coco.annToMask(ann)
            # --min-area (10) applies to training annotations only
            assert m.sum() == ann["area"] >= (10 if split == "train" else 1)
            ys, xs = np.nonzero(m)
            assert ann["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
        for im in coco.loadImgs(coco.getImgIds()):
            for key in (
                "volume_id",
                "patient_id",
                "slice_index",
                "num_slices",
                "pixel_spacing",
                "slice_thickness",
            ):
                assert key in im
    case = find_brats_cases(src)[0]
    images = {c: sitk.ReadImage(case.channels[c]) for c in ("flair", "t1", "t1ce", "t2")}
    pre = preprocess_volume(images, PreprocessOptions(slice_axis="coronal", normalization="zscore"))
    seg = pre.geometry.label_slices(sitk.ReadImage(case.mask))
    tissue = raw_to_tissue(seg, get_convention("brats2021"))
    split = json.loads((out / "volumes.json").read_text())["volumes"][case.case_id]["split"]
    pngs = sorted((out / "images" / split / case.case_id).glob("*.png"))
    assert pngs
    for png in pngs:
        # Every channel's pixels are preprocess_volume's; the label PNG holds every
        # labelled voxel (no minimum component area).
        np.testing.assert_array_equal(read_channel_png(png, 4), pre.slices[int(png.stem)])
        label_png = out / "labels" / split / case.case_id / png.name
        np.testing.assert_array_equal(cv2.imread(str(label_png), -1), tissue[int(png.stem)])


def test_zscore_normalization_is_recorded_and_applied(tmp_path):
    from brainseg_d2.structures import DatasetInfo

    src = make_brats(tmp_path / "in", n=2)
    out = tmp_path / "ds"
    assert main(["--input", str(src), "--output", str(out), "--normalization", "zscore",
                 "--split", "1", "0", "0", "--min-area", "1", "--empty-ratio", "1",
                 "--no-progress"]) == 0  # fmt: skip
    info = DatasetInfo.from_json(json.loads((out / "dataset.json").read_text()))
    assert info.preprocess_options.normalization == "zscore"
    for case in find_brats_cases(src):
        images = {c: sitk.ReadImage(case.channels[c]) for c in ("flair", "t1", "t1ce", "t2")}
        pre = preprocess_volume(images, info.preprocess_options)
        assert pre.intensity != preprocess_volume(images, PreprocessOptions()).intensity
        pngs = sorted((out / "images" / "train" / case.case_id).glob("*.png"))
        assert pngs
        for png in pngs:
            np.testing.assert_array_equal(read_channel_png(png, 4), pre.slices[int(png.stem)])


def test_pairs_key_is_the_distinct_wildcard_texts(tmp_path):
    for case in ("P1", "P2"):
        for name in ("flair", "seg"):
            _write(_channel(1), tmp_path / "in" / case / f"{case}_{name}.nii.gz")
    _write(_channel(1), tmp_path / "in" / "P3" / "visit2_flair.nii.gz")
    cases = find_cases(tmp_path / "in", "pairs", image_globs=["flair=*/*_flair.nii.gz"],
                       mask_glob="*/*_seg.nii.gz")  # fmt: skip
    assert [(c.case_id, c.labelled) for c in cases] == [
        ("P1", True), ("P2", True), ("P3_visit2", False)]  # fmt: skip


def test_binary_pairs_in_mha_and_nrrd_round_trip(tmp_path):
    src = tmp_path / "in"
    for i in range(4):
        tissue = _tissue(i)
        _write(_channel(i), src / "img" / f"p{i}_scan.mha", OBLIQUE)
        _write(
            np.where(tissue > 0, 255, 0).astype(np.uint8), src / "lab" / f"p{i}_mask.nrrd", OBLIQUE
        )
    cases = find_cases(src, "pairs", image_globs=["img/*_scan.mha"], mask_glob="lab/*_mask.nrrd")
    assert [c.case_id for c in cases] == ["p0", "p1", "p2", "p3"]
    info = convert_dataset(cases, tmp_path / "ds", ConvertOptions(**EXACT), progress=False)
    assert info["target"] == "binary" and info["channels"] == ["image"]
    for vid, image in rebuild(tmp_path / "ds", "binary").items():
        tissue = _tissue(int(vid[1:]))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image) > 0, tissue > 0)


def _manifest(tmp_path: Path, patients: dict[str, int]) -> Path:
    rows, seed = [], 0
    for patient, n in patients.items():
        for k in range(n):
            case = f"{patient}_scan{k}"
            for ch in ("flair", "t2"):
                _write(_channel(seed), tmp_path / "data" / f"{case}_{ch}.mha")
                seed += 1
            _write((_tissue(seed) > 0).astype(np.uint8), tmp_path / "data" / f"{case}_mask.mha")
            rows.append(
                {
                    "case_id": case,
                    "patient_id": patient,
                    "image_flair": f"data/{case}_flair.mha",
                    "image_t2": f"data/{case}_t2.mha",
                    "mask": f"data/{case}_mask.mha",
                    "age": "40",
                }
            )
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


BRATS_ORDER = ("flair", "t1", "t1ce", "t2")
PATIENTS = {"P0": 3, "P1": 2, "P2": 2, "P3": 1, "P4": 1, "P5": 2, "P6": 1}


def test_no_patient_in_two_splits(tmp_path):
    cases = read_manifest(_manifest(tmp_path, PATIENTS))
    assert len(cases) == sum(PATIENTS.values())
    assert set(cases[0].channels) == {"flair", "t2"}  # "age" is not a channel
    info = convert_dataset(cases, tmp_path / "ds", ConvertOptions(), progress=False)
    owner = {}
    for split in info["splits"]:
        coco = json.loads((tmp_path / "ds" / "annotations" / f"instances_{split}.json").read_text())
        for im in coco["images"]:
            assert owner.setdefault(im["patient_id"], split) == split
    assert set(owner) == set(PATIENTS)
    assert {p for ps in info["splits"].values() for p in ps} == set(PATIENTS)
    assert sum(len(v) for v in info["splits"].values()) == len(PATIENTS)
    assert set(info["splits"]) == {"train", "val", "test"}


def test_manifest_saved_with_a_byte_order_mark(tmp_path):
    # Spreadsheet programs often save CSV as UTF-8 with a BOM before the first header.
    path = _manifest(tmp_path, {"P0": 2, "P1": 1})
    path.write_text(path.read_text(), encoding="utf-8-sig")
    cases = read_manifest(path)
    assert [c.patient_id for c in cases] == ["P0", "P0", "P1"]
    assert all(not c.case_id.endswith("_flair") for c in cases)  # the case_id column was read


def test_folds_partition_patients(tmp_path):
    cases = read_manifest(_manifest(tmp_path, PATIENTS))
    vals = []
    for fold in range(3):
        split = convert.assign_splits(cases, ConvertOptions(folds=3, fold=fold, seed=1))
        by_patient = {}
        for case in cases:
            assert (
                by_patient.setdefault(case.patient_id, split[case.case_id]) == split[case.case_id]
            )
        vals.append({p for p, s in by_patient.items() if s == "val"})
        assert set(by_patient.values()) == {"train", "val"}
    assert set().union(*vals) == set(PATIENTS) and sum(map(len, vals)) == len(PATIENTS)


def test_split_depends_on_seed_only(tmp_path):
    cases = read_manifest(_manifest(tmp_path, PATIENTS))
    a = convert.assign_splits(cases, ConvertOptions(seed=3))
    assert a == convert.assign_splits(list(reversed(cases)), ConvertOptions(seed=3))
    assert any(a != convert.assign_splits(cases, ConvertOptions(seed=s)) for s in range(4, 8))


def test_byte_identical_output_any_worker_count(tmp_path):
    src = make_brats(tmp_path / "in", n=4)
    cases = find_brats_cases(src)
    convert_dataset(cases, tmp_path / "a" / "ds", progress=False)
    convert_dataset(cases, tmp_path / "b" / "ds", workers=2, progress=False)
    a, b = all_files(tmp_path / "a" / "ds"), all_files(tmp_path / "b" / "ds")
    assert a.keys() == b.keys() and a == b
    assert not list((tmp_path / "a").glob("*.tmp-*"))


def test_resume_after_interrupt_skips_finished_cases(tmp_path, monkeypatch):
    src = make_brats(tmp_path / "in", n=5)
    cases = find_brats_cases(src)
    real, calls = convert.process_case, []

    def interrupted(case, *args):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(case.case_id)
        return real(case, *args)

    monkeypatch.setattr(convert, "process_case", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_dataset(cases, tmp_path / "ds", progress=False)
    assert not (tmp_path / "ds").exists()
    assert (tmp_path / "ds.tmp-convert" / "cases").is_dir()
    done = list(calls)

    def counting(case, *args):
        calls.append(case.case_id)
        return real(case, *args)

    monkeypatch.setattr(convert, "process_case", counting)
    convert_dataset(cases, tmp_path / "ds", progress=False)
    assert calls[3:] == [c.case_id for c in cases if c.case_id not in done]
    convert_dataset(cases, tmp_path / "fresh" / "ds", progress=False)
    assert all_files(tmp_path / "ds") == all_files(tmp_path / "fresh" / "ds")


def test_changed_options_redo_cached_cases(tmp_path, monkeypatch):
    src = make_brats(tmp_path / "in", n=2)
    cases = find_brats_cases(src)
    work = tmp_path / "ds.tmp-convert"
    work.mkdir()
    write_marker(work, convert.MARKER, convert.TOOL, finished=False)  # an interrupted run's
    convert.process_case(
        cases[0], "train", convert.resolve_options(cases, ConvertOptions()), str(work), "stale-key"
    )
    calls = []
    real = convert.process_case
    monkeypatch.setattr(convert, "process_case", lambda c, *a: calls.append(c) or real(c, *a))
    convert_dataset(cases, tmp_path / "ds", ConvertOptions(split=(0.5, 0.5, 0)), progress=False)
    assert len(calls) == 2


def test_refuses_to_overwrite(tmp_path, capsys):
    src = make_brats(tmp_path / "in", n=2)
    args = ["--input", str(src), "--output", str(tmp_path / "ds"), "--no-progress",
            "--split", "0.5", "0.5", "0"]  # fmt: skip
    assert main(args) == 0
    before = all_files(tmp_path / "ds")
    assert main(args) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert all_files(tmp_path / "ds") == before
    assert main([*args, "--overwrite", "--target", "regions"]) == 0
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["target"] == "regions"
    assert not list(tmp_path.glob("ds.tmp-*"))


def _flair(case_dir: Path) -> Path:
    return case_dir / f"{case_dir.name}_flair.nii.gz"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite(path: Path, fn, **kwargs) -> None:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    _write(fn(array), path, **kwargs)


BAD_INPUTS = {
    "corrupt": (lambda d: _flair(d).write_bytes(b"\x1f\x8b garbage" * 50), "_flair.nii.gz"),
    "truncated": (lambda d: _truncate(d / f"{d.name}_t2.nii.gz"), "_t2.nii.gz"),
    "missing_channel": (lambda d: (d / f"{d.name}_t1ce.nii.gz").unlink(), "missing channel 't1ce'"),
    "geometry": (
        lambda d: _rewrite(d / f"{d.name}_t2.nii.gz", lambda a: a, spacing=(1, 1, 1)),
        "spacing of",
    ),
    "non_integer_labels": (
        lambda d: _rewrite(d / f"{d.name}_seg.nii.gz", lambda a: a.astype(np.float32) * 0.5),
        "non-integer label",
    ),
    "unknown_labels": (
        lambda d: _rewrite(d / f"{d.name}_seg.nii.gz", lambda a: np.where(a == 4, 3, a)),
        "_seg.nii.gz: label values [3]",
    ),
    "nan": (lambda d: _rewrite(_flair(d), lambda a: np.where(a > 200, np.nan, a)), "NaN or Inf"),
    "inf": (lambda d: _rewrite(_flair(d), lambda a: np.where(a > 200, np.inf, a)), "NaN or Inf"),
    "constant": (lambda d: _rewrite(_flair(d), lambda a: np.full_like(a, 7.0)), "constant"),
    "four_d": (
        lambda d: sitk.WriteImage(
            sitk.JoinSeries([sitk.ReadImage(str(_flair(d)))] * 2), str(_flair(d))
        ),
        "expected a 3D volume, got 4D",
    ),
    "two_d": (  # a slice where a volume belongs: points to the 2D layouts
        lambda d: sitk.WriteImage(sitk.ReadImage(str(_flair(d)))[:, :, 3], str(_flair(d))),
        "got 2D of size (24, 20); 2D slice sets convert with brainseg-convert --layout tcga_lgg",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_fails_cleanly(tmp_path, capsys, kind):
    src = make_brats(tmp_path / "in", n=3)
    breaker, expected = BAD_INPUTS[kind]
    breaker(src / "BraTS2021_00001")
    rc = main(["--input", str(src), "--output", str(tmp_path / "out" / "ds"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: case BraTS2021_00001")
    assert expected in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_skip_bad_converts_the_rest(tmp_path, capsys):
    src = make_brats(tmp_path / "in", n=4)
    BAD_INPUTS["nan"][0](src / "BraTS2021_00001")
    BAD_INPUTS["missing_channel"][0](src / "BraTS2021_00002")
    out = tmp_path / "ds"
    assert main(["--input", str(src), "--output", str(out), "--skip-bad", "--no-progress"]) == 0
    assert "skipped: case BraTS2021_00001" in capsys.readouterr().err
    info = json.loads((out / "dataset.json").read_text())
    assert [s["case_id"] for s in info["skipped"]] == ["BraTS2021_00001", "BraTS2021_00002"]
    volumes = json.loads((out / "volumes.json").read_text())["volumes"]
    assert sorted(volumes) == ["BraTS2021_00000", "BraTS2021_00003"]


def test_duplicate_case_ids_and_empty_input(tmp_path, capsys):
    src = make_brats(tmp_path / "in" / "HGG", n=2)
    shutil.copytree(src / "BraTS2021_00001", tmp_path / "in" / "LGG" / "BraTS2021_00001")
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "o1")]) == 2
    assert "duplicate case id 'BraTS2021_00001'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o2")]) == 2
    assert f"input folder {tmp_path / 'empty'} is empty" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_brats_patient_pattern_and_2024_conventions(tmp_path, capsys):
    # Two time points of patient 00000: --patient-pattern keeps them in one split.
    for i, case_id in enumerate(["BraTS-GLI-00000-000", "BraTS-GLI-00000-001",
                                 "BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]):  # fmt: skip
        make_brats_case(tmp_path / "in", case_id, seed=i, style="2023")
    args = ["--input", str(tmp_path / "in"), "--no-progress", "--split", "0.34", "0.33", "0.33"]
    for seed in ("0", "1", "2"):
        out = tmp_path / f"ds{seed}"
        rc = main([*args, "--output", str(out), "--seed", seed,
                   "--patient-pattern", r"BraTS-GLI-(\d+)-\d+"])  # fmt: skip
        assert rc == 0
        splits = json.loads((out / "dataset.json").read_text())["splits"]  # patients
        assert sorted(sum(splits.values(), [])) == ["00000", "00001", "00002"]
        volumes = json.loads((out / "volumes.json").read_text())["volumes"]
        home = {v["split"] for k, v in volumes.items() if k.startswith("BraTS-GLI-00000")}
        assert len(home) == 1 and splits[home.pop()] == ["00000"]
    # 2023-style names also carry BraTS 2024's label maps; 2021 ones do not fit them.
    assert main([*args, "--output", str(tmp_path / "c24"), "--label-convention", "brats2024"]) == 0
    info = json.loads((tmp_path / "c24" / "dataset.json").read_text())
    assert info["label_convention"] == "brats2024"
    assert main([*args, "--output", str(tmp_path / "c21"), "--label-convention", "brats2021"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "brats2021 does not go with" in err[0]
    assert "BraTS-GLI-00000-000 (brats2023 style" in err[0]
    assert not (tmp_path / "c21").exists()


def test_default_channels_are_the_brats_four_only_where_every_case_names_them(tmp_path):
    from brainseg_d2.data.sources import Case

    src = make_brats(tmp_path / "in", n=2)
    (src / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz").unlink()  # expected, still named
    brats = find_brats_cases(src)
    assert convert.resolve_options(brats, ConvertOptions()).channels == BRATS_ORDER
    # Pairs or a CSV with BraTS labels but other sequences: the channels given, not the four.
    flair = brats[0].channels["flair"]
    pairs = [Case("a", "a", {"flair": flair, "t1": flair}, None, "brats2021")]
    assert convert.resolve_options(pairs, ConvertOptions()).channels == ("flair", "t1")
    with pytest.raises(ValueError, match=r"missing channel 'FLAIR' \(the case has flair, t1\)"):
        pairs[0].check(["FLAIR"], None)


def test_brats_files_in_no_case_are_named_in_one_warning(tmp_path):
    make_brats(tmp_path / "in", n=3)
    (tmp_path / "in" / "BraTS2021_00002").rename(tmp_path / "in" / "case2")  # not its files' name
    odd = tmp_path / "in" / "BraTS2021_00001" / "W39_1998.09.19_Segm.nii"  # an odd seg name
    odd.write_bytes(b"")
    warnings = []
    cases = find_cases(tmp_path / "in", on_warning=warnings.append)
    assert [c.case_id for c in cases] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert len(warnings) == 1
    assert warnings[0].startswith("6 NIfTI file(s) under") and "BraTS2021_00001/W39" in warnings[0]
    assert "case2/BraTS2021_00002_flair.nii.gz" in warnings[0] and "and 3 more" in warnings[0]


def test_brats_layouts_and_unlabelled_cases(tmp_path):
    make_brats_case(tmp_path / "in" / "HGG", "Brats18_A_1", seed=1)
    make_brats_case(tmp_path / "in" / "LGG", "Brats18_B_2", seed=2)
    make_brats_case(tmp_path / "in", "BraTS-GLI-00003-000", seed=3, style="2023")
    make_brats_case(tmp_path / "in", "BraTS-GLI-00004-000", seed=4, style="2023", labelled=False)
    cases = find_brats_cases(tmp_path / "in")
    by_id = {c.case_id: c for c in cases}
    assert by_id["Brats18_A_1"].label_convention == "brats2021"
    gli = by_id["BraTS-GLI-00003-000"]
    assert gli.label_convention == "brats2023" and gli.channels["t1ce"].endswith("-t1c.nii.gz")
    assert gli.patient_id == gli.case_id
    assert not by_id["BraTS-GLI-00004-000"].labelled
    info = convert_dataset(cases, tmp_path / "ds", ConvertOptions(**EXACT), progress=False)
    assert info["label_convention"] == "mixed"
    assert info["splits"]["unlabelled"] == ["BraTS-GLI-00004-000"]
    coco = COCO(str(tmp_path / "ds" / "annotations" / "instances_unlabelled.json"))
    assert coco.getImgIds() and not coco.getAnnIds()
    # BraTS 2023 labels (ET = 3) come out as the same tissue as BraTS 2021 (ET = 4).
    vol = rebuild(tmp_path / "ds", info["target"])["BraTS-GLI-00003-000"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(vol), _tissue(3))


def test_empty_training_slices_subsampled(tmp_path):
    src = make_brats(tmp_path / "in", n=3)
    cases = find_brats_cases(src)
    opts = ConvertOptions(split=(1.0, 0.0, 0.0), empty_ratio=0.0)
    info = convert_dataset(cases, tmp_path / "ds", opts, progress=False)
    coco = json.loads((tmp_path / "ds" / "annotations" / "instances_train.json").read_text())
    with_ann = {a["image_id"] for a in coco["annotations"]}
    assert {im["id"] for im in coco["images"]} == with_ann
    assert set(info["splits"]) == {"train"}
    full = convert_dataset(cases, tmp_path / "ds2", replace_ratio(opts, 1.0), progress=False)
    assert full["counts"]["train"]["images"] > info["counts"]["train"]["images"]


def replace_ratio(opts: ConvertOptions, ratio: float) -> ConvertOptions:
    from dataclasses import replace

    return replace(opts, empty_ratio=ratio)


def test_cli_entry_points(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for cmd in (
        [sys.executable, "-m", "brainseg_d2.cli.convert", "--help"],
        [sys.executable, str(REPO / "tools" / "convert_dataset.py"), "--help"],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0 and "--empty-ratio" in result.stdout


def test_cli_old_out_spelling_still_works(tmp_path, capsys):
    src = make_brats(tmp_path / "in", n=3)
    assert main(["--input", str(src), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "brainseg-convert: warning: --out is deprecated, use --output" in err
    assert (tmp_path / "ds" / "dataset.json").is_file()


def test_source_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        find_brats_cases(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="no BraTS cases found"):
        find_brats_cases(tmp_path / "junk")
    with pytest.raises(ConversionError, match="binary masks need --target binary"):
        _write(_channel(0), tmp_path / "p" / "a_img.mha")
        cases = find_cases(tmp_path / "p", image_globs=["*_img.mha"])
        convert_dataset(cases, tmp_path / "o", ConvertOptions(target="labels"), progress=False)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_slice_annotations_match_labelling_the_whole_slice(connectivity):
    """Components are labelled in their bounding box, yet come out as from the whole slice.

    Same masks, areas, boxes and order: the order decides the annotation ids, and
    a crop that moved OpenCV's 2 x 2 labelling blocks reordered them.
    """
    rng = np.random.default_rng(connectivity)
    for _ in range(300):
        h, w = rng.integers(4, 40, size=2)
        tissue = rng.integers(0, 4, size=(h, w), dtype=np.uint8)
        tissue[rng.random((h, w)) < rng.uniform(0.3, 0.9)] = 0
        expected = []
        for category_id, mask in enumerate(get_target("regions").masks_from_tissue(tissue), 1):
            n, comp, stats, _ = cv2.connectedComponentsWithStats(
                mask.view(np.uint8), connectivity=connectivity
            )
            for k in range(1, n):
                rle = mask_util.encode(np.asfortranarray(comp == k, dtype=np.uint8))
                x, y, bw, bh, area = (int(v) for v in stats[k])
                expected.append((category_id, rle["counts"].decode(), area, [x, y, bw, bh]))
        got = [
            (a["category_id"], a["segmentation"]["counts"], a["area"], a["bbox"])
            for a in convert.slice_annotations(tissue, "regions", 1, connectivity)
        ]
        assert got == expected


def test_context_slices_write_neighbour_images_but_no_annotations(tmp_path):
    from brainseg_d2.data.convert_case import context_slice_indices

    has_image = np.array([False, True, True, True, True, True, False, True])
    assert context_slice_indices([3], has_image, 0) == [3]
    assert context_slice_indices([3], has_image, 2) == [1, 2, 3, 4, 5]
    assert context_slice_indices([1, 7], has_image, 1) == [1, 2, 7]  # 0 and 6: no brain

    src = make_brats(tmp_path / "in", n=2)
    opts = dict(split=(1.0, 0.0, 0.0), empty_ratio=0.0)
    plain = convert_dataset(find_brats_cases(src), tmp_path / "a", ConvertOptions(**opts),
                            progress=False)  # fmt: skip
    ctx = convert_dataset(find_brats_cases(src), tmp_path / "b",
                          ConvertOptions(**opts, context_slices=1), progress=False)  # fmt: skip
    assert ctx["counts"] == plain["counts"]  # the COCO files list the same slices
    assert ctx["options"]["context_slices"] == 1
    for vid in ("BraTS2021_00000", "BraTS2021_00001"):
        kept = {p.name for p in (tmp_path / "a/images/train" / vid).iterdir()}
        written = {p.name for p in (tmp_path / "b/images/train" / vid).iterdir()}
        labels = {p.name for p in (tmp_path / "b/labels/train" / vid).iterdir()}
        assert kept < written and labels == kept


def test_a_convention_with_classes_the_converter_cannot_map_is_named_once(tmp_path, capsys):
    """Not once per case that holds them: the file is what needs a 'tissue' entry."""
    src = make_brats(tmp_path / "in", n=3)
    convention = tmp_path / "mine.yaml"
    convention.write_text("labels: {1: spot, 2: halo, 4: rim}\n")
    out = tmp_path / "out"
    assert main(["--input", str(src), "--output", str(out), "--label-convention",
                 str(convention), "--no-progress"]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: --label-convention {convention}: classes ['spot', 'halo', 'rim'] "
                    "have no tissue code, which training needs; give them one under 'tissue'")
    assert not out.exists()
