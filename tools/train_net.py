#!/usr/bin/env python
"""Train or evaluate Mask R-CNN on converted MRI slice datasets.

    tools/train_net.py --config-file configs/phantom/mask_rcnn_R_18_FPN_cpu_instant_test.yaml
    tools/train_net.py --config-file CFG --num-gpus 8
    tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
    tools/train_net.py --config-file CFG --resume

Everything that can be checked (config values, datasets, weights) is checked
before ``OUTPUT_DIR`` is written; ``--eval-only`` loads the weights strictly
(every parameter, with its shape) before it writes anything either.
"""

import sys

from brainseg_d2.utils.cli import print_error, quiet_third_party_warnings

quiet_third_party_warnings()  # before torch and Detectron2 are imported: they warn on import

import detectron2.utils.comm as comm  # noqa: E402
from detectron2.engine import default_setup  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from brainseg_d2.engine import launch  # noqa: E402  (CPU: gloo workers with any Detectron2)
from brainseg_d2.engine.trainer import (  # noqa: E402
    Trainer,
    argument_parser,
    build_cfg_from_args,
    load_eval_weights,
)


def setup_logging(cfg, args) -> None:
    """Detectron2's set-up, and the plugin's messages on the console and in ``log.txt`` too.

    ``default_setup`` configures the ``detectron2`` and ``fvcore`` loggers only.
    """
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="brainseg_d2",
                 abbrev_name="brainseg")  # fmt: skip


def one_model(cfg):
    """``cfg``, unless it records an ensemble: this tool trains and evaluates one model."""
    members = cfg.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS
    if len(members) > 1:
        raise ValueError(
            f"the config records an ensemble of {len(members)} models "
            "(BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS), and this tool trains or evaluates one: "
            'add BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS "()" for MODEL.WEIGHTS alone, or score '
            "the ensemble with brainseg-predict and brainseg-evaluate"
        )
    return cfg


def main(args):
    if args.eval_only:
        cfg = one_model(build_cfg_from_args(args))
        model = Trainer.build_model(cfg)
        load_eval_weights(model, cfg, resume=args.resume)
        setup_logging(cfg, args)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            from detectron2.evaluation import verify_results

            verify_results(cfg, res)
        return res
    cfg = one_model(build_cfg_from_args(args))  # before setup_logging writes OUTPUT_DIR
    setup_logging(cfg, args)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    try:
        if args.num_gpus * args.num_machines > 1:
            one_model(build_cfg_from_args(args))  # errors here, as one line, not in every worker
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ValueError as e:
        print_error(e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
