"""The main job, end to end, on the built-in MRI phantom (``tools/run_demo.py``).

Stages, each a function so tests and users can run them alone:

1. :func:`make_data`: phantom cases (training seed and a *different* held-out seed),
   converted to COCO slice datasets and registered.
2. :func:`train`: the CPU phantom config, from scratch, with the plugin's Trainer.
3. :func:`tune`: the post-processing chosen on the validation split
   (:mod:`brainseg_d2.evaluation.tuning`), written to ``train/config_tuned.yaml``.
4. :func:`evaluate`: the project's evaluator on the held-out cases, plus a
   non-learned baseline (FLAIR hyperintensity: above mean + 2 SD inside the
   brain, same post-processing, same metric code).
5. :func:`predict_and_show`: every held-out volume through ``VolumePredictor``
   to NIfTI in the input's geometry, overlays, montage, GIF, and the HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from brainseg_d2.config import setup_cfg
from brainseg_d2.data.convert import ConvertOptions, convert_dataset
from brainseg_d2.data.datasets import register_brainseg_dataset
from brainseg_d2.data.phantom import MODALITIES, generate_dataset
from brainseg_d2.data.preprocess import preprocess_volume, source_intensities
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.data.volume_io import read_image
from brainseg_d2.labels import TISSUE_ED, get_target
from brainseg_d2.postprocessing import PostprocessParams, postprocess_volume
from brainseg_d2.structures import DatasetInfo
from brainseg_d2.utils.paths import check_replaceable, write_marker

logger = logging.getLogger(__name__)

#: Written into the demo's output folder; only folders holding it are ever replaced.
MARKER = ".brainseg-demo"
#: The FLAIR baseline's per-case rows (evaluator columns), in ``<output>/eval``.
BASELINE_FILE = "baseline_cases.csv"
#: How the report names the baseline.
BASELINE_NAME = "FLAIR > mean + 2 SD"
#: The demo's training config, relative to the repository root.
DEMO_CONFIG = "configs/phantom/mask_rcnn_R_18_FPN_cpu_bf16_adamw_inst3_2050.yaml"


@dataclass
class DemoOptions:
    """Everything the demo does, with the defaults of ``make demo``.

    Attributes:
        config: training config (:data:`DEMO_CONFIG` in the repository).
        output: folder for every artefact (replaced only if a previous demo wrote it).
        train_cases / heldout_cases: phantom cases for training+validation / held-out test.
        seed / heldout_seed: phantom seeds; different, so held-out anatomy/tumours are new.
        spacing: phantom voxel size in mm.
        target: ``labels`` or ``regions`` (see :mod:`brainseg_d2.labels`).
        opts: extra ``KEY VALUE`` config overrides (e.g. a shorter schedule).
        tune: choose the post-processing on ``phantom_val`` after training
            (False: the config's values).
        postprocess: the chosen post-processing, set by :func:`tune`.
        workers: processes that generate and convert the phantom cases (the
            data is the same for any number).
        normalization: the converter's intensity normalisation (``zscore``, the
            default, or ``percentile``; :class:`~brainseg_d2.data.convert.ConvertOptions`).

    The demo turns off evaluation during training (``TEST.EVAL_PERIOD 0``): its
    budget goes to training iterations, and the held-out evaluation follows.
    The 60 training cases split into 51 for training and 9 for validation, where
    the post-processing is tuned.
    """

    config: Path
    output: Path = Path("output/demo")
    train_cases: int = 60
    heldout_cases: int = 12
    seed: int = 0
    heldout_seed: int = 1000
    spacing: float = 1.5
    target: str = "regions"
    opts: list[str] = field(default_factory=list)
    tune: bool = True
    postprocess: PostprocessParams | None = None
    workers: int = field(default_factory=lambda: min(os.cpu_count() or 1, 8))
    normalization: str = ConvertOptions.normalization


def prepare_output(folder: Path) -> None:
    """Create ``folder``; replace it only if it is a previous demo's output.

    Raises:
        ValueError: ``folder`` is a file or a link, a non-empty folder
            without the demo's :data:`MARKER`, or a finished demo's folder
            holding a file the demo did not write; nothing is touched.
    """
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ValueError(f"{folder} exists and is not a folder; choose another --output")
    if folder.exists() and any(folder.iterdir()):
        # A finished demo's marker lists its files: one of the user's stops the replacement.
        check_replaceable(folder, MARKER, "the demo", "--output")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, MARKER, "the demo", finished=False)


def make_data(opts: DemoOptions) -> dict[str, Path]:
    """Generate and convert the phantom data; register ``phantom_{train,val}``, ``heldout_test``.

    Returns:
        paths of the case folders and converted datasets.
    """
    out, workers = opts.output, opts.workers
    context = build_cfg(opts, test_dataset=None).BRAINSEG.INPUT.CONTEXT_SLICES  # 2.5D: K > 0
    generate_dataset(
        out / "cases/train", opts.train_cases, seed=opts.seed, spacing=opts.spacing,
        workers=workers,
    )
    generate_dataset(
        out / "cases/heldout", opts.heldout_cases, seed=opts.heldout_seed, spacing=opts.spacing,
        prefix="Heldout", workers=workers,
    )
    convert_dataset(
        find_brats_cases(out / "cases/train"), out / "datasets/phantom",
        ConvertOptions(target=opts.target, split=(0.85, 0.15, 0.0), seed=opts.seed,
                       normalization=opts.normalization, context_slices=context),
        workers=workers, progress=False,
    )
    convert_dataset(
        find_brats_cases(out / "cases/heldout"), out / "datasets/heldout",
        ConvertOptions(target=opts.target, split=(0.0, 0.0, 1.0), seed=opts.seed,
                       normalization=opts.normalization, context_slices=context),
        workers=workers, progress=False,
    )
    register_brainseg_dataset(out / "datasets/phantom", name="phantom")
    register_brainseg_dataset(out / "datasets/heldout", name="heldout")
    return {
        "train_cases": out / "cases/train",
        "heldout_cases": out / "cases/heldout",
        "dataset": out / "datasets/phantom",
        "heldout_dataset": out / "datasets/heldout",
    }


def build_cfg(opts: DemoOptions, *, test_dataset: str | None = "phantom_val"):
    """The frozen training/evaluation config of the demo (``test_dataset`` None: no test set)."""
    cfg = setup_cfg(opts.config, [
        "DATASETS.TRAIN", "('phantom_train',)",
        "DATASETS.TEST", f"('{test_dataset}',)" if test_dataset else "()",
        "OUTPUT_DIR", str(opts.output / "train"),
        "TEST.EVAL_PERIOD", "0",
        *opts.opts,
    ], freeze=False)
    if opts.postprocess is not None:
        for key, value in opts.postprocess.to_cfg_dict().items():
            cfg.BRAINSEG.POSTPROCESS[key] = list(value) if isinstance(value, tuple) else value
    cfg.freeze()
    return cfg


def train(opts: DemoOptions, hooks: Sequence = ()):
    """Train the phantom config from scratch; returns the trained model (eval mode).

    ``hooks``: extra Detectron2 hooks, run after the Trainer's own (a bench's clock).
    """
    from detectron2.engine import default_argument_parser, default_setup

    from brainseg_d2.engine import Trainer

    # No test set while training: Detectron2's EvalHook evaluates it once more after
    # the last iteration even with EVAL_PERIOD 0; the held-out evaluation follows.
    cfg = build_cfg(opts, test_dataset=None)
    default_setup(cfg, default_argument_parser().parse_args(["--config-file", str(opts.config)]))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.register_hooks(list(hooks))
    trainer.train()
    return trainer.model.eval()


def tune(opts: DemoOptions, model) -> PostprocessParams | None:
    """Choose the post-processing on ``phantom_val``; sets ``opts.postprocess``.

    Returns:
        the chosen settings (also written, as a full config, to
        ``<output>/train/config_tuned.yaml``), or None when ``opts.tune`` is off.
    """
    from brainseg_d2.evaluation.tuning import tune_postprocess, write_tuned_config

    if not opts.tune:
        return None
    cfg = build_cfg(opts, test_dataset="phantom_val")
    params, _ = tune_postprocess(model, cfg, "phantom_val")
    cfg.defrost()  # the file names the weights it was tuned for and the demo's datasets
    cfg.MODEL.WEIGHTS = str(opts.output / "train" / "model_final.pth")
    cfg.BRAINSEG.DATASET_ROOT = str(opts.output / "datasets")
    write_tuned_config(cfg, params, opts.output / "train" / "config_tuned.yaml")
    opts.postprocess = params
    return params


def evaluate(opts: DemoOptions, model) -> dict:
    """The project's evaluator on the held-out volumes; returns its flat results."""
    from brainseg_d2.engine import Trainer
    from brainseg_d2.evaluation.evaluator import BrainSegEvaluator

    cfg = build_cfg(opts, test_dataset="heldout_test")
    evaluator = BrainSegEvaluator.from_config(cfg, "heldout_test", str(opts.output / "eval"))
    results = Trainer.test(cfg, model, evaluators=[evaluator])
    return results["brainseg"]


def flair_baseline(opts: DemoOptions, num_sd: float = 2.0) -> list[dict]:
    """Score a non-learned baseline on every held-out case with the evaluator's code.

    The case's own FLAIR intensities (``source_intensities``: before the converter's
    clipping and scaling, which would move the threshold with the model's normalisation)
    are thresholded at mean + ``num_sd`` standard deviations of the brain's FLAIR (tumour
    and edema are FLAIR-hyperintense); the result is called whole tumour (edema-coded, so
    it only scores on WT) and cleaned with the same post-processing; where that asks for
    score hysteresis (``COMPONENT_SCORE_THRESH``), components must hold a voxel above
    mean + ``num_sd + 1`` SD instead. A threshold relative to the brain's own FLAIR
    statistics finds the hyperintense tumour, where a two-class split of the brain (Otsu)
    would separate grey from white matter.

    Ground truth is each case's original label map, read by the evaluator's reader
    (:func:`~brainseg_d2.data.ground_truth.label_map_masks`), and the scoring
    settings are the evaluator's (``cfg.BRAINSEG.EVAL``). The rows are also
    written to ``<output>/eval/``:data:`BASELINE_FILE` for the report.

    Returns:
        the per-volume metric rows (raw and post) of ``evaluate_volume``, per case.
    """
    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.evaluation.results_files import EVALUATOR_CASES_COLUMNS, write_table
    from brainseg_d2.evaluation.volume_scores import evaluate_volume, scoring_settings_from_cfg

    info = DatasetInfo.load(opts.output / "datasets/heldout")
    prep_options = info.preprocess_options
    target = get_target(info.target)
    cfg = build_cfg(opts)
    settings = scoring_settings_from_cfg(cfg)
    variants = (
        ("raw", PostprocessParams.raw()),
        ("post", PostprocessParams.from_cfg(cfg.BRAINSEG.POSTPROCESS)),
    )
    rows = []
    for case in find_brats_cases(opts.output / "cases/heldout"):
        images = {ch: read_image(case.channels[ch]) for ch in prep_options.channels}
        prep = preprocess_volume(images, prep_options)
        flair = source_intensities(images["flair"], prep)
        brain_values = flair[prep.brain]
        mean, sd = brain_values.mean(dtype=np.float64), brain_values.std(dtype=np.float64)
        pred = _whole_tumour(target, (flair > mean + num_sd * sd) & prep.brain)
        # The model's score hysteresis has an intensity analogue: components must
        # hold a voxel one SD brighter than the threshold.
        seeds = _whole_tumour(target, (flair > mean + (num_sd + 1) * sd) & prep.brain)
        gt = label_map_masks(case.mask, prep.geometry, target, case.label_convention)
        spacing = prep.geometry.voxel_spacing
        for variant, params in variants:
            masks = postprocess_volume(  # raw params: a copy
                pred, params, seeds=seeds, voxel_ml=prep.geometry.voxel_ml
            )
            for row in evaluate_volume(masks, gt, spacing, target, settings=settings):
                rows.append({**row, "variant": variant, "volume_id": case.case_id,
                             "patient_id": case.patient_id, "gt_source": "original"})
    write_table(opts.output / "eval" / BASELINE_FILE, rows, EVALUATOR_CASES_COLUMNS)
    return rows


def _whole_tumour(target, voxels: np.ndarray) -> np.ndarray:
    """Category masks ``(C, ...)`` of voxels coded as edema, so that they count as WT only."""
    return target.masks_from_tissue(np.where(voxels, TISSUE_ED, 0).astype(np.uint8))


def predict_and_show(opts: DemoOptions, model) -> dict[str, Path]:
    """Predict every held-out volume to NIfTI, draw pictures, write the HTML report."""
    from brainseg_d2.data.ground_truth import label_map_masks
    from brainseg_d2.inference import VolumePredictor
    from brainseg_d2.report import find_thumbnails, write_report
    from brainseg_d2.visualization import render_prediction

    cfg = build_cfg(opts, test_dataset="heldout_test")
    info = DatasetInfo.load(opts.output / "datasets/heldout")
    predictor = VolumePredictor(cfg, dataset_info=info, model=model)
    target = get_target(info.target)
    pred_dir, pic_dir = opts.output / "predictions", opts.output / "pictures"
    pred_dir.mkdir(parents=True, exist_ok=True)
    first = {}
    links: dict[str, dict[str, Path]] = {}
    for case in find_brats_cases(opts.output / "cases/heldout"):
        prediction = predictor.predict(case)
        nifti = pred_dir / f"{case.case_id}_pred.nii.gz"
        sitk.WriteImage(prediction.label_image, str(nifti), True)
        reference = read_image(case.channels["flair"])
        _check_same_geometry(prediction.label_image, reference, nifti)
        # The evaluator's ground truth: the case's original label map, every voxel.
        gt_masks = label_map_masks(
            case.mask, prediction.preprocessed.geometry, target, case.label_convention
        )
        render = render_prediction(prediction, pic_dir / case.case_id, gt_masks=gt_masks,
                                   gif=not first)  # one GIF; montages of all for the report
        links[case.case_id] = {"prediction": nifti, "pictures": render.folder,
                               "reference": Path(case.mask)}  # fmt: skip
        first = first or {"nifti": nifti, "gif": render.gif, "montage": render.montage,
                          "slices": render.folder}
    baseline = opts.output / "eval" / BASELINE_FILE
    trained = {"Trained weights": opts.output / "train" / "model_final.pth",
               "Tuned config": opts.output / "train" / "config_tuned.yaml"}  # fmt: skip
    report = write_report(opts.output / "eval", opts.output / "report.html",
                          thumbnails=find_thumbnails(pic_dir, list(links)),
                          title="brainseg_d2 phantom demo",
                          baseline=baseline if baseline.is_file() else None,
                          baseline_name=BASELINE_NAME, links=links,
                          run_info={k: v for k, v in trained.items() if v.is_file()})  # fmt: skip
    return {**first, "predictions": pred_dir, "pictures": pic_dir, "report": report}


def _check_same_geometry(image: sitk.Image, reference: sitk.Image, path: Path) -> None:
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing())
        and np.allclose(image.GetOrigin(), reference.GetOrigin())
        and np.allclose(image.GetDirection(), reference.GetDirection())
    )
    if not same:
        raise RuntimeError(f"{path} does not share its input's geometry")


def check_options(opts: DemoOptions) -> None:
    """Config values that cannot work (``MODEL.DEVICE cuda`` with no GPU, ``PIXEL_MEAN``
    not one value per phantom channel, ...), before anything is generated or written.

    Raises:
        ValueError: one line naming the key, its value and where it was set.
    """
    from brainseg_d2.engine.cfg_checks import check_cfg_values, check_input_channels

    if opts.workers < 1:
        raise ValueError(f"workers must be >= 1, got {opts.workers}")
    args = SimpleNamespace(config_file=str(opts.config), opts=list(opts.opts), eval_only=False)
    cfg = build_cfg(opts)
    check_cfg_values(cfg, args)
    check_input_channels(cfg, args, sources={"the phantom": MODALITIES})


def run(opts: DemoOptions) -> dict:
    """All stages; returns a summary (also written to ``<output>/summary.json``)."""
    t0 = time.perf_counter()
    check_options(opts)
    prepare_output(opts.output)
    timings = {}

    def stage(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t, 1)
        logger.info("demo stage %s done in %.1f s", name, timings[name])
        return out

    stage("data", make_data, opts)
    model = stage("train", train, opts)
    tuned = stage("tune", tune, opts, model)
    results = stage("evaluate", evaluate, opts, model)
    baseline_rows = stage("baseline", flair_baseline, opts)
    outputs = stage("predict_and_show", predict_and_show, opts, model)

    baseline_wt = {
        v: float(np.mean([r["dice"] for r in baseline_rows
                          if r["name"] == "WT" and r["group"] == "region" and r["variant"] == v]))
        for v in ("raw", "post")
    }
    post = tuned or PostprocessParams.from_cfg(build_cfg(opts).BRAINSEG.POSTPROCESS)
    summary = {
        "volume_dice": {k: v for k, v in results.items() if k.startswith("volume_dice_")},
        "lesion_dice": {k: v for k, v in results.items() if k.startswith("lesion_dice_")},
        # n of each mean: held-out volumes whose ground truth holds the region.
        "num_present": {k[len("num_present_"):]: int(v) for k, v in results.items()
                        if k.startswith("num_present_") and "cat_" not in k},
        "num_volumes": opts.heldout_cases,
        "postprocess": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in post.to_cfg_dict().items()},
        "postprocess_tuned": tuned is not None,
        "baseline_flair_wt_dice": baseline_wt,
        "timings_s": timings,
        "total_s": round(time.perf_counter() - t0, 1),
        "outputs": {k: str(v) for k, v in outputs.items() if v is not None},
        "options": {k: str(v) for k, v in vars(opts).items() if k != "postprocess"},
    }
    (opts.output / "summary.json").write_text(json.dumps(summary, indent=2))
    write_marker(opts.output, MARKER, "the demo")  # now list what it wrote
    return summary
