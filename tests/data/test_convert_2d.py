"""Converter on 2D inputs: TCGA LGG slice folders and VIA polygon projects."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath
from PIL import Image, ImageOps
from pycocotools import mask as mask_util
from pycocotools.coco import COCO

from brainseg_d2.cli.convert import main
from brainseg_d2.data.convert import ConversionError, ConvertOptions, convert_dataset
from brainseg_d2.data.io.png import read_channel_png
from brainseg_d2.data.preprocess import preprocess_volume
from brainseg_d2.data.sources import (
    SourceError,
    detect_layout,
    find_cases,
    find_tcga_lgg_cases,
    find_via_cases,
)
from brainseg_d2.structures import DatasetInfo

H, W = 24, 32
NUMBERS = (1, 2, 3, 9, 10, 11)  # sorted as text these would be 1, 10, 11, 2, ...
EXACT = ["--min-area", "1", "--empty-ratio", "1", "--no-progress"]


def _tcga_slice(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB slice with a zero border, and a 0/255 mask (empty for some seeds)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(1, 256, (H, W, 3), dtype=np.uint8)
    rgb[:, :3] = 0
    mask = np.zeros((H, W), np.uint8)
    if seed % 3:
        y, x = rng.integers(2, 10), rng.integers(4, 16)
        mask[y : y + 8, x : x + 10] = 255
        mask[20:22, 28:31] = 255  # a second component
    return rgb, mask


def make_tcga(root: Path, patients: int = 4) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Patient folders ``TCGA_XX_000p_19990101/<folder>_<N>{,_mask}.tif``; returns the pixels."""
    out = {}
    for p in range(patients):
        case = f"TCGA_CS_{p:04d}_19990101"
        folder = root / "kaggle_3m" / case
        folder.mkdir(parents=True)
        out[case] = {}
        for n in NUMBERS:
            rgb, mask = _tcga_slice(100 * p + n)
            assert cv2.imwrite(str(folder / f"{case}_{n}.tif"), rgb[..., ::-1])
            assert cv2.imwrite(str(folder / f"{case}_{n}_mask.tif"), mask)
            out[case][n] = (rgb, mask)
    (root / "kaggle_3m" / "data.csv").write_text("Patient,age\n")
    return out


def _coco(out: Path, split: str) -> COCO:
    return COCO(str(out / "annotations" / f"instances_{split}.json"))


def _decoded(coco: COCO, image_id: int, category_id: int | None = None) -> np.ndarray:
    im = coco.loadImgs([image_id])[0]
    mask = np.zeros((im["height"], im["width"]), bool)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
        if category_id is None or ann["category_id"] == category_id:
            mask |= mask_util.decode(ann["segmentation"]).astype(bool)
    return mask


def _patients_by_split(out: Path) -> dict[str, str]:
    owner = {}
    info = json.loads((out / "dataset.json").read_text())
    for split in info["counts"]:
        for im in json.loads((out / "annotations" / f"instances_{split}.json").read_text())[
            "images"
        ]:
            assert owner.setdefault(im["patient_id"], split) == split
    return owner


def test_tcga_round_trip(tmp_path):
    pixels = make_tcga(tmp_path / "in")
    out = tmp_path / "ds"
    assert detect_layout(tmp_path / "in") == "tcga_lgg"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--split", "1", "0", "0"]
    assert main([*args, *EXACT]) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["target"] == "binary" and info["label_convention"] == "binary"
    assert info["channels"] == ["pre_contrast", "flair", "post_contrast"]
    volumes = json.loads((out / "volumes.json").read_text())["volumes"]
    assert sorted(volumes) == sorted(pixels)
    seen = 0
    for split in info["counts"]:
        coco = _coco(out, split)
        for image_id in coco.getImgIds():
            im = coco.loadImgs([image_id])[0]
            vol = volumes[im["volume_id"]]
            n = NUMBERS[im["slice_index"]]
            assert vol["source"]["slices"][im["slice_index"]]["number"] == n
            rgb, mask = pixels[im["volume_id"]][n]
            np.testing.assert_array_equal(_decoded(coco, image_id), mask > 0)
            png = read_channel_png(out / "images" / split / im["file_name"], 3)
            np.testing.assert_array_equal(png, rgb)  # 8-bit slices pass through
            assert im["patient_id"] == im["volume_id"]  # folder name
            seen += 1
    assert seen == len(pixels) * len(NUMBERS)
    g = next(iter(volumes.values()))["geometry"]
    assert g["size"] == [W, H, len(NUMBERS)] and g["spacing"] == [1.0, 1.0, 1.0]
    assert g["direction"] == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    assert g["kept_slices"] == list(range(len(NUMBERS)))
    assert set(_patients_by_split(out)) == set(pixels)


def test_tcga_geometry_puts_slices_back(tmp_path):
    """The stack rebuilt with ``SliceGeometry.slices_to_image`` is the masks in N order."""
    from brainseg_d2.structures import SliceGeometry

    pixels = make_tcga(tmp_path / "in", patients=1)
    out = tmp_path / "ds"
    cases = find_tcga_lgg_cases(tmp_path / "in")
    opts = ConvertOptions(min_area=1, empty_ratio=1.0, split=(1.0, 0.0, 0.0))  # one patient
    convert_dataset(cases, out, opts, progress=False)
    ((vid, entry),) = json.loads((out / "volumes.json").read_text())["volumes"].items()
    coco = _coco(out, entry["split"])
    stack = np.zeros((len(NUMBERS), H, W), np.uint8)
    for image_id in coco.getImgIds():
        stack[coco.loadImgs([image_id])[0]["slice_index"]] = _decoded(coco, image_id)
    image = SliceGeometry.from_json(entry["geometry"]).slices_to_image(stack)
    expected = np.stack([pixels[vid][n][1] > 0 for n in NUMBERS])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)


def _square(x: int, y: int, s: int) -> tuple[list[int], list[int]]:
    return [x, x + s, x + s, x], [y, y, y + s, y + s]


def _region(xs, ys, cls: str | None = None) -> dict:
    return {
        "shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
        "region_attributes": {"name": cls} if cls else {},
    }


TRIANGLE = ([3.2, 20.7, 9.0], [2.0, 5.4, 18.6])


def make_via(folder: Path, images: dict[str, list[dict]], dtype=np.uint8) -> Path:
    """Images + ``via_region_data.json`` (VIA 2 lists; the first image in VIA 1 dict form)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for i, (name, regions) in enumerate(images.items()):
        rng = np.random.default_rng(i)
        if dtype == np.uint8:
            pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        else:
            pixels = rng.integers(0, 4000, (H, W), dtype=np.uint16)
        assert cv2.imwrite(str(folder / name), pixels)
        size = (folder / name).stat().st_size
        regs = {str(k): r for k, r in enumerate(regions)} if i == 0 else regions
        data[f"{name}{size}"] = {
            "filename": name,
            "size": size,
            "regions": regs,
            "file_attributes": {},
        }
    path = folder / "via_region_data.json"
    path.write_text(json.dumps(data))
    return path


def _centres_inside(xs, ys, shape=(H, W)) -> np.ndarray:
    """Pixels whose centre lies inside a simple polygon (matplotlib's test, an independent
    reference; VIA coordinates: (0, 0) is the image's top-left corner)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    centres = np.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], 1)
    return MplPath(np.stack([xs, ys], 1)).contains_points(centres).reshape(shape)


def _rasterised(regions: list[dict]) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    for r in regions:
        a = r["shape_attributes"]
        mask |= _centres_inside(a["all_points_x"], a["all_points_y"])
    return mask


VIA_IMAGES = {
    "pA_1.png": [_region(*TRIANGLE, "tumour"), _region(*_square(24, 14, 5))],
    "pA_2.png": [_region(*_square(2, 2, 6), "Tumour")],
    "pB_1.png": [],
    "pC_1.png": [_region(*_square(10, 10, 9), "tumour")],
    "pD_1.png": [_region(*TRIANGLE)],
}


def test_via_round_trip_and_patient_pattern(tmp_path):
    make_via(tmp_path / "in", VIA_IMAGES)
    out = tmp_path / "ds"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--patient-pattern", "^(p[A-Z])"]
    assert main([*args, *EXACT]) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["target"] == "binary" and info["channels"] == ["red", "green", "blue"]
    owner = _patients_by_split(out)
    assert set(owner) == {"pA", "pB", "pC", "pD"}
    found = {}
    for split in info["counts"]:
        coco = _coco(out, split)
        assert coco.getCatIds() == [1]
        for image_id in coco.getImgIds():
            im = coco.loadImgs([image_id])[0]
            assert im["num_slices"] == 1 and im["slice_index"] == 0
            found[im["volume_id"]] = _decoded(coco, image_id)
            source = cv2.imread(str(tmp_path / "in" / f"{im['volume_id']}.png"))
            png = read_channel_png(out / "images" / split / im["file_name"], 3)
            np.testing.assert_array_equal(png, source[..., ::-1])  # red, green, blue
    assert sorted(found) == ["pA_1", "pA_2", "pB_1", "pC_1", "pD_1"]
    for name, regions in VIA_IMAGES.items():
        np.testing.assert_array_equal(found[name[:-4]], _rasterised(regions))


def test_via_classes_map_to_target_categories(tmp_path):
    images = {
        "a.png": [_region(*_square(2, 2, 8), "edema"), _region(*_square(4, 4, 3), "necrotic")],
        "b.png": [_region(*TRIANGLE, "Enhancing")],
    }
    via = make_via(tmp_path / "in", images)
    cases = find_via_cases(via)
    assert {c.label_convention for c in cases} == {"brats2023"}
    out = tmp_path / "ds"
    opts = ConvertOptions(min_area=1, empty_ratio=1.0, split=(1.0, 0.0, 0.0))
    info = convert_dataset(cases, out, opts, progress=False)
    assert info["target"] == "labels"
    coco = _coco(out, "train")
    ids = {coco.loadImgs([i])[0]["volume_id"]: i for i in coco.getImgIds()}
    necrotic = _rasterised(images["a.png"][1:])
    np.testing.assert_array_equal(_decoded(coco, ids["a"], 1), necrotic)
    np.testing.assert_array_equal(
        _decoded(coco, ids["a"], 2), _rasterised(images["a.png"][:1]) & ~necrotic
    )
    np.testing.assert_array_equal(_decoded(coco, ids["b"], 3), _rasterised(images["b.png"]))
    with pytest.raises(ConversionError, match="a.png: region 0: unknown class 'edema'"):
        binary = find_via_cases(via, label_convention="binary")
        convert_dataset(binary, tmp_path / "o2", progress=False)
    assert not (tmp_path / "o2").exists()


def test_16_bit_slices_use_the_shared_preprocessing(tmp_path):
    make_via(tmp_path / "in", {"x.png": [_region(*TRIANGLE)]}, dtype=np.uint16)
    out = tmp_path / "ds"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--split", "1", "0", "0"]
    assert main([*args, *EXACT]) == 0
    grey = cv2.imread(str(tmp_path / "in" / "x.png"), cv2.IMREAD_UNCHANGED)
    image = sitk.GetImageFromArray(grey[None])
    options = DatasetInfo.load(out).preprocess_options  # the converter's default normalisation
    assert options.normalization == ConvertOptions().normalization == "zscore"
    pre = preprocess_volume({"red": image}, replace(options, channels=("red",)))
    (png,) = out.glob("images/*/x/0000.png")
    # A grey file gives three equal channels (red, green, blue), each preprocessed alike.
    channels = read_channel_png(png, 3)
    for k in range(3):
        np.testing.assert_array_equal(channels[..., k], pre.slices[0][..., 0])
    volume = json.loads((out / "volumes.json").read_text())["volumes"]["x"]
    assert volume["intensity"]["red"] == pre.intensity["red"]


def _garbage(path: Path) -> None:
    path.write_bytes(b"II*\x00 not a tiff" * 10)


def _via_edit(folder: Path, fn) -> None:
    path = folder / "via_region_data.json"
    data = json.loads(path.read_text())
    entry = next(e for e in data.values() if e["filename"] == "pC_1.png")
    fn(entry["regions"])
    path.write_text(json.dumps(data))


TCGA_BAD = {
    "missing_mask": (
        lambda d: (d / "TCGA_CS_0001_19990101_9_mask.tif").unlink(),
        "TCGA_CS_0001_19990101_9.tif: no mask (",
    ),
    "missing_image": (
        lambda d: (d / "TCGA_CS_0001_19990101_3.tif").unlink(),
        "TCGA_CS_0001_19990101_3.tif: file not found",
    ),
    "unreadable_tif": (
        lambda d: _garbage(d / "TCGA_CS_0001_19990101_10.tif"),
        "TCGA_CS_0001_19990101_10.tif: cannot read",
    ),
    "bad_mask_values": (
        lambda d: cv2.imwrite(
            str(d / "TCGA_CS_0001_19990101_2_mask.tif"), np.full((H, W), 7, np.uint8)
        ),
        "TCGA_CS_0001_19990101_2_mask.tif: label values [7]",
    ),
    "size": (
        lambda d: cv2.imwrite(
            str(d / "TCGA_CS_0001_19990101_2_mask.tif"), np.zeros((H, 5), np.uint8)
        ),
        "TCGA_CS_0001_19990101_2_mask.tif: size (5, 24)",
    ),
}
VIA_BAD = {
    "two_points": (
        lambda d: _via_edit(d, lambda r: r.append(_region([1, 5], [1, 5]))),
        "pC_1.png: region 1: polygon with 2 points (need >= 3)",
    ),
    "unknown_class": (
        lambda d: _via_edit(d, lambda r: r[0]["region_attributes"].update(name="balloon")),
        "pC_1.png: region 0: unknown class 'balloon'",
    ),
    "outside_the_image": (  # a polygon drawn on another, larger image
        lambda d: _via_edit(d, lambda r: r.append(_region([5, 60, 70], [5, 6, 30]))),
        "pC_1.png: region 1: point (60, 6) lies outside the 32 x 24 image (2 of 3 points)",
    ),
    "no_area": (  # points on a line: VIA shows nothing
        lambda d: _via_edit(d, lambda r: r.append(_region([1, 5, 9], [1, 5, 9]))),
        "pC_1.png: region 1: polygon covers no pixel centre (zero or sub-pixel area)",
    ),
    "point": (
        lambda d: _via_edit(d, lambda r: r.append({"shape_attributes": {"name": "point", "cx": 3,
                                                                        "cy": 4}})),
        "pC_1.png: region 1: shape 'point' encloses no area (converted: polygon, rect, circle",
    ),
    "flat_rect": (
        lambda d: _via_edit(d, lambda r: r.append({"shape_attributes": {
            "name": "rect", "x": 2, "y": 2, "width": 5, "height": 0}})),
        "pC_1.png: region 1: rect: width, height must be > 0, got [5, 0]",
    ),
    "bad_theta": (
        lambda d: _via_edit(d, lambda r: r.append({"shape_attributes": {
            "name": "ellipse", "cx": 9, "cy": 9, "rx": 4, "ry": 2, "theta": "steep"}})),
        "pC_1.png: region 1: ellipse: needs numbers cx, cy, rx, ry, theta, got {",
    ),
    "missing_image": (lambda d: (d / "pC_1.png").unlink(), "pC_1.png: file not found"),
    "unreadable_image": (lambda d: _garbage(d / "pC_1.png"), "pC_1.png: cannot read"),
}
BAD = {
    **{f"tcga_{k}": ("tcga", *v) for k, v in TCGA_BAD.items()},
    **{f"via_{k}": ("via", *v) for k, v in VIA_BAD.items()},
}


def _make(kind: str, root: Path) -> Path:
    if kind == "tcga":
        make_tcga(root)
        return root / "kaggle_3m" / "TCGA_CS_0001_19990101"
    make_via(root, VIA_IMAGES)
    return root


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_fails_cleanly(tmp_path, capsys, name):
    kind, breaker, expected = BAD[name]
    breaker(_make(kind, tmp_path / "in"))
    out = tmp_path / "out" / "ds"
    assert main(["--input", str(tmp_path / "in"), "--output", str(out), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: case "), lines
    assert expected in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["tcga_unreadable_tif", "via_two_points"])
def test_skip_bad_converts_the_rest(tmp_path, capsys, name):
    kind, breaker, expected = BAD[name]
    breaker(_make(kind, tmp_path / "in"))
    out = tmp_path / "ds"
    assert main(["--input", str(tmp_path / "in"), "--output", str(out), "--skip-bad", *EXACT]) == 0
    assert expected in capsys.readouterr().err
    info = json.loads((out / "dataset.json").read_text())
    bad = "TCGA_CS_0001_19990101" if kind == "tcga" else "pC_1"
    assert [s["case_id"] for s in info["skipped"]] == [bad]
    volumes = json.loads((out / "volumes.json").read_text())["volumes"]
    assert bad not in volumes and len(volumes) == (3 if kind == "tcga" else 4)


def test_layout_detection_and_source_errors(tmp_path):
    make_tcga(tmp_path / "both")
    make_via(tmp_path / "both" / "via", {"a.png": []})
    with pytest.raises(SourceError, match="several layouts"):
        find_cases(tmp_path / "both")
    assert len(find_cases(tmp_path / "both", "tcga_lgg")) == 4
    assert [c.case_id for c in find_cases(tmp_path / "both", "via")] == ["via/a"]
    assert detect_layout(tmp_path / "both" / "via" / "via_region_data.json") == "via"
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(SourceError, match="no TCGA LGG slices"):
        find_tcga_lgg_cases(tmp_path / "empty")
    with pytest.raises(SourceError, match="no VIA annotation JSON"):
        find_via_cases(tmp_path / "empty")
    cases = find_tcga_lgg_cases(tmp_path / "both")
    with pytest.raises(ConversionError, match="only be cut along 'axial'"):
        convert_dataset(cases, tmp_path / "o", ConvertOptions(slice_axis="coronal"))


@pytest.mark.parametrize(
    ("names", "target"),
    [(("edema", "Enhancing"), "labels"), (("WT", "et"), "regions"), ((None,), "binary")],
)
def test_default_target_follows_the_polygons_class_names(tmp_path, names, target):
    """Polygons named by tissue train ``labels``, by region ``regions`` (label maps: regions,
    test_convert.py)."""
    from brainseg_d2.data.convert_plan import resolve_options

    images = {f"{i}.png": [_region(*_square(2, 2, 8), name)] for i, name in enumerate(names)}
    cases = find_via_cases(make_via(tmp_path / "via", images))
    assert resolve_options(cases, ConvertOptions()).target == target


def _shape(name: str, cls: str = "tumour", **params) -> dict:
    return {"shape_attributes": {"name": name, **params}, "region_attributes": {"name": cls}}


def _converted_masks(tmp_path, images: dict[str, list[dict]]) -> dict[str, np.ndarray]:
    make_via(tmp_path / "in", images)
    out = tmp_path / "ds"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--split", "1", "0", "0"]
    assert main([*args, *EXACT]) == 0
    coco = _coco(out, "train")
    return {coco.loadImgs([i])[0]["volume_id"]: _decoded(coco, i) for i in coco.getImgIds()}


def test_via_regions_are_filled_as_the_canvas_fills_them(tmp_path):
    """Pixel centres inside by the non-zero rule: a pentagram keeps its centre (OpenCV's
    fillPoly drew a hole there), a rectangle covers exactly its pixels, circles and ellipses
    their area."""
    angles = np.deg2rad(-90 + 144 * np.arange(5))
    star = [(16 + 11 * np.cos(a), 12 + 11 * np.sin(a)) for a in angles]  # self-intersecting
    inner = np.deg2rad(-90 + 36 + 72 * np.arange(5))
    r_in = 11 * np.cos(np.deg2rad(72)) / np.cos(np.deg2rad(36))
    outline = [p for k in range(5) for p in ((16 + 11 * np.cos(np.deg2rad(-90 + 72 * k)),
                                              12 + 11 * np.sin(np.deg2rad(-90 + 72 * k))),
                                             (16 + r_in * np.cos(inner[k]),
                                              12 + r_in * np.sin(inner[k])))]  # fmt: skip
    images = {
        "star.png": [_region([x for x, _ in star], [y for _, y in star])],
        "rect.png": [_shape("rect", x=3, y=4, width=10, height=7)],
        "circle.png": [_shape("circle", cx=16, cy=12, r=8)],
        "ellipse.png": [_shape("ellipse", cx=16.0, cy=12.0, rx=10, ry=4, theta=np.pi / 2)],
        "upright.png": [_shape("ellipse", cx=16.0, cy=12.0, rx=4, ry=10)],
    }
    masks = _converted_masks(tmp_path, images)
    np.testing.assert_array_equal(masks["star"], _centres_inside(*zip(*outline)))
    assert masks["star"][12, 16]  # the centre pentagon is filled
    expected = np.zeros((H, W), bool)
    expected[4:11, 3:13] = True
    np.testing.assert_array_equal(masks["rect"], expected)
    rows, cols = np.mgrid[:H, :W] + 0.5
    for name, (rx, ry) in (("circle", (8, 8)), ("upright", (4, 10))):
        level = np.sqrt(((cols - 16) / rx) ** 2 + ((rows - 12) / ry) ** 2)  # 1 on the outline
        sure = np.abs(level - 1) > 0.01  # the polygon strays < 0.01 px from the curve
        np.testing.assert_array_equal(masks[name][sure], (level < 1)[sure])
    np.testing.assert_array_equal(masks["ellipse"], masks["upright"])  # turned by theta


def test_an_exif_orientation_is_applied_to_the_pixels_and_the_regions(tmp_path):
    """A camera image stored sideways with EXIF orientation 6: VIA shows it turned, and
    its polygon coordinates are on the turned image, so the converter turns the pixels."""
    stored = np.zeros((W, H, 3), np.uint8)  # 24 wide, 32 high as stored; 32 x 24 shown
    stored[2:8, 3:12] = (255, 0, 0)
    (tmp_path / "in").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    Image.fromarray(stored).save(tmp_path / "in" / "cam.png", exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "in" / "cam.png")))
    assert shown.shape == (H, W, 3)
    rows, cols = np.nonzero(shown[..., 0] == 255)
    xs = [cols.min(), cols.max() + 1, cols.max() + 1, cols.min()]
    ys = [rows.min(), rows.min(), rows.max() + 1, rows.max() + 1]
    data = {"cam.png1": {"filename": "cam.png", "size": 1, "file_attributes": {},
                         "regions": [_region([int(x) for x in xs], [int(y) for y in ys])]}}
    (tmp_path / "in" / "via.json").write_text(json.dumps(data))
    out = tmp_path / "ds"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--split", "1", "0", "0"]
    assert main([*args, *EXACT]) == 0
    coco = _coco(out, "train")
    (image_id,) = coco.getImgIds()
    np.testing.assert_array_equal(_decoded(coco, image_id), shown[..., 0] == 255)
    png = read_channel_png(out / "images" / "train" / coco.loadImgs([image_id])[0]["file_name"], 3)
    np.testing.assert_array_equal(png, shown)


def test_a_json_file_that_does_not_parse_is_named(tmp_path, capsys):
    """Not skipped: it may hold the annotations of images that would silently go missing."""
    make_via(tmp_path / "in", VIA_IMAGES)
    (tmp_path / "in" / "more.json").write_text('{"x.png1": {"filename": "x.png", "reg')
    out = tmp_path / "ds"
    assert main(["--input", str(tmp_path / "in"), "--output", str(out), "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / 'in' / 'more.json'}: not valid JSON (")
    assert not out.exists()
