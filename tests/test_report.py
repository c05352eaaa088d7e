"""Self-contained HTML report (brainseg_d2.report)."""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from brainseg_d2.report import main, write_report

COLUMNS = (
    "volume_id,patient_id,group,name,variant,dice,iou,hd95,sensitivity,precision,"
    "lesion_dice,gt_voxels,pred_voxels"
).split(",")
#: volume id -> post-processed WT Dice; raw is 0.05 lower.
WT_POST = {"BraTS_001": 0.9123, "BraTS_002": 0.4567, "BraTS_003": 0.7788, "<weird&id>": 0.6012}
REGIONS = ("WT", "TC", "ET")
CATEGORIES = ("necrotic", "edema", "enhancing")


def _rows() -> list[dict]:
    rows = []
    for i, (vid, wt) in enumerate(WT_POST.items()):
        for group, names in (("region", REGIONS), ("category", CATEGORIES)):
            for k, name in enumerate(names):
                for variant, shift in (("raw", -0.05), ("post", 0.0)):
                    dice = wt - 0.1 * k + shift
                    rows.append({
                        "volume_id": vid, "patient_id": vid, "group": group, "name": name,
                        "variant": variant, "dice": dice, "iou": dice / (2 - dice),
                        "hd95": "inf" if (i, k) == (1, 2) else 3.0 + k - shift * 10,
                        "sensitivity": 0.9, "precision": "", "lesion_dice": dice,
                        "gt_voxels": 1000, "pred_voxels": 900,
                    })  # fmt: skip
    return rows


@pytest.fixture
def eval_dir(tmp_path):
    folder = tmp_path / "inference"
    folder.mkdir()
    with (folder / "brainseg_cases.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(_rows())
    summary = {
        "volume_dice_WT_raw": 0.6372, "volume_dice_WT_post": 0.6872,
        "volume_hd95_WT_raw": 7.25, "volume_hd95_WT_post": 4.5,
        "volume_dice_cat_edema_post": 0.5872, "volume_dice_mean_post": None,
        "empty_slice_policy": "exclude", "num_volumes": 4,
        "postprocess": {"ENABLED": True, "MIN_VOLUME_3D": 10},
    }  # fmt: skip
    (folder / "brainseg_summary.json").write_text(json.dumps(summary))
    return folder


def _thumbs(tmp_path) -> dict:
    out = {}
    for i, vid in enumerate(WT_POST):
        path = tmp_path / f"thumb{i}.png"
        cv2.imwrite(str(path), np.full((30, 40, 3), 60 * i, np.uint8))
        out[vid] = path
    return out


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]

    def handle_data(self, data):
        self.text.append(data)


def _parse(path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_report_lists_every_case_and_its_numbers(eval_dir, tmp_path):
    out = write_report(eval_dir, tmp_path / "r" / "report.html", title="Val <run>")
    page = _parse(out)
    text = " ".join(page.text)
    for vid in WT_POST:
        assert vid in text  # unescaped by the parser: the raw file holds &lt;weird&amp;id&gt;
    assert "&lt;weird&amp;id&gt;" in out.read_text(encoding="utf-8")
    assert "Val <run>" in text and "<run>" not in out.read_text(encoding="utf-8")
    for wt in WT_POST.values():
        assert f"{wt:.3f}" in text and f"{wt - 0.05:.3f}" in text  # post and raw
    assert "0.687" in text and "4.50" in text and "∞" in text  # summary, HD95, infinite
    assert "exclude" in text and "MIN_VOLUME_3D=10" in text
    assert page.tags.count("table") >= 3  # summary, run info, regions, categories


def test_report_embeds_thumbnails_of_worst_and_best_as_data_uris(eval_dir, tmp_path):
    out = write_report(eval_dir, tmp_path / "report.html", _thumbs(tmp_path), num_extremes=1)
    page = _parse(out)
    sources = [v for k, v in page.attrs if k == "src"]
    assert len(sources) == 2  # worst (BraTS_002) and best (BraTS_001)
    assert all(s.startswith("data:image/") and ";base64," in s for s in sources)
    alts = [v for k, v in page.attrs if k == "alt"]
    assert alts == ["BraTS_002", "BraTS_001"]


def test_report_references_nothing_outside_the_file(eval_dir, tmp_path):
    out = write_report(eval_dir, tmp_path / "report.html", _thumbs(tmp_path))
    page = _parse(out)
    html = out.read_text(encoding="utf-8")
    without_data = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", html)
    assert "//" not in without_data and "url(" not in without_data
    assert not {"script", "link", "iframe"} & set(page.tags)
    for key, value in page.attrs:
        if key in ("src", "href"):
            assert value.startswith("data:"), (key, value[:40])


def test_report_accepts_a_file_pair_and_names_missing_files(eval_dir, tmp_path):
    out = write_report(
        (eval_dir / "brainseg_cases.csv", eval_dir / "brainseg_summary.json"),
        tmp_path / "pair.html",
    )
    assert out.is_file()
    with pytest.raises(ValueError, match="brainseg_cases.csv"):
        write_report(tmp_path / "nowhere", tmp_path / "x.html")


def test_cli_finds_demo_montages_as_thumbnails(eval_dir, tmp_path, capsys):
    thumbs = tmp_path / "demo_out"
    (thumbs / "BraTS_002").mkdir(parents=True)
    cv2.imwrite(str(thumbs / "BraTS_002" / "montage.png"), np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "cli.html"
    assert main(["--eval-dir", str(eval_dir), "--out", str(out), "--thumbs", str(thumbs)]) == 0
    assert out.read_text(encoding="utf-8").count("data:image/") == 1
    assert main(["--eval-dir", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
