"""Whole-volume prediction: exact round trip, model inputs, batching, CLI."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from detectron2.structures import Instances
from pycocotools import mask as mask_util

from brainseg_d2.cli.predict import main
from brainseg_d2.config import get_brainseg_cfg
from brainseg_d2.data.convert import ConvertOptions, convert_dataset
from brainseg_d2.data.dataset_mapper import BrainSegDatasetMapper
from brainseg_d2.data.datasets import load_brainseg_json, register_brainseg_dataset
from brainseg_d2.data.phantom import PhantomCase, generate_case, write_case
from brainseg_d2.data.preprocess import preprocess_volume
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.data.volume_io import VolumeError, read_image
from brainseg_d2.env import library_threads
from brainseg_d2.inference import VolumePrediction, VolumePredictor

REPO = Path(__file__).resolve().parents[2]
INSTANT_CFG = REPO / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
SPACING = (1.0, 1.3, 2.5)
ORIGIN = (12.5, -40.0, 7.25)
# Permuted + flipped axes, rotated by ~6 degrees (an oblique acquisition).
_ROT = np.array([[np.cos(0.1), -np.sin(0.1), 0], [np.sin(0.1), np.cos(0.1), 0], [0, 0, 1]])
OBLIQUE = tuple((np.array([[0.0, 0, -1], [1, 0, 0], [0, -1, 0]]) @ _ROT).ravel())
# The instant-test model made narrower (the mask head on 256 channels is most of its
# CPU time), with detections from random weights: their scores are about 1 / 4.
TINY_OPTS = [
    "MODEL.FPN.OUT_CHANNELS", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 64,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 256,
    "INPUT.MIN_SIZE_TEST", 64,
    "INPUT.MAX_SIZE_TEST", 128,
    "TEST.DETECTIONS_PER_IMAGE", 5,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.05,
    "BRAINSEG.POSTPROCESS.SCORE_THRESH", 0.05,
]  # fmt: skip
#: Models answering with instances only (the oracle, hand-made outputs).
INSTANCES = ("BRAINSEG.MASK_SOURCE", "instances")


def make_cfg(*opts):
    cfg = get_brainseg_cfg()
    cfg.merge_from_file(str(INSTANT_CFG), allow_unsafe=False)
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    return cfg


def geometry_of(image: sitk.Image) -> tuple:
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def reheader(image: sitk.Image, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE) -> sitk.Image:
    out = sitk.Image(image)
    out.SetSpacing(spacing)
    out.SetOrigin(origin)
    out.SetDirection(direction)
    return out


def convert_one(cases_dir: Path, out: Path, **options) -> Path:
    """Convert every case into the train split, keeping every slice and component."""
    opts = ConvertOptions(split=(1.0, 0.0, 0.0), empty_ratio=1.0, min_area=0, **options)
    convert_dataset(find_brats_cases(cases_dir), out, opts, progress=False)
    return out


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 3 mm phantom case re-headered oblique + anisotropic, and a 6-slice crop of it.

    Returns:
        namespace with ``case_dir`` (oblique BraTS case), ``dataset(target, axis)``
        (its conversion, cached), ``tiny_dir`` (BraTS case folder, 6 axial slices,
        LPS) and ``tiny_info`` (dataset.json for it).
    """
    base = tmp_path_factory.mktemp("predict")
    # The first seed that draws a case with all of labels 1, 2, 4.
    cases = (generate_case(seed, spacing=3.0, p_empty=0.0) for seed in range(1, 50))
    case = next(
        c for c in cases if set(np.unique(sitk.GetArrayViewFromImage(c.seg))) == {0, 1, 2, 4}
    )
    oblique = PhantomCase(
        images={k: reheader(v) for k, v in case.images.items()},
        seg=reheader(case.seg),
        has_tumour=case.has_tumour,
        kind=case.kind,
        anatomy=reheader(case.anatomy),
    )
    case_dir = write_case(oblique, base / "cases", "Obl_001")
    z = sitk.GetArrayViewFromImage(case.seg).reshape(case.seg.GetSize()[2], -1).any(axis=1)
    mid = int(np.flatnonzero(z).mean())
    tiny = PhantomCase(
        images={k: v[:, :, mid - 3 : mid + 3] for k, v in case.images.items()},
        seg=case.seg[:, :, mid - 3 : mid + 3],
        has_tumour=True,
        kind=case.kind,
        anatomy=case.anatomy[:, :, mid - 3 : mid + 3],
    )
    tiny_dir = write_case(tiny, base / "tiny", "Tiny_001")
    datasets: dict[tuple[str, str, int, str], Path] = {}

    def dataset(
        target: str = "labels", axis: str = "axial", context: int = 0, norm: str = "percentile"
    ) -> Path:
        key = (target, axis, context, norm)
        if key not in datasets:
            out = base / "datasets" / f"obl_{target}_{axis}_{context}_{norm}"
            datasets[key] = convert_one(
                case_dir.parent, out, target=target, slice_axis=axis, context_slices=context,
                normalization=norm,
            )  # fmt: skip
        return datasets[key]

    tiny_info = json.loads((dataset() / "dataset.json").read_text())
    return SimpleNamespace(
        case_dir=case_dir, dataset=dataset, tiny_dir=tiny_dir, tiny_info=tiny_info
    )


class OracleModel:
    """A perfect model: per slice, the converter's own annotations as instances.

    Reads ``instances_train.json`` of a converted dataset (converted with
    ``min_area=0`` so that no component is dropped) and answers each input dict by
    its ``slice_index``. Records every input it receives.
    """

    def __init__(self, dataset: Path):
        coco = json.loads((dataset / "annotations" / "instances_train.json").read_text())
        slice_of = {im["id"]: im["slice_index"] for im in coco["images"]}
        self.annotations: dict[int, list[dict]] = {s: [] for s in slice_of.values()}
        for ann in coco["annotations"]:
            self.annotations[slice_of[ann["image_id"]]].append(ann)
        self.inputs: list[dict] = []

    def __call__(self, inputs: list[dict]) -> list[dict]:
        outputs = []
        for x in inputs:
            self.inputs.append(x)
            anns = self.annotations.get(x["slice_index"], [])
            h, w = x["height"], x["width"]
            masks = np.zeros((len(anns), h, w), dtype=bool)
            for i, ann in enumerate(anns):
                masks[i] = mask_util.decode(ann["segmentation"]).astype(bool)
            inst = Instances((h, w))
            inst.pred_masks = torch.from_numpy(masks)
            inst.scores = torch.ones(len(anns))
            inst.pred_classes = torch.tensor([a["category_id"] - 1 for a in anns], dtype=torch.long)
            outputs.append({"instances": inst})
        return outputs


def _channel_paths(case_dir: Path) -> dict[str, str]:
    return dict(find_brats_cases(case_dir)[0].channels)


INPUT_KINDS = {
    "case_folder": lambda d, channels: d,
    "mapping_of_paths": lambda d, channels: _channel_paths(d),
    "mapping_of_images": lambda d, channels: {
        c: read_image(p) for c, p in _channel_paths(d).items()
    },
    "sequence_of_paths": lambda d, channels: [_channel_paths(d)[c] for c in channels],
}


@pytest.mark.parametrize("kind", sorted(INPUT_KINDS))
@pytest.mark.parametrize(("target", "axis"), [("labels", "axial"), ("regions", "coronal")])
def test_oracle_round_trip_is_exact_on_oblique_anisotropic_case(phantom, kind, target, axis):
    dataset = phantom.dataset(target, axis)
    predictor = VolumePredictor(
        # Post-processing off: a perfect model must round-trip exactly.
        make_cfg("BRAINSEG.POSTPROCESS.ENABLED", False, *INSTANCES),
        dataset_info=dataset / "dataset.json",
        model=OracleModel(dataset),
    )
    images = INPUT_KINDS[kind](phantom.case_dir, predictor.channels)
    pred = predictor.predict(images)

    assert isinstance(pred, VolumePrediction)
    flair = sitk.ReadImage(str(phantom.case_dir / "Obl_001_flair.nii.gz"))
    assert flair.GetDirection() != tuple(np.eye(3).ravel())
    assert geometry_of(pred.label_image) == geometry_of(flair)
    assert pred.label_image.GetPixelID() == sitk.sitkUInt8
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(phantom.case_dir / "Obl_001_seg.nii.gz")))
    assert set(np.unique(seg)) == {0, 1, 2, 4}  # BraTS 2021 raw labels
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pred.label_image), seg)
    assert pred.masks_raw.shape == (3, *pred.preprocessed.geometry.shape)
    np.testing.assert_array_equal(pred.masks_post, pred.masks_raw)  # default: no cleaning
    assert pred.category_names == (
        ["necrotic", "edema", "enhancing"] if target == "labels" else ["WT", "TC", "ET"]
    )


@pytest.mark.parametrize("context, norm", [(0, "percentile"), (1, "percentile"), (0, "zscore")])
def test_model_sees_what_the_test_mapper_makes_of_the_converted_pngs(phantom, context, norm):
    dataset = phantom.dataset(context=context, norm=norm)
    channels = 4 * (2 * context + 1)  # 2.5D: neighbouring slices as extra channels
    cfg = make_cfg(*INSTANCES, "BRAINSEG.INPUT.CONTEXT_SLICES", context,
                   "MODEL.PIXEL_MEAN", [40.0] * channels, "MODEL.PIXEL_STD", [50.0] * channels)
    oracle = OracleModel(dataset)
    pred = VolumePredictor(cfg, dataset_info=dataset / "dataset.json", model=oracle).predict(
        phantom.case_dir
    )
    seen = {x["slice_index"]: x for x in oracle.inputs}
    assert len(seen) == len(oracle.inputs)  # each slice once
    dicts = load_brainseg_json(
        dataset / "annotations" / "instances_train.json", dataset / "images" / "train"
    )
    # Brain slices only, exactly those the converter kept; the others are skipped.
    brain = np.flatnonzero(pred.preprocessed.brain.any(axis=(1, 2)))
    assert sorted(seen) == sorted(d["slice_index"] for d in dicts) == brain.tolist()
    assert len(seen) < pred.preprocessed.geometry.num_slices
    mapper = BrainSegDatasetMapper(cfg, is_train=False)
    for d in dicts:
        expected = mapper(d)
        got = seen[d["slice_index"]]
        assert got["image"].dtype == torch.uint8 and got["image"].shape[0] == channels
        assert torch.equal(got["image"], expected["image"]), d["slice_index"]
        assert (got["height"], got["width"]) == (d["height"], d["width"])
    assert tuple(got["image"].shape[1:]) != (d["height"], d["width"])  # the resize ran


def test_dataset_info_defaults_to_registered_training_dataset(phantom):
    dataset = phantom.dataset()
    (name,) = register_brainseg_dataset(dataset, name="predict_obl")
    cfg = make_cfg("DATASETS.TRAIN", (name,))
    predictor = VolumePredictor(cfg, model=OracleModel(dataset))
    assert predictor.dataset_info.to_json() == json.loads((dataset / "dataset.json").read_text())
    assert predictor.channels == ["flair", "t1", "t1ce", "t2"]
    with pytest.raises(ValueError, match="not registered.*--dataset-info"):
        VolumePredictor(make_cfg("DATASETS.TRAIN", ("nowhere_train",)), model=OracleModel(dataset))


def test_missing_channel_names_case_and_channel(phantom, tmp_path):
    case_dir = shutil.copytree(phantom.tiny_dir, tmp_path / "Tiny_001")
    (case_dir / "Tiny_001_t1ce.nii.gz").unlink()
    predictor = VolumePredictor(make_cfg(), dataset_info=phantom.tiny_info, model=lambda x: [])
    with pytest.raises(VolumeError, match=r"case Tiny_001: missing channel 't1ce'"):
        predictor.predict(case_dir)
    with pytest.raises(ValueError, match=r"expected 4 images in channel order"):
        predictor.predict([str(case_dir / "Tiny_001_flair.nii.gz")])


class _ScoreRecorder:
    def __init__(self, model):
        self.model, self.scores = model, {}

    def __call__(self, inputs):
        outputs = self.model(inputs)
        for x, out in zip(inputs, outputs):
            self.scores[x["slice_index"]] = out["instances"].scores.clone()
        return outputs


@pytest.fixture(scope="module")
def tiny_model():
    cfg = make_cfg(*TINY_OPTS)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    return cfg, model


def _predict(cfg, model, info, images, batch_size):
    recorder = _ScoreRecorder(model)
    predictor = VolumePredictor(cfg, dataset_info=info, model=recorder, batch_size=batch_size)
    return predictor.predict(images), recorder.scores


def test_batch_size_does_not_change_predictions(phantom, tiny_model):
    """Batch 1 vs 4 (6 slices: batches of 4 and 2) with native CPU kernels: bitwise equal.

    oneDNN (PyTorch's default CPU convolution backend) picks kernels by batch
    size, which moves backbone features by ~1e-5 between batch 1 and 4;
    with ``torch.backends.mkldnn`` off, convolutions are computed image by image
    and the whole output is bitwise identical, which is what this test checks:
    batching, padding and slice bookkeeping add no difference of their own.
    """
    cfg, model = tiny_model
    with torch.backends.mkldnn.flags(enabled=False):
        one, scores_one = _predict(cfg, model, phantom.tiny_info, phantom.tiny_dir, 1)
        four, scores_four = _predict(cfg, model, phantom.tiny_info, phantom.tiny_dir, 4)
    assert one.masks_raw.any()  # the random model does detect things
    assert len(scores_one) == 6
    np.testing.assert_array_equal(one.masks_raw, four.masks_raw)
    np.testing.assert_array_equal(one.masks_post, four.masks_post)
    for s, scores in scores_one.items():
        assert torch.equal(scores, scores_four[s]), s


def test_batch_size_with_default_cpu_backend(phantom, tiny_model):
    """Same with oneDNN on (the default): scores agree to float32 rounding, masks match.

    Masks are compared with a tolerance of 1e-4 of the voxels because a mask pixel
    whose logit sits within rounding of the 0.5 threshold may flip (see above);
    on the CPU this was written on, none did.
    """
    cfg, model = tiny_model
    one, scores_one = _predict(cfg, model, phantom.tiny_info, phantom.tiny_dir, 1)
    four, scores_four = _predict(cfg, model, phantom.tiny_info, phantom.tiny_dir, 4)
    assert np.mean(one.masks_raw != four.masks_raw) <= 1e-4
    for s, scores in scores_one.items():
        torch.testing.assert_close(scores, scores_four[s], rtol=0, atol=1e-4)


class _ThreadRecorder(_ScoreRecorder):
    def __init__(self, model):
        super().__init__(model)
        self.calls: list[tuple[int, int]] = []  # (thread id, torch threads) per call

    def __call__(self, inputs):
        self.calls.append((threading.get_ident(), torch.get_num_threads()))
        return super().__call__(inputs)


def test_concurrent_batches_do_not_change_predictions(phantom, tiny_model):
    """Batches run at once on pool threads, each on one torch thread: bitwise equal.

    The reference runs the batches one after another on one torch thread too, so
    only the concurrency differs (native kernels, as in the batch-size test).
    Torch's thread count is restored afterwards.
    """
    cfg, model = tiny_model
    threads = torch.get_num_threads()

    def run(concurrent):
        recorder = _ThreadRecorder(model)
        predictor = VolumePredictor(
            cfg, dataset_info=phantom.tiny_info, model=recorder, batch_size=2,
            concurrent_batches=concurrent,
        )  # fmt: skip
        return predictor.predict(phantom.tiny_dir), recorder

    with torch.backends.mkldnn.flags(enabled=False):
        with library_threads(torch.get_num_threads, torch.set_num_threads, 1):
            one, one_rec = run(1)
        two, two_rec = run(2)
    assert torch.get_num_threads() == threads
    main_thread = threading.get_ident()
    assert one_rec.calls == [(main_thread, 1)] * 3  # 6 slices, batches of 2
    assert len(two_rec.calls) == 3
    assert all(t != main_thread and n == 1 for t, n in two_rec.calls)
    assert one.masks_raw.any()
    np.testing.assert_array_equal(one.masks_raw, two.masks_raw)
    np.testing.assert_array_equal(one.masks_post, two.masks_post)
    for s, scores in one_rec.scores.items():
        assert torch.equal(scores, two_rec.scores[s]), s


def test_concurrent_batches_are_cpu_only_and_checked(phantom, tiny_model):
    cfg, model = tiny_model
    cuda_cfg = make_cfg(*TINY_OPTS, "MODEL.DEVICE", "cuda")
    recorder = _ThreadRecorder(model)
    predictor = VolumePredictor(
        cuda_cfg, dataset_info=phantom.tiny_info, model=recorder, batch_size=2,
        concurrent_batches=2,
    )  # fmt: skip
    pre = preprocess_volume(
        {ch: read_image(p) for ch, p in _channel_paths(phantom.tiny_dir).items()},
        predictor.options,
    )
    predictor.predict_masks(pre)  # the callable runs on the CPU whatever the cfg says
    assert {t for t, _ in recorder.calls} == {threading.get_ident()}
    with pytest.raises(ValueError, match="concurrent_batches must be >= 0, got -1"):
        VolumePredictor(cfg, dataset_info=phantom.tiny_info, model=model, concurrent_batches=-1)


def test_score_threshold_pushdown_keeps_exactly_the_same_detections(phantom, tiny_model):
    """The predictor lets the model drop low scores itself: same masks, less mask-head work.

    Reference: the model at its config's ``SCORE_THRESH_TEST`` (0.05), then every
    instance scoring ``>= t`` is kept, as ``DefaultPredictor`` users would do.
    ``t`` is the median score, so the cut matters on both sides. Both run on one
    torch thread: BLAS results may differ in the last bits between thread counts,
    which can flip a mask pixel at the threshold (concurrency has its own test).
    """
    cfg, model = tiny_model
    base = VolumePredictor(cfg, dataset_info=phantom.tiny_info, model=model, batch_size=3)
    pre = preprocess_volume(
        {ch: read_image(p) for ch, p in _channel_paths(phantom.tiny_dir).items()}, base.options
    )
    inputs = base.model_inputs(pre, base.brain_slices(pre))
    seen: list[int] = []
    hook = model.roi_heads.mask_head.register_forward_hook(
        lambda mod, args, out: seen.append(sum(len(i) for i in args[1]))
    )
    try:
        with (
            torch.backends.mkldnn.flags(enabled=False),
            torch.inference_mode(),
            library_threads(torch.get_num_threads, torch.set_num_threads, 1),
        ):
            reference = [model(inputs[i : i + 3]) for i in range(0, len(inputs), 3)]
            reference = [out["instances"] for batch in reference for out in batch]
            reference_work = sum(seen)
            scores = torch.cat([inst.scores for inst in reference])
            t = float(scores.median())
            assert (scores < t).any() and (scores >= t).any()
            options = ["BRAINSEG.POSTPROCESS.SCORE_THRESH", t, *INSTANCES]
            predictor = VolumePredictor(
                make_cfg(*TINY_OPTS, *options),
                dataset_info=phantom.tiny_info,
                model=model,
                batch_size=3,
                concurrent_batches=1,
            )
            seen.clear()
            masks = predictor.predict_masks(pre)
    finally:
        hook.remove()
    assert model.roi_heads.box_predictor.test_score_thresh == 0.05  # restored
    assert 0 < sum(seen) < reference_work  # masks computed for the kept detections only
    expected = np.zeros_like(masks)
    for x, inst in zip(inputs, reference):
        keep = inst.scores >= t
        for c, m in zip(inst.pred_classes[keep].numpy(), inst.pred_masks[keep].numpy()):
            expected[c, x["slice_index"]] |= m
    assert expected.any()
    np.testing.assert_array_equal(masks, expected)


def test_component_score_threshold_in_volume_prediction(phantom):
    """Score hysteresis reaches predict(): a lone low-score lesion is raw-only."""

    def model(inputs):
        outputs = []
        for x in inputs:
            h, w = x["height"], x["width"]
            masks = np.zeros((2, h, w), bool)
            masks[0, 2:6, 2:6] = True  # confident lesion
            masks[1, h - 6 : h - 2, w - 6 : w - 2] = True  # lone low-score one
            inst = Instances((h, w))
            inst.pred_masks = torch.from_numpy(masks)
            inst.scores = torch.tensor([0.95, 0.4])
            inst.pred_classes = torch.tensor([1, 1])
            outputs.append({"instances": inst})
        return outputs

    opts = ["BRAINSEG.POSTPROCESS.SCORE_THRESH", 0.3,
            "BRAINSEG.POSTPROCESS.COMPONENT_SCORE_THRESH", (0.9,),
            "BRAINSEG.POSTPROCESS.MIN_VOLUME_3D", (0,), *INSTANCES]  # fmt: skip
    predictor = VolumePredictor(make_cfg(*opts), dataset_info=phantom.tiny_info, model=model)
    pred = predictor.predict(phantom.tiny_dir)
    raw, post = pred.masks_raw[1], pred.masks_post[1]
    assert raw[:, 2:6, 2:6].all() and raw[:, -6:-2, -6:-2].any()
    assert post[:, 2:6, 2:6].all() and not post[:, -6:-2, -6:-2].any()


def test_dense_head_probabilities_make_the_masks_with_hysteresis(phantom):
    """With MASK_SOURCE semantic, masks are sem_seg >= SCORE_THRESH; seeds likewise."""

    def model(inputs):
        outputs = []
        for x in inputs:
            h, w = x["height"], x["width"]
            probs = torch.zeros((3, h, w))
            probs[1, 2:6, 2:6] = 0.95  # confident
            probs[1, h - 6 : h - 2, w - 6 : w - 2] = 0.6  # lone, less sure
            probs[2, 3:5, 3:5] = 0.4  # below the threshold
            outputs.append({"sem_seg": probs, "instances": Instances((h, w))})
        return outputs

    opts = ["BRAINSEG.POSTPROCESS.SCORE_THRESH", 0.5,
            "BRAINSEG.POSTPROCESS.COMPONENT_SCORE_THRESH", (0.9,),
            "BRAINSEG.POSTPROCESS.MIN_VOLUME_3D", (0,)]  # fmt: skip
    predictor = VolumePredictor(make_cfg(*opts), dataset_info=phantom.tiny_info, model=model)
    pred = predictor.predict(phantom.tiny_dir)
    brain = np.flatnonzero(pred.preprocessed.brain.any(axis=(1, 2)))  # slices run
    raw, post = pred.masks_raw[:, brain], pred.masks_post[:, brain]
    assert raw[1][:, 2:6, 2:6].all() and raw[1][:, -6:-2, -6:-2].all()
    assert not raw[2].any() and not raw[0].any()
    assert post[1][:, 2:6, 2:6].all() and not post[1][:, -6:-2, -6:-2].any()
    with pytest.raises(ValueError, match="MASK_SOURCE instances"):
        VolumePredictor(
            make_cfg(), dataset_info=phantom.tiny_info,
            model=lambda xs: [{"instances": Instances((x["height"], x["width"]))} for x in xs],
        ).predict(phantom.tiny_dir)  # fmt: skip


def _cli_args(input_dir, output, info, weights, *extra):
    return [
        "--config-file", str(INSTANT_CFG),
        "--input", str(input_dir),
        "--dataset-info", str(info),
        "--output", str(output),
        *extra,
        "MODEL.WEIGHTS", str(weights),
        *[str(v) for v in TINY_OPTS],
    ]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_weights(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(tiny_model[1], save_dir=str(folder)).save("model")
    return folder / "model.pth"


def test_cli_predicts_a_folder_of_cases(phantom, tiny_model, tiny_weights, tmp_path, capsys):
    cases = tmp_path / "cases"
    for case_id in ("Tiny_001", "Tiny_002"):
        folder = cases / "HGG" / case_id
        folder.mkdir(parents=True)
        for src in phantom.tiny_dir.iterdir():
            shutil.copy(src, folder / src.name.replace("Tiny_001", case_id))
    out = tmp_path / "out"
    info = phantom.dataset() / "dataset.json"
    assert main(_cli_args(cases, out, info, tiny_weights, "--batch-size", "2")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Tiny_001_pred.nii.gz", "Tiny_002_pred.nii.gz"]
    expected, _ = _predict(*tiny_model, phantom.tiny_info, phantom.tiny_dir, 2)
    written = sitk.ReadImage(str(out / "Tiny_001_pred.nii.gz"))
    assert geometry_of(written) == geometry_of(read_image(phantom.tiny_dir / "Tiny_001_t1.nii.gz"))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected.label_image)
    )
    assert sitk.GetArrayFromImage(written).any()


def test_cli_refuses_to_overwrite(phantom, tiny_weights, tmp_path, capsys):
    out = tmp_path / "pred.nii.gz"
    out.write_bytes(b"keep me")
    info = phantom.dataset() / "dataset.json"
    assert main(_cli_args(phantom.tiny_dir, out, info, tiny_weights)) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(_cli_args(phantom.tiny_dir, out, info, tiny_weights, "--overwrite", "--raw")) == 0
    image = sitk.ReadImage(str(out))
    assert geometry_of(image) == geometry_of(read_image(phantom.tiny_dir / "Tiny_001_t2.nii.gz"))
    assert [p.name for p in tmp_path.iterdir()] == ["pred.nii.gz"]  # no temporary left


def test_cli_missing_channel_exits_2_without_output(phantom, tiny_weights, tmp_path, capsys):
    case_dir = shutil.copytree(phantom.tiny_dir, tmp_path / "in" / "Tiny_001")
    (case_dir / "Tiny_001_flair.nii.gz").unlink()
    out = tmp_path / "out"
    info = phantom.dataset() / "dataset.json"
    assert main(_cli_args(case_dir, out, info, tiny_weights)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "case Tiny_001: missing channel 'flair'" in err
    assert not out.exists()


def test_cli_file_output_needs_a_single_case(phantom, tiny_weights, tmp_path, capsys):
    info = phantom.dataset() / "dataset.json"
    two = tmp_path / "two"
    for case_id in ("A_1", "B_2"):
        (two / case_id).mkdir(parents=True)
        shutil.copy(
            phantom.tiny_dir / "Tiny_001_flair.nii.gz", two / case_id / f"{case_id}_flair.nii.gz"
        )
    assert main(_cli_args(two, tmp_path / "x.nii.gz", info, tiny_weights)) == 2
    assert "holds 2 cases" in capsys.readouterr().err
    # Written as NIfTI only: another image suffix is not taken for a folder name.
    assert main(_cli_args(phantom.tiny_dir, tmp_path / "one.mha", info, tiny_weights)) == 2
    assert "predictions are written as NIfTI" in capsys.readouterr().err
    assert not (tmp_path / "one.mha").exists()


def test_dense_head_masks_skip_the_instance_branch(phantom, tiny_model, monkeypatch):
    """With ``MASK_SOURCE semantic`` the RPN never runs, and the masks are the same."""
    cfg, model = tiny_model
    assert cfg.BRAINSEG.MASK_SOURCE == "semantic"
    recorded = _ScoreRecorder(model)  # an unknown wrapper: the instances still run
    full = VolumePredictor(cfg, dataset_info=phantom.tiny_info, model=recorded)
    expected = full.predict(phantom.tiny_dir)
    assert recorded.scores  # the instance branch ran
    calls = []
    forward = model.proposal_generator.forward
    monkeypatch.setattr(
        model.proposal_generator, "forward", lambda *a: calls.append(1) or forward(*a)
    )
    got = VolumePredictor(cfg, dataset_info=phantom.tiny_info, model=model).predict(
        phantom.tiny_dir
    )
    assert not calls and model.infer_instances
    np.testing.assert_array_equal(got.masks_raw, expected.masks_raw)
    np.testing.assert_array_equal(got.masks_post, expected.masks_post)


def _boxes_model(boxes):
    """A dense-head stand-in: every slice gets probability 0.95 in each category's box
    (``category -> (rows, cols)`` slices), 0 elsewhere."""

    def model(inputs):
        outputs = []
        for x in inputs:
            h, w = x["height"], x["width"]
            probs = torch.zeros((3, h, w))
            for category, box in boxes.items():
                probs[(category, *box)] = 0.95
            outputs.append({"sem_seg": probs, "instances": Instances((h, w))})
        return outputs

    return model


def _predict_in_millilitres(phantom, model, key, values):
    """The tiny phantom case predicted with ``BRAINSEG.POSTPROCESS.<key>`` set to
    ``values``, and the case's voxel volume in ml."""
    flair = sitk.ReadImage(str(next(Path(phantom.tiny_dir).glob("*_flair.nii.gz"))))
    opts = ["BRAINSEG.POSTPROCESS.SCORE_THRESH", 0.5, f"BRAINSEG.POSTPROCESS.{key}", values]
    predictor = VolumePredictor(make_cfg(*opts), dataset_info=phantom.tiny_info, model=model)
    return predictor.predict(phantom.tiny_dir), float(np.prod(flair.GetSpacing())) / 1000.0


def test_least_total_enhancing_volume_is_measured_in_the_input_millilitres(phantom):
    """MIN_TOTAL_ML uses the case's own voxel size: just over the call's volume
    moves the enhancing tumour into the core, just under keeps it."""
    # WT, TC, and ET of 4 pixels a slice.
    model = _boxes_model({0: (slice(2, 8), slice(2, 8)), 1: (slice(2, 6), slice(2, 6)),
                          2: (slice(3, 5), slice(3, 5))})  # fmt: skip

    def predict(total_ml):
        return _predict_in_millilitres(phantom, model, "MIN_TOTAL_ML", (0.0, 0.0, total_ml))

    first, voxel_ml = predict(0.0)
    et_ml = int(first.masks_raw[2].sum()) * voxel_ml
    assert et_ml > 0
    (kept, _), (moved, _) = predict(et_ml * 0.99), predict(et_ml * 1.01)
    assert kept.masks_post[2].sum() * voxel_ml == pytest.approx(et_ml)
    assert not moved.masks_post[2].any()
    np.testing.assert_array_equal(moved.masks_post[1], kept.masks_post[1])  # the core stays
    labels = sitk.GetArrayFromImage(moved.label_image)
    assert 4 not in np.unique(labels) and 1 in np.unique(labels)  # enhancing -> core label


def test_least_component_volume_is_measured_in_the_input_millilitres(phantom):
    """MIN_VOLUME_ML uses the case's own voxel size: a minimum just over the lesion's
    volume removes it, just under keeps it."""
    model = _boxes_model({0: (slice(2, 8), slice(2, 8))})  # WT on every brain slice: one lesion

    def predict(min_ml):
        return _predict_in_millilitres(phantom, model, "MIN_VOLUME_ML", (min_ml, 0.0, 0.0))

    first, voxel_ml = predict(0.0)
    wt_ml = int(first.masks_raw[0].sum()) * voxel_ml
    assert wt_ml > 0
    (kept, _), (removed, _) = predict(wt_ml * 0.99), predict(wt_ml * 1.01)
    assert kept.masks_post[0].sum() * voxel_ml == pytest.approx(wt_ml)
    assert not removed.masks_post.any()


@pytest.mark.parametrize(
    ("key", "values", "message"),
    [
        ("MIN_VOLUME_ML", (0.1, 0.2), "min_volume_ml has 2 values"),
        ("MIN_TOTAL_ML", (0.0, 1.0), "min_total_ml has 2 values"),
        ("MIN_VOLUME_3D", (1, 2), "min_volume_3d has 2 values"),
        ("COMPONENT_SCORE_THRESH", (0.9, 0.8), "component_score_threshold has 2 values"),
        ("CATEGORY_SCORE_THRESH", (0.5,), "category_score_threshold has 1 values"),
    ],
)
def test_a_per_category_key_of_the_wrong_length_fails_before_any_case(phantom, key, values,
                                                                      message):
    def model(inputs):
        raise AssertionError("the model must not run")

    cfg = make_cfg(f"BRAINSEG.POSTPROCESS.{key}", values)
    with pytest.raises(ValueError, match=rf"^{message}; give .*\(3\)$"):
        VolumePredictor(cfg, dataset_info=phantom.tiny_info, model=model)


def test_a_field_of_view_unlike_the_training_slices_is_warned(phantom, caplog):
    """Slices are resized to INPUT.MIN_SIZE_TEST pixels on their shorter side, so a scan
    cropped to half the training field of view shows the model its anatomy twice as large."""
    from brainseg_d2.structures import SliceGeometry

    # The converter records the span of the training slices' shorter side.
    volumes = json.loads((phantom.dataset() / "volumes.json").read_text())["volumes"]
    (volume,) = volumes.values()
    (split,) = [k for k, v in phantom.tiny_info["counts"].items() if v["volumes"]]
    side = SliceGeometry.from_json(volume["geometry"]).shorter_side_mm
    assert phantom.tiny_info["counts"][split]["shorter_side_mm"] == [side, side]
    # A model trained on slices like the tiny case's (80 pixels of 3 mm).
    info = {**phantom.tiny_info, "counts": {"train": {"shorter_side_mm": [240.0, 240.0]}}}
    predictor = VolumePredictor(make_cfg(), dataset_info=info,
                                model=_boxes_model({0: (slice(2, 8), slice(2, 8))}))  # fmt: skip
    logger = "brainseg_d2.inference.volume_predictor"
    with caplog.at_level("WARNING", logger=logger):
        predictor.predict(phantom.tiny_dir)
    assert "field of view" not in caplog.text
    half = {c: read_image(p)[20:60, 20:60, :] for c, p in _channel_paths(phantom.tiny_dir).items()}
    with caplog.at_level("WARNING", logger=logger):
        predictor.predict(half)
    assert ("its slices span 120 mm on the shorter side, the training slices 240-240 mm, so "
            "the model sees its anatomy 2.00 times as large as it learned") in caplog.text
