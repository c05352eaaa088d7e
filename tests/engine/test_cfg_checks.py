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
