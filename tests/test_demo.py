"""The picture scripts: demo/demo.py and tools/visualize_data.py, run in-process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import SimpleITK as sitk
import torch

from brainseg_d2.data.io.png import read_channel_png
from brainseg_d2.visualization import auto_scale

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "phantom" / "mask_rcnn_R_18_FPN_cpu_instant_test.yaml"
# A random-init model is slow only through the number of instances it draws.
FAST_MODEL = [
    "MODEL.DEVICE", "cpu", "TEST.DETECTIONS_PER_IMAGE", "2",
    "INPUT.MIN_SIZE_TEST", "64", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
]  # fmt: skip


def _model(weights_files) -> list[str]:
    """The small random model of ``weights_files``, with its (strictly loaded) weights."""
    return [*weights_files["opts"], "MODEL.WEIGHTS", str(weights_files["good"]), *FAST_MODEL]


def _load(relative: str):
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_visualize_data_writes_gt_overlays(phantom_dataset, tmp_path):
    tool = _load("tools/visualize_data.py")
    dataset = phantom_dataset["dataset"]
    out = tmp_path / "gt"
    assert tool.main(["--dataset-dir", str(dataset), "--split", "train", "--output", str(out),
                      "--num", "3"]) == 0  # fmt: skip
    files = sorted(out.glob("*.png"))
    assert len(files) == 3
    vid, index = files[0].stem.rsplit("_", 1)
    channels = json.loads((dataset / "dataset.json").read_text())["channels"]
    source = read_channel_png(dataset / "images" / "train" / vid / f"{index}.png", len(channels))
    image = cv2.imread(str(files[0]))
    assert image.shape[:2] == tuple(auto_scale(source.shape) * n for n in source.shape[:2])
    # Annotated slices are drawn in colour on a grey slice.
    assert (np.ptp(image.astype(int), axis=2) > 40).any()


def test_visualize_data_one_volume_and_bad_arguments(phantom_dataset, tmp_path, capsys):
    tool = _load("tools/visualize_data.py")
    dataset = str(phantom_dataset["dataset"])
    train = json.loads((phantom_dataset["dataset"] / "dataset.json").read_text())["splits"]
    vid = train["train"][0]
    out = tmp_path / "one"
    assert tool.main(["--input", dataset, "--split", "train", "--volume", vid,
                      "--output", str(out), "--num", "2"]) == 0  # fmt: skip
    assert {p.name.rsplit("_", 1)[0] for p in out.glob("*.png")} == {vid}
    assert tool.main(["--input", dataset, "--split", "nope", "--output", str(out)]) == 2
    assert "no split 'nope'" in capsys.readouterr().err
    for scale in ("0", "-1"):
        assert tool.main(["--input", dataset, "--output", str(tmp_path / "s"), "--scale",
                          scale]) == 2  # fmt: skip
        assert f"--scale must be > 0, got {float(scale)}" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_visualize_data_replaces_only_its_own_pictures(phantom_dataset, tmp_path, capsys):
    tool = _load("tools/visualize_data.py")
    argv = ["--input", str(phantom_dataset["dataset"]), "--split", "train", "--num", "2",
            "--output", str(tmp_path)]  # fmt: skip
    assert tool.main(argv) == 0
    first = sorted(tmp_path.glob("*.png"))
    assert tool.main(argv) == 0  # its own files: replaced
    assert sorted(tmp_path.glob("*.png")) == first
    (tmp_path / tool.MARKER).unlink()  # now the PNGs are not known to be the tool's
    first[0].write_bytes(b"user data")
    assert tool.main(argv) == 2
    assert f"holds {first[0].name}, which tools/visualize_data.py did not write" in (
        capsys.readouterr().err
    )
    assert first[0].read_bytes() == b"user data"


def test_demo_on_2d_slices_writes_overlays(phantom_dataset, weights_files, tmp_path, capsys):
    demo = _load("demo/demo.py")
    dataset = phantom_dataset["dataset"]
    images = sorted((dataset / "images" / "train").rglob("*.png"))[:1]
    info = json.loads((dataset / "dataset.json").read_text())
    source = read_channel_png(images[0], len(info["channels"]))  # a slice, not its tiles
    out = tmp_path / "demo2d"
    # What volume prediction reads, the dense head's masks (MASK_SOURCE semantic): at
    # threshold 0 every pixel is in every category; at 0.2 (a random model) not.
    for threshold in ("0", "0.2"):
        rc = demo.main([
            "--config-file", str(CONFIG), "--input", *map(str, images), "--output", str(out),
            "--confidence-threshold", threshold, "--dataset-info", str(dataset / "dataset.json"),
            "--opts", *_model(weights_files), "BRAINSEG.POSTPROCESS.CATEGORY_SCORE_THRESH",
            "[0.9, 0.9, 0.9]",  # --confidence-threshold wins over per-category ones
        ])  # fmt: skip
        assert rc == 0
        printed = capsys.readouterr().out
        everywhere = ", ".join(f"{n} {source.shape[0] * source.shape[1]}"
                               for n in info["classes"])  # fmt: skip
        assert (f"{images[0]}: {everywhere} -> " in printed) == (threshold == "0"), printed
    rc = demo.main([
        "--config-file", str(CONFIG), "--input", *map(str, images), "--output", str(out),
        "--dataset-info", str(dataset / "dataset.json"), "--opts", *_model(weights_files),
        "BRAINSEG.MASK_SOURCE", "instances",
    ])  # fmt: skip
    assert rc == 0 and " instances -> " in capsys.readouterr().out
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == [p.name for p in images]
    scale = auto_scale(source.shape)
    assert cv2.imread(str(written[0])).shape[:2] == (
        scale * source.shape[0],
        scale * source.shape[1],
    )
    # Drawn again into the same folder: its own file is replaced; a user's file is not.
    def args(output: Path) -> list[str]:
        return ["--config-file", str(CONFIG), "--input", *map(str, images), "--output",
                str(output), "--dataset-info", str(dataset / "dataset.json"),
                "--opts", *_model(weights_files)]  # fmt: skip

    assert demo.main(args(out)) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / images[0].name).write_bytes(b"my picture")
    assert demo.main(args(mine)) == 2
    assert (mine / images[0].name).read_bytes() == b"my picture"
    single = tmp_path / "one.png"
    single.write_bytes(b"my picture")
    assert demo.main(args(single)) == 2
    assert single.read_bytes() == b"my picture"


def test_demo_reads_a_grey_image_as_one_slice_and_refuses_16_bits(
    phantom_dataset, weights_files, tmp_path, capsys
):
    """Only a converted slice (under a dataset.json) is split into channel tiles: a grey
    image whose height happens to divide by the channel count is one slice, repeated."""
    demo = _load("demo/demo.py")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.random.default_rng(0).integers(0, 256, (96, 96), np.uint8))
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), np.full((96, 96), 4000, np.uint16))
    base = ["--config-file", str(CONFIG),
            "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json")]  # fmt: skip
    out = tmp_path / "out"
    assert demo.main([*base, "--input", str(grey), str(deep), "--output", str(out),
                      "--opts", *_model(weights_files)]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{deep}: uint16 pixels; the model reads 8-bit slices" in line
    assert not out.exists()  # checked before anything is written
    assert demo.main([*base, "--input", str(grey), "--output", str(out),
                      "--opts", *_model(weights_files)]) == 0  # fmt: skip
    scale = auto_scale((96, 96))
    assert cv2.imread(str(out / "grey.png")).shape[:2] == (96 * scale, 96 * scale)


def _tiny_case(folder: Path) -> Path:
    """A BraTS-named case folder, 12 x 14 x 5 voxels, tumour in the middle slices."""
    case = folder / "Tiny_001"
    case.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for channel in ("flair", "t1", "t1ce", "t2"):
        array = rng.uniform(50, 150, (5, 14, 12)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(array), str(case / f"Tiny_001_{channel}.nii.gz"))
    seg = np.zeros((5, 14, 12), np.uint8)
    seg[1:4, 4:10, 3:9] = 2
    seg[2, 6:8, 5:7] = 4
    sitk.WriteImage(sitk.GetImageFromArray(seg), str(case / "Tiny_001_seg.nii.gz"))
    return case


def test_demo_on_a_case_folder_writes_case_pictures(phantom_dataset, weights_files, tmp_path):
    demo = _load("demo/demo.py")
    case = _tiny_case(tmp_path / "cases")
    out = tmp_path / "democase"
    rc = demo.main([
        "--config-file", str(CONFIG), "--output", str(out),
        "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json"),
        "--input", str(case), *_model(weights_files),  # trailing KEY VALUE, as elsewhere
    ])  # fmt: skip
    assert rc == 0
    folder = out / "Tiny_001"
    assert sorted(p.name for p in folder.glob("slice_*.png"))  # GT tumour slices at least
    assert (folder / "montage.png").is_file()
    assert iio.imread(folder / "volume.gif", index=None).shape[0] == 5
    args = ["--config-file", str(CONFIG), "--output", str(out), "--dataset-info",
            str(phantom_dataset["dataset"] / "dataset.json"), "--input", str(case),
            *_model(weights_files)]  # fmt: skip
    assert demo.main(args) == 0  # its own pictures are drawn again
    (folder / "notes.txt").write_text("mine")  # a file of the user's among them: kept
    assert demo.main(args) == 2
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "montage.png").is_file()


def test_demo_case_pictures_stay_out_of_the_input_and_survive_an_interruption(
    phantom_dataset, weights_files, tmp_path, monkeypatch, capsys
):
    demo = _load("demo/demo.py")
    case = _tiny_case(tmp_path / "cases")

    def run(output) -> int:
        return demo.main(["--config-file", str(CONFIG), "--output", str(output),
                          "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json"),
                          "--input", str(case), *_model(weights_files)])  # fmt: skip

    before = sorted(p.name for p in case.iterdir())
    assert run(case / "pictures") == 2  # inside the case folder it reads
    assert "lies inside the input" in capsys.readouterr().err
    assert sorted(p.name for p in case.iterdir()) == before
    (tmp_path / "notes.txt").write_text("mine")
    assert run(tmp_path / "notes.txt") == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"

    def interrupted(prediction, folder, **kwargs):
        (folder / "slice_0000.png").write_bytes(b"half")
        raise KeyboardInterrupt

    drawing = demo.render_prediction
    monkeypatch.setattr(demo, "render_prediction", interrupted)
    assert run(tmp_path / "out") == 130
    assert "interrupted; run the same command again" in capsys.readouterr().err
    monkeypatch.setattr(demo, "render_prediction", drawing)
    assert run(tmp_path / "out") == 0  # the unfinished folder is the script's: drawn again
    assert (tmp_path / "out" / "Tiny_001" / "montage.png").is_file()


def test_demo_takes_overrides_trailing_or_after_opts():
    demo = _load("demo/demo.py")
    base = ["--config-file", "c.yaml", "--output", "o"]
    trailing = demo.parse_args([*base, "--input", "a.png", "b.png", "MODEL.WEIGHTS", "w.pth"])
    assert trailing.input == ["a.png", "b.png"] and trailing.opts == ["MODEL.WEIGHTS", "w.pth"]
    flag = demo.parse_args([*base, "--input", "a.png", "--opts", "MODEL.WEIGHTS", "w.pth"])
    assert flag.input == ["a.png"] and flag.opts == ["MODEL.WEIGHTS", "w.pth"]
    before = demo.parse_args([*base, "--input", "a.png", "--raw", "SOLVER.MAX_ITER", "1"])
    assert before.raw and before.opts == ["SOLVER.MAX_ITER", "1"]


def test_demo_names_volume_files_by_suffix_or_order():
    demo = _load("demo/demo.py")
    case = demo.volume_case(["a/X_t2.nii.gz", "a/X_flair.nii.gz", "a/X_t1ce.nii.gz"],
                            ["flair", "t1ce", "t2"], "brats2021")  # fmt: skip
    assert case.case_id == "X" and case.channels["flair"] == "a/X_flair.nii.gz"
    case = demo.volume_case(["p.nii.gz", "q.nii.gz"], ["flair", "t2"], "binary")
    assert case.channels == {"flair": "p.nii.gz", "t2": "q.nii.gz"}
    kind, _ = demo.split_inputs([str(REPO / "configs")])
    assert kind == "case"


def test_demo_refuses_bad_weights_and_an_output_that_is_an_input(
    phantom_dataset, weights_files, tmp_path, capsys
):
    demo = _load("demo/demo.py")
    image = tmp_path / "slice.png"
    image.write_bytes(next((phantom_dataset["dataset"] / "images").rglob("*.png")).read_bytes())
    before = image.read_bytes()
    base = ["--config-file", str(CONFIG), "--input", str(image),
            "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json")]  # fmt: skip
    assert demo.main([*base, "--output", str(image), "--opts", *_model(weights_files)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--output {image} is the input {image}" in err[0]
    assert image.read_bytes() == before

    opts = [*weights_files["opts"], *FAST_MODEL, "MODEL.WEIGHTS", str(weights_files["nores5"])]
    assert demo.main([*base, "--output", str(tmp_path / "out"), "--opts", *opts]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit the model" in err[0] and "res5" in err[0]
    assert not (tmp_path / "out").exists()
    assert demo.main([*base, "--output", str(tmp_path / "out"), "--opts", *FAST_MODEL]) == 2
    assert "MODEL.WEIGHTS is empty" in capsys.readouterr().err
    if not torch.cuda.is_available():
        opts = [*_model(weights_files), "MODEL.DEVICE", "cuda"]
        assert demo.main([*base, "--output", str(tmp_path / "out"), "--opts", *opts]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "MODEL.DEVICE is 'cuda'" in err[0]
        assert not (tmp_path / "out").exists()


def test_demo_draws_the_cases_of_a_decathlon_task(
    phantom_dataset, weights_files, tiny_cases, write_task, tmp_path
):
    demo = _load("demo/demo.py")
    task = write_task(tiny_cases, tmp_path / "Task01_BrainTumour", "msd", test_cases=1)
    out = tmp_path / "pictures"
    rc = demo.main([
        "--config-file", str(CONFIG), "--output", str(out),
        "--dataset-info", str(phantom_dataset["dataset"] / "dataset.json"),
        "--input", str(task / "imagesTr"), *_model(weights_files),
    ])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["BRATS_001"]  # imagesTr's case alone
    assert (out / "BRATS_001" / "montage.png").is_file()
    # Slices with tumour (its labelsTr map, or predicted) are pictured.
    assert sorted((out / "BRATS_001").glob("slice_*.png"))
