"""train_net's set-up: --config-file required, impossible values caught before any write."""

from __future__ import annotations

from pathlib import Path

import pytest

from brainseg_d2.engine.trainer import argument_parser, build_cfg_from_args

ROOT = Path(__file__).resolve().parents[2]
INSTANT = str(ROOT / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml")


@pytest.fixture
def parse(phantom_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(phantom_dataset["root"]))
    monkeypatch.chdir(tmp_path)  # a stray ./output would show here

    def parse(*argv: str):
        return argument_parser().parse_args(list(argv))

    return parse


def test_config_file_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        argument_parser().parse_args([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "required: --config-file" in err[0]
    with pytest.raises(ValueError, match="--config-file is required"):
        build_cfg_from_args(argument_parser().parse_args(["--config-file", ""]))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH is 0 (on the command line)"),
        (["--num-gpus", "2", "SOLVER.IMS_PER_BATCH", "3"],
         "SOLVER.IMS_PER_BATCH is 3 (on the command line): it must be a positive multiple "
         "of the 2 processes"),
        (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER is 0 (on the command line)"),
        (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR is -0.1 (on the command line)"),
        (["MODEL.ROI_HEADS.NUM_CLASSES", "5"],
         "MODEL.ROI_HEADS.NUM_CLASSES is 5 (on the command line) but dataset 'phantom_train' "
         "has 3 classes"),
        (["SOLVER.IMS_PER_BATCH", "two"], "bad config override on the command line"),
        (["MODEL.PIXEL_MEAN", "[40.0, 40.0, 40.0]", "MODEL.PIXEL_STD", "[50.0, 50.0, 50.0]"],
         "MODEL.PIXEL_MEAN has 3 values (on the command line) but dataset 'phantom_train' "
         "feeds 4 channels"),
        (["BRAINSEG.INPUT.CONTEXT_SLICES", "1"],
         "MODEL.PIXEL_MEAN has 4 values (in "),
        (["BRAINSEG.SOLVER.OPTIMIZER", "Adam"],
         "BRAINSEG.SOLVER.OPTIMIZER is 'Adam' (on the command line): it must be one of SGD, AdamW"),
        (["BRAINSEG.SOLVER.INSTANCE_PERIOD", "0"],
         "BRAINSEG.SOLVER.INSTANCE_PERIOD is 0 (on the command line): it must be at least 1"),
        (["BRAINSEG.SOLVER.EMA_DECAY", "1.0"],
         "BRAINSEG.SOLVER.EMA_DECAY is 1.0 (on the command line): it must be in [0, 1)"),
        (["BRAINSEG.SEM_SEG.CONTEXT_CONVS", "-1"],
         "BRAINSEG.SEM_SEG.CONTEXT_CONVS is -1 (on the command line): it must be at least 0"),
        (["BRAINSEG.INFERENCE.BATCH_SIZE", "0"],
         "BRAINSEG.INFERENCE.BATCH_SIZE is 0 (on the command line): it must be at least 1"),
        (["BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES", "-1"],
         "BRAINSEG.INFERENCE.CPU_CONCURRENT_BATCHES is -1 (on the command line): it must be"),
    ],
    ids=["batch-0", "batch-not-multiple", "max-iter-0", "negative-lr", "num-classes", "type",
         "pixel-mean-length", "context-slices", "optimizer", "instance-period",
         "ema-decay", "context-convs", "inference-batch", "concurrent-batches"],
)
def test_bad_override_names_the_key_and_the_command_line(parse, tmp_path, argv, message):
    args = parse("--config-file", INSTANT, *argv)
    with pytest.raises(ValueError) as info:
        build_cfg_from_args(args)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_bad_value_in_a_file_names_the_file(parse, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{INSTANT}"\nSOLVER:\n  MAX_ITER: -5\n')
    with pytest.raises(ValueError, match=f"SOLVER.MAX_ITER is -5 \\(in {config}\\)"):
        build_cfg_from_args(parse("--config-file", str(config)))


def test_eval_only_needs_weights_that_fit(parse, weights_files, tmp_path):
    from detectron2.modeling import build_model

    from brainseg_d2.engine.trainer import load_eval_weights

    with pytest.raises(ValueError, match="evaluation needs trained weights"):
        load_eval_weights(None, build_cfg_from_args(parse("--config-file", INSTANT,
                                                          "--eval-only")))  # fmt: skip
    args = parse("--config-file", INSTANT, "--eval-only", *weights_files["opts"],
                 "MODEL.WEIGHTS", str(weights_files["five"]))  # fmt: skip
    cfg = build_cfg_from_args(args)
    with pytest.raises(ValueError, match="shape-mismatched"):
        load_eval_weights(build_model(cfg), cfg)
    args.opts[-1] = str(weights_files["good"])
    cfg = build_cfg_from_args(args)
    load_eval_weights(build_model(cfg), cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_value_no_file_sets_is_named_as_detectron2s_default(parse, tmp_path):
    config = tmp_path / "plain.yaml"  # Detectron2's base: 80 COCO classes by default
    config.write_text(f'_BASE_: "{ROOT / "configs" / "Base-Mask-RCNN-FPN.yaml"}"\n')
    args = parse("--config-file", str(config), "MODEL.DEVICE", "cpu",
                 "DATASETS.TRAIN", "('phantom_train',)", "DATASETS.TEST", "()")  # fmt: skip
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 80 \(Detectron2's default: neither "
                                         r".*plain\.yaml nor its bases set it\)"):  # fmt: skip
        build_cfg_from_args(args)


def test_datasets_naming_other_classes_are_refused(parse, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    name = "region_classes_val"  # as converted with --target regions
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(thing_classes=["WT", "TC", "ET"])
    args = parse("--config-file", INSTANT, "DATASETS.TEST", f"('{name}',)")
    with pytest.raises(ValueError, match=r"dataset 'region_classes_val' has classes "
                                         r"\['WT', 'TC', 'ET'\] but 'phantom_train' has "
                                         r"\['necrotic', 'edema', 'enhancing'\]"):  # fmt: skip
        build_cfg_from_args(args)
    assert list(tmp_path.iterdir()) == []


def test_eval_only_needs_only_test_datasets_and_some(parse, weights_files):
    args = parse("--config-file", INSTANT, "--eval-only", "DATASETS.TRAIN", "('nope_train',)",
                 *weights_files["opts"], "MODEL.WEIGHTS", str(weights_files["good"]))  # fmt: skip
    assert build_cfg_from_args(args).DATASETS.TRAIN == ("nope_train",)
    args = parse("--config-file", INSTANT, "--eval-only", "DATASETS.TEST", "()")
    with pytest.raises(ValueError, match="DATASETS.TEST is empty: --eval-only has nothing"):
        build_cfg_from_args(args)


def test_a_missing_dataset_names_the_configured_root(parse, tmp_path):
    args = parse("--config-file", INSTANT, "BRAINSEG.DATASET_ROOT", str(tmp_path / "no_root"),
                 "DATASETS.TRAIN", "('other_train',)")  # fmt: skip
    with pytest.raises(ValueError, match=f"under {tmp_path / 'no_root'}, which is not a folder"):
        build_cfg_from_args(args)


@pytest.mark.parametrize("resume", [False, True])
def test_training_from_unreadable_weights_stops_before_writing(
    parse, weights_files, tmp_path, resume
):
    out = tmp_path / "run"
    opts = [*weights_files["opts"], "OUTPUT_DIR", str(out)]
    if resume:  # a run whose last checkpoint was cut short
        out.mkdir()
        (out / "model_0000009.pth").write_bytes(weights_files["truncated"].read_bytes())
        (out / "last_checkpoint").write_text("model_0000009.pth")
        args = parse("--config-file", INSTANT, "--resume", *opts)
    else:
        args = parse("--config-file", INSTANT, *opts, "MODEL.WEIGHTS",
                     str(weights_files["truncated"]))  # fmt: skip
    with pytest.raises(ValueError, match=r"cannot read weights .* truncated or not a checkpoint"):
        build_cfg_from_args(args)
    listed = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert listed == (["last_checkpoint", "model_0000009.pth"] if resume else [])
    good = parse("--config-file", INSTANT, *opts, "MODEL.WEIGHTS", str(weights_files["good"]))
    build_cfg_from_args(good)  # a checkpoint that reads passes


def test_resuming_a_run_that_reached_max_iter_is_refused(parse, weights_files, tmp_path):
    import torch

    out = tmp_path / "run"
    out.mkdir()
    state = torch.load(weights_files["good"], map_location="cpu", weights_only=False)
    torch.save({**state, "iteration": 4}, out / "model_final.pth")  # 5 iterations run
    (out / "last_checkpoint").write_text("model_final.pth")
    opts = [*weights_files["opts"], "OUTPUT_DIR", str(out)]
    args = parse("--config-file", INSTANT, "--resume", *opts, "SOLVER.MAX_ITER", "5")
    with pytest.raises(ValueError, match=r"model_final.pth holds 5 iterations and "
                                         r"SOLVER.MAX_ITER is 5, so nothing is left"):
        build_cfg_from_args(args)
    assert sorted(p.name for p in out.iterdir()) == ["last_checkpoint", "model_final.pth"]
    build_cfg_from_args(parse("--config-file", INSTANT, "--resume", *opts,
                              "SOLVER.MAX_ITER", "6"))  # one more iteration to run: fine
    build_cfg_from_args(parse("--config-file", INSTANT, *opts,
                              "SOLVER.MAX_ITER", "5"))  # not resuming: a new run from scratch


def test_training_from_scratch_with_frozen_layers_is_warned_about(parse, caplog):
    args = parse("--config-file", INSTANT, "MODEL.BACKBONE.FREEZE_AT", "2")
    build_cfg_from_args(args)
    assert "frozen layers and norms keep their random initialisation" in caplog.text
    caplog.clear()
    build_cfg_from_args(parse("--config-file", INSTANT))  # GN, nothing frozen: no warning
    assert "frozen layers" not in caplog.text
