#!/usr/bin/env python
"""Choose the post-processing (BRAINSEG.POSTPROCESS) on a validation split; write the config.

    tools/tune_postprocess.py --config-file CFG MODEL.WEIGHTS output/model_final.pth
    tools/tune_postprocess.py --config-file CFG --dataset brats2021_val \\
        --output output/config_tuned.yaml MODEL.WEIGHTS output/model_final.pth
    tools/tune_postprocess.py --config-file CFG --weights f0/model_final.pth f1/model_final.pth

Runs the model once over every volume of the dataset, scores a grid of
SCORE_THRESH x MIN_VOLUME_ML x COMPONENT_SCORE_THRESH on volume Dice, then
per-category thresholds, then (nested targets) the inner categories' minimum
volume, the least total enhancing volume and the core's hull margin on volume
and lesion-wise Dice (see brainseg_d2/evaluation/tuning/),
prints the table and writes the config with the best setting, usable as
--config-file by every tool. With several --weights the setting is chosen for
their ensemble (the averaged probabilities), and the written config predicts
with the ensemble (BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS; MODEL.WEIGHTS is the
first of them).
"""

import sys

from brainseg_d2.utils.cli import (
    ArgumentParser,
    print_error,
    quiet_third_party_warnings,
    weights_opts,
)

quiet_third_party_warnings()  # before torch and Detectron2 are imported: they warn on import

from pathlib import Path  # noqa: E402


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE", help="model config (YAML)")
    p.add_argument("--dataset", help="registered validation split (default: DATASETS.TEST[0])")
    p.add_argument(
        "--output", type=Path, help="tuned config to write (default: OUTPUT_DIR/config_tuned.yaml)"
    )
    p.add_argument("--weights", nargs="+", action="extend", metavar="PTH",
                   help="the model's weights (sets MODEL.WEIGHTS); several: tune for their "
                   "ensemble (as brainseg-predict --weights predicts), which the written "
                   "config records (BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS)")
    p.add_argument("opts", nargs="...", metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS output/model_final.pth")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.eval_only, args.num_gpus, args.num_machines = True, 1, 1
    try:
        weights = weights_opts(args)  # first: it moves trailing overrides into args.opts
        args.opts = [*args.opts, *weights]
        from detectron2.utils.logger import setup_logger

        from brainseg_d2.config import setup_cfg
        from brainseg_d2.engine.trainer import Trainer, build_cfg_from_args, load_eval_weights
        from brainseg_d2.evaluation.tuning import (
            STAGES,
            check_tuned_output,
            tune_postprocess,
            write_tuned_config,
        )
        from brainseg_d2.inference.ensemble import build_inference_model, ensemble_members

        # The split to tune on is what the checks see as the test set (a training
        # config, the demo's among them, may have none).
        test = setup_cfg(args.config_file, args.opts).DATASETS.TEST if args.config_file else ()
        dataset = args.dataset or (test[0] if test else None)
        if dataset is None:
            raise ValueError("no validation split: give --dataset or set DATASETS.TEST")
        args.opts = [*args.opts, "DATASETS.TEST", f"('{dataset}',)"]
        cfg = build_cfg_from_args(args)
        output = args.output or Path(cfg.OUTPUT_DIR) / "config_tuned.yaml"
        check_tuned_output(output)  # before the work, not after it
        if len(ensemble_members(cfg)) > 1:  # tuned for the ensemble
            from detectron2.data import MetadataCatalog

            meta = MetadataCatalog.get(dataset)
            model = build_inference_model(cfg, meta.target, meta.thing_classes)
        else:
            model = Trainer.build_model(cfg)
            load_eval_weights(model, cfg)
        setup_logger(name="brainseg_d2")
        best, results = tune_postprocess(model.eval(), cfg, dataset)
    except ValueError as exc:
        print_error(exc)
        return 2
    regions = list(results[0]["dice"])
    for stage, objective in STAGES.items():  # each stage's rows, best first
        rows = sorted((r for r in results if r["stage"] == stage), key=lambda r: -r["objective"])
        if not rows:
            continue
        print(f"{stage} (objective: {objective}; * chosen)")
        print("  SCORE_THRESH MIN_VOLUME_ML COMPONENT_SCORE_THRESH CATEGORY_SCORE_THRESH "
              "MIN_TOTAL_ML CORE_HULL_MARGIN " + " ".join(regions) + " objective")
        for r in rows:
            p = r["params"]
            dice = " ".join(f"{r['dice'][k]:.4f}" for k in regions)
            hysteresis = list(p.component_score_threshold) or "off"
            volumes, per_category = list(p.min_volume_ml), list(p.category_score_threshold) or "-"
            hull = p.core_hull_margin if p.core_hull_margin >= 0 else "off"
            totals = list(p.min_total_ml)
            print(f"{'*' if r.get('chosen') else ' '} {p.score_threshold} {volumes} {hysteresis} "
                  f"{per_category} {totals} {hull} {dice} {r['objective']:.4f}")
    try:
        path = write_tuned_config(cfg, best, output)
    except (ValueError, OSError) as exc:  # replaced meanwhile, or a full disk
        print_error(exc)
        return 2 if isinstance(exc, ValueError) else 1
    print(f"best on {dataset} ({results[0]['num_volumes']} volumes): "
          f"{ {k: v for k, v in best.to_cfg_dict().items()} }")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
