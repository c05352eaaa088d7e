"""Post-processing tuning: the sweep picks the best setting on hand-made volumes."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.evaluation.tuning import (
    TuningGrid,
    best_setting,
    region_dice,
    sweep,
    write_tuned_config,
)
from brainseg_d2.labels import get_target
from brainseg_d2.postprocessing import PostprocessParams

BINARY = get_target("binary")
GRID = TuningGrid(
    score_thresh=(0.5, 0.7), min_volume_ml=(0, 50), component_score_thresh=((), (0.75,))
)


def _volumes():
    """Two (1, 8, 16, 16) volumes.

    ``tumour``: a 4 x 6 x 6 lesion scored 0.6 (a 0.7 threshold loses it) and a
    3-voxel speck scored 0.9 far away (only a minimum volume removes it).
    ``healthy``: no tumour, a 2-voxel speck scored 0.95.
    """
    scores = np.zeros((1, 8, 16, 16), np.float32)
    gt = np.zeros(scores.shape, bool)
    scores[0, 2:6, 2:8, 2:8] = 0.6
    gt[0, 2:6, 2:8, 2:8] = True
    scores[0, 7, 14, 12:15] = 0.9
    healthy = np.zeros_like(scores)
    healthy[0, 4, 10, 10:12] = 0.95
    # 1 ml voxels: a volume in ml is a count of voxels.
    return [("tumour", scores, gt, 1.0), ("healthy", healthy, np.zeros_like(gt), 1.0)]


def test_sweep_picks_the_minimum_volume_that_removes_confident_specks():
    results = sweep(_volumes(), BINARY, GRID.settings(PostprocessParams(), BINARY))
    assert len(results) == 8 and all(r["num_volumes"] == 2 for r in results)
    best = best_setting(results)
    assert best["params"].score_threshold == 0.5
    assert best["params"].min_volume_ml == (50,)
    assert best["params"].component_score_threshold == ()
    assert best["objective"] == pytest.approx(1.0)
    default = next(r for r in results if r["params"].min_volume_ml == (0,)
                   and r["params"].score_threshold == 0.5
                   and not r["params"].component_score_threshold)  # fmt: skip
    # 144 lesion voxels + 3 speck voxels: Dice 288/291; the healthy volume scores 0.
    assert default["dice"]["WT"] == pytest.approx((288 / 291 + 0.0) / 2)


def test_ties_go_to_the_setting_that_changes_least():
    results = [
        {"params": PostprocessParams(score_threshold=0.7), "objective": 0.9},
        {"params": PostprocessParams(score_threshold=0.5, min_volume_3d=50), "objective": 0.9},
        {"params": PostprocessParams(score_threshold=0.4), "objective": 0.9},
        {"params": PostprocessParams(score_threshold=0.3), "objective": 0.8},
    ]
    assert best_setting(results)["params"].score_threshold == 0.4


def test_nested_targets_filter_lesions_by_their_outer_region():
    """A small core inside a surviving lesion is kept; a lone small lesion goes."""
    regions = get_target("regions")
    scores = np.zeros((3, 6, 30, 30), np.float32)
    scores[0, 1:5, 2:12, 2:12] = 0.9  # a 400-voxel lesion ...
    scores[1:, 2:4, 5:8, 5:8] = 0.9  # ... whose 18-voxel core (TC = ET) must stay
    scores[0, 2, 20:23, 20:23] = 0.9  # a 9-voxel lone lesion
    gt = scores >= 0.5
    gt[0, 2, 20:23, 20:23] = False
    grid = TuningGrid(score_thresh=(0.5,), min_volume_ml=(0, 50), component_score_thresh=((),))
    settings = grid.settings(PostprocessParams(min_volume_3d=7), regions)
    assert [p.min_volume_ml for p in settings] == [(0, 0, 0), (50, 0, 0)]
    assert {p.min_volume_3d for p in settings} == {(0,)}  # the sweep sets the voxel key aside
    results = sweep([("v", scores, gt, 1.0)], regions, settings)
    best = best_setting(results)
    assert best["params"].min_volume_ml == (50, 0, 0)
    assert best["dice"] == {"WT": 1.0, "TC": 1.0, "ET": 1.0}


def test_region_dice_of_nested_regions_from_tissue_classes():
    labels = get_target("labels")  # necrotic, edema, enhancing -> WT, TC, ET
    gt = np.zeros((3, 1, 4, 4), bool)
    gt[1, 0, :2] = True  # edema
    gt[2, 0, 2:] = True  # enhancing
    pred = gt.copy()
    pred[2, 0, 3] = False  # half the enhancing tumour is missed
    dice = region_dice(pred, gt, labels)
    assert dice == {"WT": pytest.approx(2 * 12 / 28), "TC": pytest.approx(2 / 3),
                    "ET": pytest.approx(2 / 3)}  # fmt: skip


def test_tuned_config_loads_back(tmp_path):
    cfg = get_brainseg_cfg()
    params = PostprocessParams(score_threshold=0.6, min_volume_3d=50, min_volume_ml=(0.5, 0.1, 0),
                               component_score_threshold=(0.9,))  # fmt: skip
    path = write_tuned_config(cfg, params, tmp_path / "config_tuned.yaml")
    back = get_brainseg_cfg()
    back.merge_from_file(str(path), allow_unsafe=False)
    assert PostprocessParams.from_cfg(back.BRAINSEG.POSTPROCESS) == params


def test_tuned_config_holds_absolute_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tuner ran here, with relative paths
    cfg = get_brainseg_cfg()
    cfg.MODEL.WEIGHTS, cfg.BRAINSEG.DATASET_ROOT = "out/model_final.pth", "datasets"
    path = write_tuned_config(cfg, PostprocessParams(), tmp_path / "config_tuned.yaml")
    back = get_brainseg_cfg()
    back.merge_from_file(str(path), allow_unsafe=False)
    assert back.MODEL.WEIGHTS == str(tmp_path / "out" / "model_final.pth")
    assert back.BRAINSEG.DATASET_ROOT == str(tmp_path / "datasets")
    cfg.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"  # a URL stays one
    write_tuned_config(cfg, PostprocessParams(), path)
    back = get_brainseg_cfg()
    back.merge_from_file(str(path), allow_unsafe=False)
    assert back.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"


def test_tuned_config_never_replaces_a_file_it_did_not_write(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("MODEL:\n  WEIGHTS: keep\n")
    with pytest.raises(ValueError, match="not a tuned config written here"):
        write_tuned_config(get_brainseg_cfg(), PostprocessParams(), path)
    assert path.read_text() == "MODEL:\n  WEIGHTS: keep\n"
    ours = write_tuned_config(get_brainseg_cfg(), PostprocessParams(), tmp_path / "t.yaml")
    write_tuned_config(get_brainseg_cfg(), PostprocessParams(min_volume_3d=5), ours)  # replaced
    back = get_brainseg_cfg()
    back.merge_from_file(str(ours), allow_unsafe=False)
    assert tuple(back.BRAINSEG.POSTPROCESS.MIN_VOLUME_3D) == (5,)


def test_fast_sweep_equals_postprocess_volume_on_random_volumes():
    """The one-labelling-per-threshold path gives postprocess_volume's masks exactly."""
    from brainseg_d2.evaluation.tuning.grid import _score_settings_fast
    from brainseg_d2.postprocessing import postprocess_volume, probabilities_to_masks_and_seeds

    rng = np.random.default_rng(0)
    regions = get_target("regions")
    voxel_ml = 0.5
    grid = TuningGrid(score_thresh=(0.3, 0.6), min_volume_ml=(0, 2.5, 20),
                      component_score_thresh=((), (0.8,)))  # fmt: skip
    settings = grid.settings(PostprocessParams(connectivity_3d=18), regions)
    settings += [
        PostprocessParams(min_volume_3d=(5, 40, 0), component_score_threshold=(0.9,)),
        PostprocessParams(min_volume_3d=(5, 0, 0), min_volume_ml=(1.0, 10.0, 0.0)),
        PostprocessParams(score_threshold=0.4, component_score_threshold=(0.5, 0.9, 0.95)),
    ]
    for pad in (0, 0, 0, 3):
        from scipy import ndimage

        scores = ndimage.gaussian_filter(rng.random((3, 6, 20, 20)), (0, 1, 1.5, 1.5))
        scores = ((scores - scores.min()) / np.ptp(scores)).astype(np.float32)
        # Padded: the sweep labels only the box with content, the result is the same.
        scores = np.pad(scores, ((0, 0), (pad, 1), (2 * pad, 0), (0, pad)))
        gt = scores > 0.5
        gt[2, -1, 0, 0] = bool(pad)  # a reference voxel far from any score
        fast = _score_settings_fast(scores, gt, regions, settings, voxel_ml)
        for p, got in zip(settings, fast):
            masks, seeds = probabilities_to_masks_and_seeds(scores, p)
            masks = postprocess_volume(
                masks, p, enforce_nesting=True, seeds=seeds, voxel_ml=voxel_ml
            )
            expected = region_dice(masks, gt, regions)
            assert got == expected, p


def test_per_category_thresholds_keep_a_faint_core_and_drop_a_bright_speck(tmp_path):
    from brainseg_d2.evaluation.tuning import cache_volumes, refine_category_thresholds

    regions = get_target("regions")
    tumour = np.zeros((3, 6, 16, 16), np.float32)
    tumour[0, 1:5, 2:8, 2:8] = 0.8  # WT, confident
    tumour[1, 2:4, 3:6, 3:6] = 0.4  # TC, faint: needs a low threshold
    healthy = np.zeros_like(tumour)
    healthy[0, 3, 10, 10:12] = 0.55  # a WT speck: needs a high threshold
    volumes = [("t", tumour, tumour >= 0.35, 1.0),
               ("h", healthy, np.zeros(tumour.shape, bool), 1.0)]  # fmt: skip
    paths = cache_volumes(volumes, tmp_path)
    grid = TuningGrid(score_thresh=(0.3, 0.5, 0.7), min_volume_ml=(0,),
                      component_score_thresh=((),))  # fmt: skip
    results = sweep(volumes, regions, grid.settings(PostprocessParams(), regions))
    single = best_setting(results)
    assert single["objective"] < 1.0  # no one threshold serves both
    params, _ = refine_category_thresholds(paths, regions, single["params"], grid.score_thresh)
    assert params.category_score_threshold[:2] == (0.7, 0.3)
    (refined,) = sweep(volumes, regions, [params])
    assert refined["objective"] == pytest.approx(1.0)


def test_inner_min_volume_drops_core_fragments_that_lesion_wise_dice_counts(tmp_path):
    """Small TC/ET fragments inside the lesion: volume Dice barely sees them, lesion-wise does."""
    from brainseg_d2.evaluation.tuning import (
        cache_volumes,
        lesion_dice_by_region,
        refine_inner_min_volume,
    )

    regions = get_target("regions")
    scores = np.zeros((3, 10, 40, 40), np.float32)
    scores[0, 1:9, 4:34, 4:34] = 0.9  # a 7200-voxel lesion
    scores[1:, 3:7, 10:20, 10:20] = 0.9  # its 400-voxel core (TC = ET)
    gt = scores >= 0.5
    for z, y in ((2, 28), (6, 28), (7, 6)):  # three 2-voxel core fragments, not in the truth
        scores[1:, z, y, 28:30] = 0.9
    paths = cache_volumes([("v", scores, gt, 1.0)], tmp_path)  # 1 ml voxels: ml = voxels
    base = PostprocessParams(score_threshold=0.5, min_volume_3d=(0, 0, 0))
    masks = scores >= 0.5
    assert region_dice(masks, gt, regions)["TC"] > 0.98  # fragments: 12 of 412 voxels
    # the core matched exactly (Dice 1), each fragment a false positive adding 0
    assert lesion_dice_by_region(masks, gt, regions)["TC"] == pytest.approx(1 / 4)
    params, results = refine_inner_min_volume(paths, regions, base, (0, 10, 1000))
    assert [r["params"].min_volume_ml for r in results] == [(0, 0, 0), (0, 10, 10), (0, 1000, 1000)]
    assert params.min_volume_ml == (0, 10, 10)  # removes the fragments, keeps the core
    chosen = results[1]
    assert chosen["dice"]["TC"] == pytest.approx(1.0) and chosen["lesion_dice"]["ET"] == 1.0
    assert results[2]["dice"]["TC"] == 0.0  # too large a minimum deletes the core
    # Non-nested targets are left alone.
    assert refine_inner_min_volume(paths, get_target("labels"), base, (0, 10)) == (base, [])


def test_core_hull_margin_is_chosen_where_the_core_overreaches_and_left_off_elsewhere(tmp_path):
    """A core called past its enhancement into edema: the tuner cuts it to the hull; where
    the true core reaches past the enhancement (a nodule in a non-enhancing core), it does not."""
    from brainseg_d2.evaluation.tuning import cache_volumes, refine_core_hull_margin

    regions = get_target("regions")
    scores = np.zeros((3, 20, 40, 40), np.float32)
    scores[0, 2:18, 2:38, 2:38] = 0.9  # the lesion
    scores[2, 6:14, 6:14, 6:14] = 0.9  # enhancing core, 8^3
    scores[1, 6:14, 6:14, 6:22] = 0.9  # TC called 8 voxels past it
    truth = scores >= 0.5
    truth[1, :, :, 14:] = False  # the true core is the enhancing cube
    base = PostprocessParams(score_threshold=0.5, min_volume_3d=(0, 0, 0))
    (tmp_path / "over").mkdir()
    (tmp_path / "nodule").mkdir()
    paths = cache_volumes([("over", scores, truth, 1.0)], tmp_path / "over")
    params, results = refine_core_hull_margin(paths, regions, base, (0, -1, 2))
    assert [r["params"].core_hull_margin for r in results] == [-1, 2, 0]
    assert params.core_hull_margin == 0
    assert results[2]["dice"]["TC"] == pytest.approx(1.0)
    assert results[0]["dice"]["TC"] == pytest.approx(2 * 512 / (512 + 1024))
    # The same core with a true reach past the enhancement: cutting loses, so it stays off.
    paths = cache_volumes([("nodule", scores, scores >= 0.5, 1.0)], tmp_path / "nodule")
    params, _ = refine_core_hull_margin(paths, regions, base, (0, -1, 2))
    assert params.core_hull_margin == -1
    assert refine_core_hull_margin(paths, get_target("labels"), base, (0, 2)) == (base, [])


def test_min_total_ml_turns_a_false_enhancing_speck_into_core_and_keeps_true_enhancement(
    tmp_path,
):
    """A tumour without enhancement and a false 0.3 ml enhancing call: ET Dice 0 until the
    call moves to the core; a true 1.2 ml enhancement elsewhere must survive the choice."""
    from brainseg_d2.evaluation.tuning import cache_volumes, refine_min_total_ml

    regions = get_target("regions")
    voxel_ml = 1.5**3 / 1000  # 1.5 mm voxels
    low = np.zeros((3, 12, 30, 30), np.float32)
    low[0, 2:10, 5:25, 5:25] = 0.9  # the lesion
    low[1, 4:8, 10:20, 10:20] = 0.9  # its non-enhancing core
    truth_low = low >= 0.5
    low[2, 5:7, 12:19, 12:19] = 0.9  # a false enhancing call: 98 voxels, 0.33 ml
    high = np.zeros_like(low)
    high[0, 2:10, 5:25, 5:25] = 0.9
    high[1:, 4:8, 10:20, 10:20] = 0.9  # a core that enhances: 400 voxels, 1.35 ml
    paths = cache_volumes([("low", low, truth_low, voxel_ml), ("high", high, high >= 0.5,
                           voxel_ml)], tmp_path)  # fmt: skip
    base = PostprocessParams(score_threshold=0.5, min_volume_3d=(0, 0, 0))
    params, results = refine_min_total_ml(paths, regions, base, (2.0, 0.0, 0.5))
    assert [r["params"].min_total_ml for r in results] == [(0, 0, 0), (0, 0, 0.5), (0, 0, 2.0)]
    assert results[0]["dice"]["ET"] == pytest.approx(0.5)  # the speck costs the low case
    assert results[1]["dice"]["ET"] == pytest.approx(1.0)
    assert results[2]["dice"]["ET"] == pytest.approx(0.5)  # too large: the true one goes
    assert params.min_total_ml == (0.0, 0.0, 0.5)
    assert results[1]["dice"]["TC"] == pytest.approx(1.0)  # the speck stays core
    # Non-nested targets are left alone.
    assert refine_min_total_ml(paths, get_target("labels"), base, (0.5,)) == (base, [])


def _tune_tool():
    """tools/tune_postprocess.py as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "tune_postprocess.py"
    spec = importlib.util.spec_from_file_location("tune_postprocess_under_test", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_tune_command_refuses_bad_output_and_dataset_before_the_work(
    phantom_dataset, weights_files, tmp_path, monkeypatch, capsys
):
    tool = _tune_tool()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(phantom_dataset["root"]))
    mine = tmp_path / "mine.yaml"
    mine.write_text("my config")
    base = ["--config-file", weights_files["config"], "OUTPUT_DIR", str(tmp_path),
            *weights_files["opts"], "MODEL.WEIGHTS", str(weights_files["good"])]  # fmt: skip
    for extra, says in [(["--output", str(mine)], "exists and is not a tuned config"),
                        (["--dataset", "nope_val"], "'nope_val' is not registered")]:  # fmt: skip
        assert tool.main([*extra, *base]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
    assert mine.read_text() == "my config" and not (tmp_path / "config_tuned.yaml").exists()

    # A training config without a test set (the demo's): --dataset names the split, and
    # without it the tool says what to give (not --eval-only's "nothing to evaluate").
    no_test = [*base, "DATASETS.TEST", "()"]
    assert tool.main(no_test) == 2
    assert "no validation split: give --dataset" in capsys.readouterr().err
    assert tool.main(["--dataset", "phantom_val", "--output", str(mine), *no_test]) == 2
    assert "exists and is not a tuned config" in capsys.readouterr().err  # got past the split

    # A split without label maps has nothing to score against.
    import shutil

    from brainseg_d2.cli.convert import main as convert_main

    cases = tmp_path / "unlabelled"
    shutil.copytree(phantom_dataset["cases"] / "Phantom_00000", cases / "Phantom_00000")
    (cases / "Phantom_00000" / "Phantom_00000_seg.nii.gz").unlink()
    root = tmp_path / "datasets"
    assert convert_main(["--input", str(cases), "--output", str(root / "nolab"), "--target",
                         "labels", "--no-progress"]) == 0  # fmt: skip
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    assert tool.main(["--dataset", "nolab_unlabelled", *no_test]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "'nolab_unlabelled' has no label maps (an unlabelled split?)" in line
    assert not (tmp_path / "config_tuned.yaml").exists()


def test_tune_command_prints_each_stage_under_its_objective_and_marks_the_choice(
    phantom_dataset, weights_files, tmp_path, monkeypatch, capsys
):
    from brainseg_d2.config import setup_cfg
    from brainseg_d2.evaluation.tuning import STAGES

    tool = _tune_tool()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(phantom_dataset["root"]))
    out = tmp_path / "tuned.yaml"
    assert tool.main(["--config-file", weights_files["config"], "--dataset", "phantom_val",
                      "--output", str(out), *weights_files["opts"], "MODEL.WEIGHTS",
                      str(weights_files["good"]), "DATASETS.TEST", "()"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    headers = [line for line in lines if "(objective: " in line]
    assert [h.split(" (objective")[0] for h in headers] == list(STAGES)[: len(headers)]
    assert len(headers) >= 2  # the grid and the per-category thresholds at least
    (chosen,) = [line for line in lines if line.startswith("* ")]
    tuned = setup_cfg(str(out)).BRAINSEG.POSTPROCESS
    assert chosen.split()[1] == f"{tuned.SCORE_THRESH}"
    assert setup_cfg(str(out)).DATASETS.TEST == ("phantom_val",)
