#!/usr/bin/env python
"""Train or evaluate Mask R-CNN on converted MRI slice datasets.

    tools/train_net.py --config-file configs/phantom/mask_rcnn_R_18_FPN_cpu_instant_test.yaml
    tools/train_net.py --config-file CFG --num-gpus 8
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --resume
"""

import sys

import detectron2.utils.comm as comm
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch

from brainseg_d2.engine import Trainer, build_cfg_from_args


def setup(args):
    cfg = build_cfg_from_args(args)
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            from detectron2.evaluation import verify_results

            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> int:
    args = default_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
