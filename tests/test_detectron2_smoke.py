"""Smoke tests: the installed Detectron2 trains, predicts and evaluates Mask R-CNN on CPU.

These run against whichever Detectron2 the set-up installed (source build or the
Python-only fallback), so they double as a check of the compatibility fixes.
"""

from __future__ import annotations

import importlib

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

ZOO_CONFIG = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"


@pytest.mark.parametrize(
    "module",
    ["detectron2.engine", "detectron2.evaluation", "detectron2.model_zoo", "detectron2.data"],
)
def test_detectron2_modules_import(module):
    importlib.import_module(module)


def _toy_dataset(root, n_images: int = 4, size: int = 96) -> list[dict]:
    """Images with one or two bright discs, each annotated as an RLE mask."""
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(n_images):
        img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        annos = []
        for _ in range(1 + i % 2):
            cx, cy = (int(v) for v in rng.integers(20, size - 20, 2))
            r = int(rng.integers(6, 14))
            mask = np.zeros((size, size), np.uint8)
            cv2.circle(mask, (cx, cy), r, 1, -1)
            img[mask > 0] = 200
            rle = mask_util.encode(np.asfortranarray(mask))
            rle["counts"] = rle["counts"].decode("ascii")
            x, y, w, h = mask_util.toBbox(rle).tolist()
            annos.append(
                {"bbox": [x, y, w, h], "bbox_mode": 1, "segmentation": rle, "category_id": 0}
            )
        path = root / f"img{i}.png"
        cv2.imwrite(str(path), img)
        dicts.append(
            {"file_name": str(path), "image_id": i, "height": size, "width": size,
             "annotations": annos}
        )
    return dicts


@pytest.fixture(scope="module")
def toy_cfg(tmp_path_factory):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = tmp_path_factory.mktemp("toy")
    dicts = _toy_dataset(root)
    name = "brainseg_smoke_toy"
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["disc"])

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(ZOO_CONFIG))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.WEIGHTS", "",  # from scratch: no download
            # Random FrozenBN explodes from scratch; trainable GroupNorm does not.
            "MODEL.RESNETS.NORM", "GN",
            "MODEL.FPN.NORM", "GN",
            "MODEL.BACKBONE.FREEZE_AT", "0",
            "MODEL.ROI_HEADS.NUM_CLASSES", "1",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
            "INPUT.MIN_SIZE_TRAIN", "(96,)",
            "INPUT.MAX_SIZE_TRAIN", "128",
            "INPUT.MIN_SIZE_TEST", "96",
            "INPUT.MAX_SIZE_TEST", "128",
            "INPUT.MASK_FORMAT", "bitmask",
            "DATASETS.TRAIN", f"('{name}',)",
            "DATASETS.TEST", f"('{name}',)",
            "DATALOADER.NUM_WORKERS", "0",
            "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.BASE_LR", "0.001",
            "SOLVER.MAX_ITER", "3",
            "SOLVER.WARMUP_ITERS", "1",
            "SOLVER.CHECKPOINT_PERIOD", "1000",
            "TEST.DETECTIONS_PER_IMAGE", "20",
            "OUTPUT_DIR", str(root / "out"),
        ]
    )
    cfg.freeze()
    return cfg, name, dicts


def test_train_predict_evaluate_mask_rcnn(toy_cfg):
    from detectron2.engine import DefaultPredictor, DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, inference_on_dataset

    cfg, name, dicts = toy_cfg
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    first = [p.detach().clone() for p in trainer.model.parameters() if p.requires_grad][:5]
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER
    after = [p.detach() for p in trainer.model.parameters() if p.requires_grad][:5]
    assert any(not torch.equal(a, b) for a, b in zip(first, after)), "weights did not change"
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == cfg.SOLVER.MAX_ITER and all(np.isfinite(v) for v, _ in losses)

    predictor = DefaultPredictor(cfg)
    predictor.model.load_state_dict(trainer.model.state_dict())
    out = predictor(cv2.imread(dicts[0]["file_name"]))
    inst = out["instances"]
    assert inst.image_size == (96, 96)
    assert inst.has("pred_masks") and inst.has("scores")

    evaluator = COCOEvaluator(name, output_dir=cfg.OUTPUT_DIR, use_fast_impl=False)
    results = inference_on_dataset(trainer.model, _test_loader(cfg, name), evaluator)
    assert set(results) >= {"bbox", "segm"}
    assert all(np.isfinite(v) or np.isnan(v) for v in results["segm"].values())


def _test_loader(cfg, name):
    from detectron2.data import build_detection_test_loader

    return build_detection_test_loader(cfg, name)


def test_fast_coco_eval_needs_compiled_ops_clearly():
    from brainseg_d2.env import detectron2_install_kind

    _, _, has_ops = detectron2_install_kind()
    if has_ops:
        pytest.skip("compiled ops present: fast COCO eval available")
    from detectron2.evaluation.fast_eval_api import COCOeval_opt
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "disc"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16,
             "iscrowd": 0}
        ],
    }
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])
    with pytest.raises(ImportError, match="compiled ops"):
        COCOeval_opt(gt, dt, "bbox").evaluate()


def test_fast_coco_eval_runs_with_compiled_ops():
    from brainseg_d2.env import detectron2_install_kind

    _, _, has_ops = detectron2_install_kind()
    if not has_ops:
        pytest.skip("Python-only fallback: no compiled ops")
    from detectron2.evaluation.fast_eval_api import COCOeval_opt
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {
        "images": [{"id": 1, "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "disc"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "area": 16,
             "iscrowd": 0}
        ],
    }
    gt.createIndex()
    dt = gt.loadRes([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4], "score": 0.9}])
    ev = COCOeval_opt(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the one detection is the ground truth
