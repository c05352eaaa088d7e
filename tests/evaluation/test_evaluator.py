"""BrainSegEvaluator: raw vs post-processed, score thresholds, the same numbers as
evaluate_volume, output files, two-process gathering."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from brainseg_d2.evaluation.evaluator import BrainSegEvaluator
from brainseg_d2.evaluation.results_files import EVALUATOR_CASES_COLUMNS, EVALUATOR_FILES
from brainseg_d2.evaluation.volume_scores import evaluate_volume
from brainseg_d2.labels import get_target
from brainseg_d2.postprocessing import MASK_SOURCES, PostprocessParams

H = W = 8
SPACING = {"slice_thickness": 5.0, "pixel_spacing": [2.0, 0.5]}


# ---------------------------------------------------------------------------
# hand-made datasets
# ---------------------------------------------------------------------------


def _rle(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def _slice_dict(image_id, volume_id, slice_index, num_slices, gt: dict[int, np.ndarray]) -> dict:
    """Dataset dict of one slice; ``gt`` maps 0-based category -> mask (one annotation each)."""
    annotations = [
        {"segmentation": _rle(m), "category_id": c, "bbox": [0, 0, 1, 1], "bbox_mode": 1,
         "iscrowd": 0}
        for c, m in gt.items()
        if m.any()
    ]
    return {
        "file_name": f"{volume_id}/{slice_index:04d}.png", "image_id": image_id,
        "height": H, "width": W, "volume_id": volume_id, "patient_id": f"P-{volume_id}",
        "slice_index": slice_index, "num_slices": num_slices, "annotations": annotations,
        **SPACING,
    }


def _register(name: str, dicts: list[dict], target: str = "labels") -> str:
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(
        thing_classes=get_target(target).category_names, target=target
    )
    return name


def _output(pred: dict[int, np.ndarray], score: float = 0.9, num_categories: int = 3) -> dict:
    """Model output of one slice: one instance per category mask, and the same masks
    as dense probabilities (``score`` inside, 0 outside), so both mask sources agree."""
    items = [(c, m) for c, m in pred.items() if m.any()]
    inst = Instances((H, W))
    inst.pred_masks = torch.tensor(np.array([m for _, m in items], bool).reshape(-1, H, W))
    inst.pred_classes = torch.tensor([c for c, _ in items], dtype=torch.int64)
    inst.scores = torch.full((len(items),), score)
    probs = torch.zeros((num_categories, H, W))
    for c, m in items:
        probs[c][torch.from_numpy(m)] = score
    return {"instances": inst, "sem_seg": probs}


def _evaluate(name, dicts, preds, **kwargs) -> tuple[BrainSegEvaluator, dict]:
    """Run the evaluator; ``preds`` maps image_id -> {category: mask}."""
    ev = BrainSegEvaluator(name, distributed=False, **kwargs)
    ev.reset()
    for d in dicts:
        inputs = {k: v for k, v in d.items() if k != "annotations"}  # the test mapper drops them
        ev.process([inputs], [_output(preds.get(d["image_id"], {}))])
    return ev, ev.evaluate()["brainseg"]


def _toy_dataset() -> tuple[list[dict], dict]:
    """Three volumes of 4 slices (slice 3 of volume "b" absent) with edema/enhancing GT
    and imperfect predictions, including a one-voxel speck."""
    dicts, preds = [], {}
    image_id = 0
    for v, vid in enumerate(("a", "b", "c")):
        for s in range(4):
            if vid == "b" and s == 3:
                continue  # dropped by the converter: empty in GT and prediction
            gt = {1: _box(1, 6, 1, 6) if s in (1, 2) else _box(0, 0, 0, 0),
                  2: _box(2, 4, 2, 4) if s == 2 else _box(0, 0, 0, 0)}
            pred = {1: _box(1 + v, 6, 1, 6) if s in (1, 2) else _box(0, 0, 0, 0),
                    2: _box(2, 4, 2, 5) if s == 2 else _box(0, 0, 0, 0)}
            if s == 0 and vid != "c":
                pred[0] = _box(7, 8, 7, 8)  # a necrotic speck
            dicts.append(_slice_dict(image_id, vid, s, 4, gt))
            preds[image_id] = pred
            image_id += 1
    return dicts, preds


def _same(a: dict, b: dict) -> bool:
    """Equal dicts, NaN equal to NaN."""
    nan = "<nan>"
    fix = {k: nan if isinstance(v, float) and math.isnan(v) else v for k, v in a.items()}
    return fix == {k: nan if isinstance(v, float) and math.isnan(v) else v for k, v in b.items()}


# ---------------------------------------------------------------------------
# the evaluator
# ---------------------------------------------------------------------------


def test_raw_and_post_differ_when_postprocessing_removes_a_speck(tmp_path):
    gt_blob = _box(3, 5, 3, 5)  # 2 x 2 x 3: the speck is 1 of 13 surface voxels (> 5 %)
    dicts = [_slice_dict(i, "v", i, 3, {1: gt_blob}) for i in range(3)]
    speck = _box(0, 1, 7, 8)
    preds = {0: {1: gt_blob | speck}, 1: {1: gt_blob}, 2: {1: gt_blob}}
    name = _register("eval_test_speck", dicts)
    _, flat = _evaluate(name, dicts, preds, postprocess=PostprocessParams(min_volume_3d=2))
    assert flat["volume_dice_cat_edema_raw"] == pytest.approx(2 * 12 / (12 + 13))
    assert flat["volume_dice_cat_edema_post"] == 1.0
    assert flat["volume_hd95_WT_raw"] > 0.0 and flat["volume_hd95_WT_post"] == 0.0
    # The speck lies within the 3-voxel matching dilation: it joins the lesion's prediction.
    assert flat["lesion_dice_WT_raw"] == pytest.approx(2 * 12 / (12 + 13))
    assert flat["lesion_dice_WT_post"] == 1.0
    assert flat["volume_dice_mean_post"] == 1.0  # WT, TC, ET (TC, ET empty in both: 1)
    assert all(type(v) is float for v in flat.values())


def test_score_threshold_applies_to_both_variants():
    dicts = [_slice_dict(0, "v", 0, 1, {1: _box(0, 2, 0, 2)})]
    name = _register("eval_test_threshold", dicts)
    ev = BrainSegEvaluator(name, distributed=False,
                           postprocess=PostprocessParams(score_threshold=0.95))
    ev.process([dicts[0]], [_output({1: _box(0, 2, 0, 2)}, score=0.9)])
    flat = ev.evaluate()["brainseg"]
    assert flat["volume_dice_cat_edema_raw"] == flat["volume_dice_cat_edema_post"] == 0.0


def test_component_score_threshold_drops_lone_low_score_lesions():
    """Hysteresis: a low-score instance extends a confident lesion, but alone it is dropped."""
    lesion, extension, lone = _box(3, 5, 3, 5), _box(5, 6, 3, 5), _box(0, 2, 6, 8)
    dicts = [_slice_dict(i, "v", i, 2, {1: lesion | extension}) for i in range(2)]
    name = _register("eval_test_hysteresis", dicts)
    post = PostprocessParams(score_threshold=0.3, component_score_threshold=(0.9,))
    ev = BrainSegEvaluator(name, distributed=False, postprocess=post, mask_source="instances")
    for d in dicts:
        inst = _output({1: lesion})["instances"]  # score 0.9: the seed
        low = _output({1: extension, 2: lone}, score=0.4)["instances"]
        ev.process([d], [{"instances": Instances.cat([inst, low])}])
    flat = ev.evaluate()["brainseg"]
    assert flat["volume_dice_cat_edema_raw"] == flat["volume_dice_cat_edema_post"] == 1.0
    assert flat["volume_dice_ET_raw"] == 0.0  # the lone 0.4 lesion, no GT
    assert flat["volume_dice_ET_post"] == 1.0  # dropped: both empty


def test_evaluator_matches_evaluate_volume_and_writes_schema(tmp_path):
    dicts, preds = _toy_dataset()
    name = _register("eval_test_toy", dicts)
    post = PostprocessParams(min_volume_3d=2)
    ev, flat = _evaluate(name, dicts, preds, postprocess=post, output_dir=str(tmp_path))

    # Volume "b": rebuild by hand (slice 3 absent: empty) and score with evaluate_volume.
    gt = np.zeros((3, 4, H, W), bool)
    pred = np.zeros_like(gt)
    for d in dicts:
        if d["volume_id"] == "b":
            for ann in d["annotations"]:
                gt[ann["category_id"], d["slice_index"]] = mask_util.decode(ann["segmentation"])
            for c, m in preds[d["image_id"]].items():
                pred[c, d["slice_index"]] = m
    expected = evaluate_volume(pred, gt, (5.0, 2.0, 0.5), "labels", slices=[0, 1, 2])
    got = [r for r in ev.rows if r["volume_id"] == "b" and r["variant"] == "raw"]
    assert len(got) == len(expected) == 5
    for r, e in zip(got, expected):
        assert _same({k: r[k] for k in e}, e)
    assert {r["gt_source"] for r in ev.rows} == {"annotations"}  # no volumes.json here

    with open(tmp_path / EVALUATOR_FILES.cases, newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    assert tuple(reader.fieldnames) == EVALUATOR_CASES_COLUMNS
    assert len(table) == 3 * 5 * 2  # volumes x (3 regions + necrotic, edema) x variants
    assert [(r["name"], r["variant"]) for r in table[:4]] == [
        ("WT", "raw"), ("WT", "post"), ("TC", "raw"), ("TC", "post")
    ]
    assert {r["group"] for r in table} == {"region", "category"}
    assert table[0]["patient_id"] == "P-a"
    summary = json.loads((tmp_path / EVALUATOR_FILES.summary).read_text())
    assert summary["empty_slice_policy"] == "exclude"
    assert summary["num_volumes"] == 3
    assert summary["postprocess"]["MIN_VOLUME_3D"] == [2]
    for key in ("volume_dice_mean_post", "volume_dice_mean_raw", "volume_dice_WT_raw",
                "volume_hd95_TC_post", "volume_iou_ET_raw", "slice_dice_WT_post",
                "lesion_dice_ET_raw", "volume_dice_cat_necrotic_post"):
        assert summary[key] == pytest.approx(flat[key], nan_ok=True)
    assert summary["settings"]["hd95_penalty_mm"] == 374.0
    lesions = (tmp_path / EVALUATOR_FILES.lesions).read_text()
    assert lesions.startswith("volume_id,patient_id,variant,group")
    # Necrotic: GT empty everywhere, so its slice scores exist only where specks were.
    assert flat["slice_dice_cat_necrotic_raw"] == 0.0
    assert math.isnan(flat["slice_dice_cat_necrotic_post"])
    assert summary["slice_dice_cat_necrotic_post"] is None  # NaN is null in the JSON


def test_evaluator_rejects_unknown_images_and_datasets():
    dicts = [_slice_dict(0, "v", 0, 1, {})]
    name = _register("eval_test_unknown", dicts)
    ev = BrainSegEvaluator(name, distributed=False)
    ev.process([{"image_id": 7, "volume_id": "w", "slice_index": 0}], [_output({})])
    with pytest.raises(ValueError, match="volume 'w' slice 0 is not in dataset"):
        ev.evaluate()
    DatasetCatalog.register("eval_test_no_target", lambda: dicts)
    with pytest.raises(ValueError, match="no 'target' metadata"):
        BrainSegEvaluator("eval_test_no_target")


def test_evaluator_from_config():
    from brainseg_d2.config import get_brainseg_cfg

    name = _register("eval_test_cfg", [_slice_dict(0, "v", 0, 1, {})])
    cfg = get_brainseg_cfg()
    cfg.merge_from_list(["BRAINSEG.EVAL.EMPTY_SLICE_POLICY", "include",
                         "BRAINSEG.POSTPROCESS.MIN_VOLUME_3D", "(5,)"])
    ev = BrainSegEvaluator.from_config(cfg, name, None)
    ev.process([{"image_id": 0, "volume_id": "v", "slice_index": 0}], [_output({})])
    ev.evaluate()  # distributed (the default) in a single process: gathers its own records
    assert ev.summary["empty_slice_policy"] == "include"
    assert ev.summary["postprocess"]["MIN_VOLUME_3D"] == (5,)
    assert ev.summary["slice_dice_WT_raw"] == 1.0  # one empty slice, included, scores 1


# ---------------------------------------------------------------------------
# two processes give the numbers of one
# ---------------------------------------------------------------------------


def _two_rank_worker(out_dir: str) -> None:
    """Each rank evaluates every other slice; rank 0 writes what it got."""
    from detectron2.utils import comm

    dicts, preds = _toy_dataset()
    name = _register("eval_test_dist", dicts)
    ev = BrainSegEvaluator(name, postprocess=PostprocessParams(min_volume_3d=2))
    ev.reset()
    rank = comm.get_rank()
    for d in dicts[rank :: comm.get_world_size()]:
        inputs = {k: v for k, v in d.items() if k != "annotations"}
        ev.process([inputs], [_output(preds[d["image_id"]])])
    result = ev.evaluate()
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump({"result": result, "world_size": comm.get_world_size()}, f)


def test_two_processes_match_one(tmp_path):
    from brainseg_d2.engine import launch  # Detectron2 v0.6's asserts CUDA

    launch(_two_rank_worker, 2, dist_url="auto", args=(str(tmp_path),))
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["world_size"] == 2 and rank1["result"] == {}

    dicts, preds = _toy_dataset()
    name = _register("eval_test_dist_single", dicts)
    _, flat = _evaluate(name, dicts, preds, postprocess=PostprocessParams(min_volume_3d=2))
    assert rank0["result"]["brainseg"] == pytest.approx(flat, nan_ok=True)


# ---------------------------------------------------------------------------
# a converted phantom: ground truth as prediction scores perfectly
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("source", MASK_SOURCES)
def test_phantom_ground_truth_as_prediction_is_perfect(eval_phantom_dataset, tmp_path, source):
    """Val annotations and label PNGs hold every labelled voxel: either as the
    prediction scores exactly 1 against the evaluator's ground truth."""
    name = "eval_phantom_val"
    dicts = DatasetCatalog.get(name)
    ev = BrainSegEvaluator(name, distributed=False, output_dir=str(tmp_path), mask_source=source)
    target = get_target("labels")
    for d in dicts:
        h, w = d["height"], d["width"]
        inst = Instances((h, w))
        masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in d["annotations"]]
        inst.pred_masks = torch.tensor(np.array(masks, bool).reshape(-1, h, w))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]]).long()
        inst.scores = torch.ones(len(masks))
        tissue = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        probs = torch.from_numpy(target.masks_from_tissue(tissue).astype(np.float32))
        output = {"instances": inst, "sem_seg": probs}
        ev.process([{k: v for k, v in d.items() if k != "annotations"}], [output])
    flat = ev.evaluate()["brainseg"]
    assert flat["volume_dice_mean_raw"] == flat["volume_dice_mean_post"] == 1.0
    assert flat["volume_hd95_WT_post"] == 0.0
    assert ev.summary["num_volumes"] == 1
    assert ev.rows[0]["ref_voxels"] > 100
    assert ev.summary["ground_truth"] == {"original": 1}  # the case's own label map
