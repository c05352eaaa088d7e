#!/usr/bin/env python
"""The main job, end to end, on built-in data.

Stage 1 (this version): trains Mask R-CNN R50-FPN from scratch on CPU for a few
iterations on generated images with RLE masks and runs the predictor, proving the
installed stack trains and infers. Later stages (phantom, conversion, evaluation,
volume prediction, report) are added as they land.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util


def _toy_dicts(root: Path, n: int = 6, size: int = 96) -> list[dict]:
    rng = np.random.default_rng(0)
    dicts = []
    for i in range(n):
        img = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cx, cy = (int(v) for v in rng.integers(25, size - 25, 2))
        cv2.circle(mask, (cx, cy), int(rng.integers(8, 16)), 1, -1)
        img[mask > 0] = 200
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        path = root / f"toy_{i}.png"
        cv2.imwrite(str(path), img)
        dicts.append({
            "file_name": str(path), "image_id": i, "height": size, "width": size,
            "annotations": [{"bbox": mask_util.toBbox(rle).tolist(), "bbox_mode": 1,
                             "segmentation": rle, "category_id": 0}],
        })
    return dicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("output/demo"))
    args = parser.parse_args(argv)

    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.engine import DefaultPredictor, DefaultTrainer

    tmp = Path(tempfile.mkdtemp(prefix="brainseg_demo_"))
    dicts = _toy_dicts(tmp)
    DatasetCatalog.register("toy_discs", lambda: dicts)
    MetadataCatalog.get("toy_discs").set(thing_classes=["disc"])
    cfg = get_cfg()
    cfg.merge_from_file(
        model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")
    )
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.RESNETS.NORM", "GN",
        "MODEL.FPN.NORM", "GN", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.ROI_HEADS.NUM_CLASSES", "1", "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128",
        "INPUT.MASK_FORMAT", "bitmask", "DATASETS.TRAIN", "('toy_discs',)", "DATASETS.TEST", "()",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.002",
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.WARMUP_ITERS", "5",
        "OUTPUT_DIR", str(args.output),
    ])
    cfg.freeze()
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    predictor = DefaultPredictor(cfg)
    predictor.model.load_state_dict(trainer.model.state_dict())
    inst = predictor(cv2.imread(dicts[0]["file_name"]))["instances"]
    print(f"demo: trained {args.iters} iterations; {len(inst)} detections on a toy image; "
          f"outputs in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
