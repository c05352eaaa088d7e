"""Several weights files as one model: the dense heads' probabilities averaged."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from brainseg_d2.cli.predict import main
from brainseg_d2.config import setup_cfg
from brainseg_d2.data.preprocess import preprocess_volume
from brainseg_d2.data.sources import find_brats_cases
from brainseg_d2.inference import VolumePredictor
from brainseg_d2.inference.ensemble import ModelEnsemble
from brainseg_d2.modeling import dense_head_only


@pytest.fixture(scope="module")
def two_models(weights_files, tmp_path_factory):
    """The ``good`` weights and a second model of the same config drawn with another seed."""
    cfg = setup_cfg(weights_files["config"], [*weights_files["opts"], "MODEL.WEIGHTS", ""])
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("second")
    DetectionCheckpointer(build_model(cfg), save_dir=str(folder)).save("other")
    return cfg, [weights_files["good"], folder / "other.pth"]


def _predictor(phantom_dataset, cfg, weights=None, **kwargs):
    info = phantom_dataset["dataset"] / "dataset.json"
    return VolumePredictor(cfg, dataset_info=info, weights=weights, **kwargs)


def test_the_ensemble_answers_the_mean_of_its_members(phantom_dataset, tiny_cases, two_models):
    cfg, weights = two_models
    ensemble = _predictor(phantom_dataset, cfg, weights)
    assert isinstance(ensemble.model, ModelEnsemble) and len(ensemble.model.members) == 2
    singles = [_predictor(phantom_dataset, cfg, [w]).model for w in weights]
    case = find_brats_cases(tiny_cases)[0]
    pre = preprocess_volume(case.read_channels(ensemble.channels), ensemble.options)
    inputs = ensemble.model_inputs(pre, ensemble.brain_slices(pre))
    with torch.inference_mode():
        got = ensemble.model(inputs)
        probs = []
        for model in singles:
            with dense_head_only(model):
                probs.append([out["sem_seg"] for out in model(inputs)])
    assert len(got) == len(inputs) and set(got[0]) == {"sem_seg"}
    for i, out in enumerate(got):
        torch.testing.assert_close(out["sem_seg"], (probs[0][i] + probs[1][i]) / 2)
    assert not torch.equal(probs[0][0], probs[1][0])  # two different models


def test_a_model_twice_predicts_what_it_predicts_alone(phantom_dataset, tiny_cases, two_models):
    cfg, weights = two_models
    case = find_brats_cases(tiny_cases)[0]
    alone = _predictor(phantom_dataset, cfg, weights[:1]).predict(case)
    twice = _predictor(phantom_dataset, cfg, [weights[0]] * 2).predict(case)
    np.testing.assert_array_equal(twice.masks_raw, alone.masks_raw)
    assert alone.masks_raw.any()
    pair = _predictor(phantom_dataset, cfg, weights).predict(case)
    assert not np.array_equal(pair.masks_raw, alone.masks_raw)


def _args(weights_files, phantom_dataset, input_dir, output, *extra):
    return [
        "--config-file", weights_files["config"],
        "--input", str(input_dir),
        "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json"),
        "--output", str(output),
        "--no-progress",
        *map(str, extra),
    ]  # fmt: skip


def test_cli_weights_make_an_ensemble(weights_files, phantom_dataset, tiny_cases, two_models,
                                      tmp_path, capsys):  # fmt: skip
    cfg, weights = two_models
    out = tmp_path / "out"
    # The config overrides after the files are not taken for files.
    args = _args(weights_files, phantom_dataset, tiny_cases, out, "--weights", *weights,
                 *weights_files["opts"], "MODEL.DEVICE", "cpu")  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    expected = _predictor(phantom_dataset, cfg, weights).predict(find_brats_cases(tiny_cases)[1])
    written = sitk.ReadImage(str(out / "Tiny_B_pred.nii.gz"))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected.label_image)
    )


@pytest.mark.parametrize(
    "extra, expected",
    [
        (("MODEL.WEIGHTS", "{good}"), "weights given twice: pass --weights or MODEL.WEIGHTS"),
        (("BRAINSEG.MASK_SOURCE", "instances"), "it needs BRAINSEG.MASK_SOURCE semantic"),
        ((), "--weights {missing} does not exist"),
        (("folder",), "--weights {folder} is a folder, not a checkpoint"),
        (("none",), "--weights needs a weights file before the config overrides"),
    ],
    ids=["twice", "instances", "missing", "folder", "none"],
)
def test_cli_bad_ensembles_are_one_line_and_write_nothing(
    weights_files, phantom_dataset, tiny_cases, tmp_path, capsys, extra, expected
):
    names = {"good": weights_files["good"], "missing": tmp_path / "nowhere.pth",
             "folder": tmp_path}  # fmt: skip
    files = [weights_files["good"], names["missing"] if not extra else weights_files["good"]]
    if extra in (("folder",), ("none",)):
        files, extra = ([tmp_path] if extra == ("folder",) else []), ()
    out = tmp_path / "out"
    extra = [e.format(**names) for e in extra]
    args = _args(weights_files, phantom_dataset, tiny_cases, out, "--weights", *files,
                 *weights_files["opts"], *extra)  # fmt: skip
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert expected.format(**names) in line
    assert not out.exists()


def test_cli_a_member_that_does_not_fit_is_named(weights_files, phantom_dataset, tiny_cases,
                                                 tmp_path, capsys):  # fmt: skip
    out = tmp_path / "out"
    args = _args(weights_files, phantom_dataset, tiny_cases, out, "--weights",
                 weights_files["good"], weights_files["five"], *weights_files["opts"])  # fmt: skip
    assert main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"weights {weights_files['five']}" in line and "do not fit the model" in line
    assert not out.exists()


@pytest.fixture
def own_log_handlers():
    """Remove the log handlers a tool adds (Detectron2's ``setup_logger``, cached) on exit:
    they write to this test's captured streams, which later tests have closed."""
    import logging

    from detectron2.utils.logger import setup_logger

    loggers = [logging.getLogger(name) for name in ("brainseg_d2", "detectron2", "fvcore")]
    before = [list(logger.handlers) for logger in loggers]
    yield
    for logger, handlers in zip(loggers, before):
        logger.handlers[:] = handlers
    setup_logger.cache_clear()


def test_tuning_for_an_ensemble(weights_files, phantom_dataset, two_models, tmp_path,
                                monkeypatch, capsys, own_log_handlers):  # fmt: skip
    """A model twice is tuned as it is alone; two models are tuned on their mean."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "tune_postprocess.py"
    spec = importlib.util.spec_from_file_location("tune_postprocess_for_ensembles", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(phantom_dataset["root"]))
    _, (good, other) = two_models
    tables = {}
    for name, weights in {"alone": [good], "twice": [good, good], "pair": [good, other]}.items():
        out = tmp_path / f"{name}.yaml"
        argv = ["--config-file", weights_files["config"], "--dataset", "phantom_val",
                "--output", out, "--weights", *weights, *weights_files["opts"],
                "DATASETS.TEST", "()"]  # fmt: skip
        assert tool.main(list(map(str, argv))) == 0, capsys.readouterr().err
        lines = capsys.readouterr().out.splitlines()  # the rows of every stage, and the best
        tables[name] = [x for x in lines if x[:2] in ("* ", "  ") or x.startswith("best on")]
        assert len(tables[name]) > 3
        tuned = setup_cfg(str(out))
        assert tuned.MODEL.WEIGHTS == str(good)
        recorded = tuple(map(str, weights)) if len(weights) > 1 else ()  # one model: none
        assert tuned.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS == recorded
    assert tables["twice"] == tables["alone"]
    assert tables["pair"] != tables["alone"]
    # The tuned config predicts with the ensemble it was tuned for.
    predictor = _predictor(phantom_dataset, setup_cfg(str(tmp_path / "pair.yaml")))
    assert isinstance(predictor.model, ModelEnsemble) and len(predictor.model.members) == 2


def test_trailing_config_overrides_are_split_from_the_weights(tmp_path, monkeypatch):
    from brainseg_d2.utils.cli import split_trailing_opts

    monkeypatch.chdir(tmp_path)
    (tmp_path / "FOLD0.PTH").write_bytes(b"")  # a file, although it reads like a key
    words = ["a.pth", "FOLD0.PTH", "MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.1"]
    assert split_trailing_opts(words, ["X.Y", "1"]) == (
        ["a.pth", "FOLD0.PTH"],
        ["MODEL.DEVICE", "cpu", "SOLVER.BASE_LR", "0.1", "X.Y", "1"],
    )
    assert split_trailing_opts(["a.pth", "SEED", "3"], []) == (["a.pth"], ["SEED", "3"])
    assert split_trailing_opts(["a.pth"], []) == (["a.pth"], [])


def test_a_config_that_records_an_ensemble(weights_files, phantom_dataset, tiny_cases,
                                           two_models, tmp_path, capsys):  # fmt: skip
    """MODEL.WEIGHTS cannot silently lose to a recorded ensemble; --weights replaces it."""
    from brainseg_d2.inference.ensemble import ensemble_members, load_model

    cfg, (good, other) = two_models
    recorded = cfg.clone()
    recorded.defrost()
    recorded.MODEL.WEIGHTS = str(good)
    recorded.BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS = (str(good), str(other))
    config = tmp_path / "ensemble.yaml"
    config.write_text(recorded.dump())
    recorded.freeze()
    assert ensemble_members(recorded) == [str(good), str(other)]
    with pytest.raises(ValueError, match="gives no detections to draw"):
        load_model(recorded)  # demo/demo.py's slice pictures
    base = ["--config-file", config, "--input", tiny_cases, "--no-progress",
            "--dataset-info", phantom_dataset["dataset"] / "dataset.json"]  # fmt: skip
    # A MODEL.WEIGHTS override would be ignored by the ensemble: refused.
    assert (
        main([*map(str, base), "--output", str(tmp_path / "o1"), "MODEL.WEIGHTS", str(other)]) == 2
    )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"MODEL.WEIGHTS {other} is not the first of the config's ensemble" in line
    assert not (tmp_path / "o1").exists()
    # The config alone predicts with the ensemble; one --weights replaces it.
    case = find_brats_cases(tiny_cases)[0]
    for out, extra, weights in (("o2", [], [good, other]), ("o3", ["--weights", other], [other])):
        assert main([*map(str, base), "--output", str(tmp_path / out), *map(str, extra)]) == 0
        expected = _predictor(phantom_dataset, cfg, weights).predict(case).label_image
        written = sitk.ReadImage(str(tmp_path / out / f"{case.case_id}_pred.nii.gz"))
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected)
        )
    # tools/train_net.py trains and evaluates one model.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / "train_net.py"
    spec = importlib.util.spec_from_file_location("train_net_for_ensembles", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "eval"
    capsys.readouterr()  # the predictions' log lines, where an earlier test set up logging
    assert tool.cli(["--config-file", str(config), "--eval-only", "OUTPUT_DIR", str(out)]) == 2
    # (error lines only: a handler an earlier test left on a closed stream may add its own)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "records an ensemble of 2 models" in line and not out.exists()


def test_repeated_weights_add_up_and_a_missing_checkpoint_name_is_a_file(
    weights_files, phantom_dataset, tiny_cases, two_models, tmp_path, capsys
):
    _, (good, other) = two_models
    out = tmp_path / "out"
    args = _args(weights_files, phantom_dataset, tiny_cases, out, "--weights", good,
                 "--weights", other, *weights_files["opts"])  # fmt: skip
    assert main(args) == 0
    cfg = two_models[0]
    expected = _predictor(phantom_dataset, cfg, [good, other]).predict(
        find_brats_cases(tiny_cases)[0]
    )
    written = sitk.ReadImage(str(out / "Tiny_A_pred.nii.gz"))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(expected.label_image)
    )
    args = _args(weights_files, phantom_dataset, tiny_cases, tmp_path / "o2", "--weights", good,
                 "FOLD1.PTH", *weights_files["opts"])  # fmt: skip
    capsys.readouterr()  # the prediction's log lines, where an earlier test set up logging
    assert main(args) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == "error: --weights FOLD1.PTH does not exist"
