#!/usr/bin/env python
"""Ablation of the model formulation on the phantom: same budget, seeds and held-out cases.

Each variant trains the CPU phantom config from scratch for the same number of
iterations (same ``SEED``, same training cases) and is scored by the project's
evaluator on the same held-out cases (another phantom seed), raw and
post-processed: the post-processing is chosen on the training data's val split
by ``evaluation/tuning/``, as the demo does; raw uses its score threshold and
no cleaning. Data are generated once into ``--work`` and converted once per
(target, channels) combination, so variants differ only in what they name.

    .venv/bin/python bench/ablation.py --work /tmp/ablation                  # every variant
    .venv/bin/python bench/ablation.py --work /tmp/ablation --variants semantic_regions_4ch

Results: ``<work>/results/<variant>.json`` (the evaluator's flat metrics plus
timings) and a table on stdout; BENCHMARKS.md records them.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/phantom/mask_rcnn_R_18_FPN_cpu_bs4_800.yaml"
THREE = ("flair", "t1ce", "t2")
FOUR = ("flair", "t1", "t1ce", "t2")
MASK_RCNN = ["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "BRAINSEG.MASK_SOURCE", "instances"]


@dataclass(frozen=True)
class Variant:
    target: str
    channels: tuple[str, ...]
    opts: list[str] = field(default_factory=list)
    context: int = 0  # neighbouring slices per side as extra channels (2.5D)


VARIANTS = {
    "maskrcnn_regions_3ch": Variant("regions", THREE, MASK_RCNN),
    "maskrcnn_labels_3ch": Variant("labels", THREE, MASK_RCNN),
    "semantic_regions_3ch": Variant("regions", THREE),
    "semantic_regions_4ch": Variant("regions", FOUR),
    "semantic_labels_4ch": Variant("labels", FOUR),
    "semantic_regions_4ch_2.5d": Variant("regions", FOUR, context=1),
}


def input_opts(variant: Variant) -> list[str]:
    n = len(variant.channels) * (2 * variant.context + 1)
    return ["MODEL.PIXEL_MEAN", str([40.0] * n), "MODEL.PIXEL_STD", str([50.0] * n),
            "BRAINSEG.INPUT.CONTEXT_SLICES", str(variant.context)]  # fmt: skip


def prepare(work: Path, args, variant: Variant) -> str:
    """Generate (once) and convert (once per target/channels); returns the dataset prefix."""
    from brainseg_d2.data.convert import ConvertOptions, convert_dataset
    from brainseg_d2.data.datasets import register_brainseg_dataset
    from brainseg_d2.data.phantom import generate_dataset
    from brainseg_d2.data.sources import find_brats_cases

    cases = {"train": work / "cases/train", "heldout": work / "cases/heldout"}
    if not (cases["train"] / "done").is_file():
        generate_dataset(cases["train"], args.train_cases, seed=args.seed, spacing=args.spacing)
        (cases["train"] / "done").touch()
    if not (cases["heldout"] / "done").is_file():
        generate_dataset(
            cases["heldout"], args.heldout_cases, seed=args.heldout_seed, spacing=args.spacing,
            prefix="Heldout",
        )  # fmt: skip
        (cases["heldout"] / "done").touch()
    key = f"{variant.target}_{len(variant.channels)}ch" + (
        f"_ctx{variant.context}" if variant.context else ""
    )
    for part, split in (("train", (0.85, 0.15, 0.0)), ("heldout", (0.0, 0.0, 1.0))):
        out = work / "datasets" / f"{part}_{key}"
        if not out.exists():
            convert_dataset(
                find_brats_cases(cases[part]), out,
                ConvertOptions(channels=variant.channels, target=variant.target, split=split,
                               seed=args.seed, context_slices=variant.context),
                progress=False,
            )  # fmt: skip
        register_brainseg_dataset(out, name=f"{part}_{key}")
    return key


def run_variant(work: Path, name: str, args) -> dict:
    from detectron2.engine import default_setup

    from brainseg_d2.config import get_brainseg_cfg
    from brainseg_d2.engine import Trainer
    from brainseg_d2.evaluation.evaluator import BrainSegEvaluator
    from brainseg_d2.evaluation.tuning import tune_postprocess

    variant = VARIANTS[name]
    key = prepare(work, args, variant)
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list([
        "DATASETS.TRAIN", f"('train_{key}_train',)", "DATASETS.TEST", "()",
        "OUTPUT_DIR", str(work / "runs" / name), "TEST.EVAL_PERIOD", "0",
        "SOLVER.MAX_ITER", str(args.iters), "SEED", str(args.seed),
        *input_opts(variant), *variant.opts, *args.opts,
    ])  # fmt: skip
    cfg.freeze()
    default_setup(cfg, argparse.Namespace(config_file="", eval_only=False, opts=[]))
    final = Path(cfg.OUTPUT_DIR) / "model_final.pth"
    trained_here = not final.is_file()
    t0 = time.perf_counter()
    if not trained_here:  # trained by an earlier run: evaluate only
        from brainseg_d2.checkpoint import load_strict

        model = Trainer.build_model(cfg)
        load_strict(model, str(final))
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        model = trainer.model
    train_s = time.perf_counter() - t0
    model.eval()
    t0 = time.perf_counter()
    # Post-processing chosen on the training data's val split, as the demo does.
    params, _ = tune_postprocess(model, cfg, f"train_{key}_val")
    tune_s = time.perf_counter() - t0
    dataset = f"heldout_{key}_test"
    eval_cfg = cfg.clone()
    eval_cfg.defrost()
    eval_cfg.DATASETS.TEST = (dataset,)
    for k, v in params.to_cfg_dict().items():
        eval_cfg.BRAINSEG.POSTPROCESS[k] = list(v) if isinstance(v, tuple) else v
    eval_cfg.freeze()
    evaluator = BrainSegEvaluator.from_config(eval_cfg, dataset, str(work / "eval" / name))
    results = Trainer.test(eval_cfg, model, evaluators=[evaluator])["brainseg"]
    out = {
        "variant": name, "target": variant.target, "channels": list(variant.channels),
        "iters": args.iters, "train_s": round(train_s, 1) if trained_here else None,
        "tune_s": round(tune_s, 1), "eval_s": round(time.perf_counter() - t0 - tune_s, 1),
        "postprocess": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in params.to_cfg_dict().items()},
        "metrics": results,
    }  # fmt: skip
    path = work / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| variant | WT raw -> post | TC raw -> post | ET raw -> post "
        "| lesion WT/TC/ET post | train s |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        cells = [
            f"{m[f'volume_dice_{k}_raw']:.3f} -> {m[f'volume_dice_{k}_post']:.3f}"
            for k in ("WT", "TC", "ET")
        ]
        lesion = "/".join(f"{m[f'lesion_dice_{k}_post']:.3f}" for k in ("WT", "TC", "ET"))
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {lesion} | {r['train_s']} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for data, runs, results")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="variants to run (default: all)")
    p.add_argument("--train-cases", type=int, default=60, help="phantom training cases")
    p.add_argument("--heldout-cases", type=int, default=12, help="held-out phantom cases")
    p.add_argument("--spacing", type=float, default=1.5, help="phantom voxel size (mm)")
    p.add_argument("--seed", type=int, default=0, help="phantom and training seed")
    p.add_argument("--heldout-seed", type=int, default=1000, help="held-out phantom seed")
    p.add_argument("--iters", type=int, default=800, help="training iterations per variant")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every variant")
    args = p.parse_args()
    from detectron2.utils.logger import setup_logger

    setup_logger(name="brainseg_d2")
    logging.getLogger("brainseg_d2").setLevel(logging.INFO)
    rows = [run_variant(args.work, name, args) for name in args.variants]
    done = [json.loads(f.read_text()) for f in sorted((args.work / "results").glob("*.json"))]
    print(table([r for r in done if r["variant"] in VARIANTS] or rows))


if __name__ == "__main__":
    main()
