"""The main job end to end (tools/run_demo.py --quick): every artefact exists and is sound."""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--output", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_demo_prints_where_things_are_and_the_headline(quick_demo):
    out, stdout = quick_demo
    assert "Held-out volume Dice" in stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for region in ("WT", "TC", "ET"):
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"  {region} "))
        n = summary["num_present"][region]
        assert (f"(n={n})" if n else "none (n=0)") in line  # the n of the mean is printed
    assert "baseline (FLAIR > mean + 2 SD) WT" in stdout
    assert 0.0 <= summary["volume_dice"]["volume_dice_WT_post"] <= 1.0
    assert summary["num_volumes"] == 2 and summary["postprocess_tuned"]
    assert set(summary["timings_s"]) == {"data", "train", "tune", "evaluate", "baseline",
                                         "predict_and_show"}
    tuned = out / "train" / "config_tuned.yaml"
    assert tuned.read_text(encoding="utf-8").startswith("# brainseg_d2")
    import yaml  # the file names the model it was tuned for, so predict and demo.py run on it

    values = yaml.safe_load(tuned.read_text(encoding="utf-8"))
    assert values["MODEL"]["WEIGHTS"] == str((out / "train" / "model_final.pth").resolve())
    assert values["BRAINSEG"]["DATASET_ROOT"] == str((out / "datasets").resolve())


def test_demo_trains_the_tissue_labels_when_asked(tmp_path):
    """--target labels: the model learns NCR/ED/ET, and the regions are still scored."""
    out = tmp_path / "labels"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--target", "labels",
         "--output", str(out)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads((out / "datasets" / "phantom" / "dataset.json").read_text("utf-8"))
    assert info["target"] == "labels"
    assert [c["name"] for c in info["categories"]] == ["necrotic", "edema", "enhancing"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["options"]["target"] == "labels"
    for region in ("WT", "TC", "ET"):
        assert 0.0 <= summary["volume_dice"][f"volume_dice_{region}_raw"] <= 1.0


def test_predicted_nifti_has_the_input_geometry(quick_demo):
    out, _ = quick_demo
    for pred in sorted((out / "predictions").glob("*_pred.nii.gz")):
        case = pred.name[: -len("_pred.nii.gz")]
        ref = sitk.ReadImage(str(out / "cases" / "heldout" / case / f"{case}_flair.nii.gz"))
        img = sitk.ReadImage(str(pred))
        assert img.GetSize() == ref.GetSize()
        assert np.allclose(img.GetSpacing(), ref.GetSpacing())
        assert np.allclose(img.GetOrigin(), ref.GetOrigin())
        assert np.allclose(img.GetDirection(), ref.GetDirection())
        assert set(np.unique(sitk.GetArrayViewFromImage(img))) <= {0, 1, 2, 4}


def test_pictures_and_report(quick_demo):
    out, _ = quick_demo
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    gif = Path(summary["outputs"]["gif"])
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[-1] in (3, 4)
    montage = iio.imread(summary["outputs"]["montage"])
    assert montage.ndim == 3 and montage.shape[2] == 3
    # MRI in grey with coloured masks: some pixels are saturated colours, not grey.
    rgb = montage[..., :3].astype(int)
    assert (np.ptp(rgb, axis=2) > 60).any()
    html = Path(summary["outputs"]["report"]).read_text(encoding="utf-8")
    HTMLParser().feed(html)
    assert "data:image/" in html and "Heldout_00000" in html


def test_a_finished_demo_lists_what_it_wrote(quick_demo):
    from brainseg_d2.pipeline import MARKER
    from brainseg_d2.utils.paths import foreign_entry

    out, _ = quick_demo
    header, *listed = (out / MARKER).read_text(encoding="utf-8").splitlines()
    assert "unfinished" not in header
    assert {"summary.json", "report.html", "train/model_final.pth"} <= set(listed)
    assert foreign_entry(out, MARKER) is None  # everything in it is the demo's


def test_demo_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("user data")
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--output",
         str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert r.returncode == 2
    assert "not written by the demo" in r.stderr.strip().splitlines()[-1]
    assert (tmp_path / "precious.txt").read_text() == "user data"


def test_demo_refuses_a_bad_worker_count_before_writing(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--workers", "0",
         "--output", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--workers must be >= 1, got 0" in r.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine with no GPU")
def test_demo_with_the_gpu_config_and_no_gpu_stops_before_writing(tmp_path):
    out = tmp_path / "run"
    config = ROOT / "configs/phantom/mask_rcnn_R_18_FPN_gpu_bs16_2500.yaml"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--config-file",
         str(config), "--output", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "MODEL.DEVICE is 'cuda'" in last and config.name in last
    assert not out.exists()


def test_demo_with_context_slices_and_four_pixel_means_stops_before_writing(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "run_demo.py"), "--quick", "--output", str(out),
         "BRAINSEG.INPUT.CONTEXT_SLICES", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert "MODEL.PIXEL_MEAN has 4 values" in last and "the phantom feeds 12 channels" in last
    assert not out.exists()


def test_flair_baseline_thresholds_the_source_intensities_whatever_the_normalisation():
    from brainseg_d2.data.preprocess import preprocess_volume, source_intensities
    from brainseg_d2.structures import PreprocessOptions

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:10, :24, :20]
    brain = ((zz - 4.5) / 4.5) ** 2 + ((yy - 11.5) / 11) ** 2 + ((xx - 9.5) / 9) ** 2 < 1
    flair = np.where(brain, rng.normal(300.0, 40.0, brain.shape), 0.0).astype(np.float32)
    flair[3:7, 8:14, 6:12] = np.where(brain[3:7, 8:14, 6:12], 900.0, 0.0)  # a bright lesion
    image = sitk.GetImageFromArray(flair)
    image.SetDirection((-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))  # RAS: the slices are flipped
    values = flair[brain].astype(np.float64)
    expected = (flair > values.mean() + 2 * values.std()) & brain
    masks = []
    for norm in ("percentile", "zscore"):
        options = PreprocessOptions(("flair",), normalization=norm)
        prep = preprocess_volume({"flair": image}, options)
        source = source_intensities(image, prep)
        np.testing.assert_array_equal(source, prep.geometry.reorient(flair))
        inside = source[prep.brain].astype(np.float64)
        masks.append((source > inside.mean() + 2 * inside.std()) & prep.brain)
        np.testing.assert_array_equal(masks[-1], prep.geometry.reorient(expected))
    np.testing.assert_array_equal(masks[0], masks[1])


def test_flair_baseline_cleans_with_the_tuned_sizes_in_the_cases_millilitres(tmp_path):
    """The baseline's post-processed row uses the tuned settings, MIN_VOLUME_ML included,
    measured at the held-out cases' own voxel size."""
    from brainseg_d2.pipeline import DEMO_CONFIG, DemoOptions, flair_baseline, make_data
    from brainseg_d2.postprocessing import PostprocessParams

    opts = DemoOptions(config=ROOT / DEMO_CONFIG, output=tmp_path, train_cases=3,
                       heldout_cases=1, spacing=3.0, workers=1)  # fmt: skip
    make_data(opts)

    def wt_dice(min_volume_ml):
        opts.postprocess = PostprocessParams(min_volume_ml=min_volume_ml)
        rows = flair_baseline(opts)
        return {r["variant"]: r["dice"] for r in rows if r["name"] == "WT"}

    kept = wt_dice(0.0)
    assert kept["post"] == kept["raw"] > 0
    removed = wt_dice(1e6)  # larger than any brain: every component goes
    assert removed["raw"] == kept["raw"] and removed["post"] == 0.0


def test_demo_data_holds_the_neighbouring_slices_a_2_5d_config_reads(tmp_path):
    """With BRAINSEG.INPUT.CONTEXT_SLICES 1 the demo converts the kept slices' neighbours too."""
    from brainseg_d2.pipeline import DEMO_CONFIG, DemoOptions, make_data

    twelve = f"[{','.join(['40.0'] * 12)}]"
    opts = DemoOptions(
        config=ROOT / DEMO_CONFIG, output=tmp_path, train_cases=3, heldout_cases=1,
        spacing=3.0, workers=1,
        opts=["BRAINSEG.INPUT.CONTEXT_SLICES", "1",
              "MODEL.PIXEL_MEAN", twelve, "MODEL.PIXEL_STD", twelve],
    )  # fmt: skip
    paths = make_data(opts)
    for dataset, split in ((paths["dataset"], "train"), (paths["heldout_dataset"], "test")):
        coco = json.loads((dataset / "annotations" / f"instances_{split}.json").read_text("utf-8"))
        kept = {(im["volume_id"], im["slice_index"]) for im in coco["images"]}
        pngs = (dataset / "images" / split).rglob("*.png")
        written = {(p.parent.name, int(p.stem)) for p in pngs}
        # Training keeps some slices without tumour; the others are written as context.
        assert kept < written if split == "train" else kept <= written
        first = {v: min(i for w, i in written if w == v) for v, _ in written}
        last = {v: max(i for w, i in written if w == v) for v, _ in written}
        for volume, index in kept:  # inside the brain's slices, both neighbours are there
            for n in (index - 1, index + 1):
                assert (volume, n) in written or not first[volume] <= n <= last[volume]
