"""The evaluation report (brainseg_d2.report): n beside every mean, both-empty scores and the
HD95 penalty flagged, no duplicated rows, a Dice plot, links, a template file."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from brainseg_d2.cli.report import main
from brainseg_d2.evaluation.nifti_evaluation import evaluate_folders
from brainseg_d2.evaluation.results_files import (
    EVALUATOR_CASES_COLUMNS,
    EVALUATOR_FILES,
    REPORT_FILE,
    write_table,
)
from brainseg_d2.evaluation.volume_scores import evaluate_volume
from brainseg_d2.report import GENERATOR, TEMPLATE, write_report

REPO = Path(__file__).resolve().parents[2]


def _blob(shape, box) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[box] = True
    return m


def _evaluator_rows() -> list[dict]:
    """Evaluator rows (regions target) of four volumes, raw and post: a good one, a
    shifted one, one whose ET is never predicted, one without tumour (both empty)."""
    shape = (3, 6, 12, 12)
    rows = []
    for i, vid in enumerate(("BraTS_001", "BraTS_002", "BraTS_003", "<weird&id>")):
        gt = np.zeros(shape, bool)
        if i < 3:
            gt[0] = _blob(shape[1:], np.s_[1:5, 2:9, 2:9])
            gt[1] = _blob(shape[1:], np.s_[2:4, 3:7, 3:7])
            gt[2] = _blob(shape[1:], np.s_[2:4, 4:6, 4:6])
        pred = gt.copy()
        if i == 1:
            pred = np.roll(gt, 1, axis=3)
        if i == 2:
            pred[2] = False  # ET missed: HD95 is the penalty
        for variant, shift in (("raw", 1), ("post", 0)):
            masks = np.roll(pred, shift, axis=2) if variant == "raw" and i == 0 else pred
            for row in evaluate_volume(masks, gt, (2.0, 1.0, 1.0), "regions"):
                rows.append({**row, "volume_id": vid, "patient_id": vid, "variant": variant,
                             "gt_source": "original"})  # fmt: skip
    return rows


@pytest.fixture
def eval_dir(tmp_path):
    folder = tmp_path / "inference"
    folder.mkdir()
    write_table(folder / EVALUATOR_FILES.cases, _evaluator_rows(), EVALUATOR_CASES_COLUMNS)
    (folder / "brainseg_config.yaml").write_text("MODEL: {}\n")
    summary = {
        "volume_dice_WT_post": 0.9, "dataset_name": "brats_val", "target": "regions",
        "num_volumes": 4, "empty_slice_policy": "exclude",
        "postprocess": {"ENABLED": True, "MIN_VOLUME_3D": [10]},
        "ground_truth": {"original": 4},
        "settings": {"hd95_penalty_mm": 374.0, "empty_score": 1.0,
                     "lesion_dilation_iters": 3, "lesion_min_volume_mm3": 50.0},
        "run": {"model": "BrainSegRCNN, build_resnet_fpn_backbone (ResNet-50)",
                "weights": "output/model_final.pth", "config": "brainseg_config.yaml",
                "versions": {"brainseg_d2": "0.1.0"}, "date": "2025-01-02T03:04:05"},
    }  # fmt: skip
    (folder / EVALUATOR_FILES.summary).write_text(json.dumps(summary))
    return folder


class _Page(HTMLParser):
    """Tags, attributes, text, and the rows of every table as lists of cell texts."""

    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str]] = []
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(k, v or "") for k, v in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _summary_row(page: _Page, name: str, variant: str) -> list[str]:
    (table,) = [t for t in page.tables if t and "cases with it" in t[0]]
    return next(r for r in table[2:] if r[:2] == [name, variant])


def test_every_mean_has_its_n_and_the_brats_mean_beside_it(eval_dir, tmp_path):
    out = write_report(eval_dir, tmp_path / "r" / "report.html", title="Val <run>")
    page = _parse(out)
    html = out.read_text(encoding="utf-8")
    assert "Val <run>" in " ".join(page.text) and "Val &lt;run&gt;" in html
    wt = _summary_row(page, "WT", "post")
    # n = 3 volumes hold WT; N = 4 volumes; one of them both empty.
    assert wt[2] == "3" and wt[10] == "4" and wt[13] == "1"
    rows = _evaluator_rows()
    dice = [r["dice"] for r in rows if r["name"] == "WT" and r["variant"] == "post"]
    assert wt[3] == f"{np.mean(dice[:3]):.3f}"  # over the n volumes holding WT
    assert wt[11] == f"{np.mean(dice):.3f}"  # BraTS: over all N, both empty scores 1
    for vid in ("BraTS_001", "BraTS_002", "BraTS_003", "<weird&id>"):
        assert vid in page.text
    assert "&lt;weird&amp;id&gt;" in html


def test_a_mean_that_leaves_out_undefined_scores_says_over_how_many(eval_dir, tmp_path):
    """With EVAL.EMPTY_SCORE nan a both-empty Dice is undefined: the all-cases mean is over
    the three defined ones, and the cell says so instead of passing for a mean over N."""
    rows = [dict(r, dice=math.nan) if r["both_empty"] else r for r in _evaluator_rows()]
    write_table(eval_dir / EVALUATOR_FILES.cases, rows, EVALUATOR_CASES_COLUMNS)
    page = _parse(write_report(eval_dir, tmp_path / "report.html"))
    wt = _summary_row(page, "WT", "post")
    dice = [r["dice"] for r in rows if r["name"] == "WT" and r["variant"] == "post"]
    assert wt[10] == "4" and wt[11] == f"{np.nanmean(dice):.3f} [3]"
    assert "mean over 3 of 4 cases; 1 undefined (NaN) left out" in [
        v for k, v in page.attrs if k == "title"
    ]
    assert "[" not in wt[3]  # the cases with WT all have a Dice


def test_penalty_and_both_empty_are_labelled(eval_dir, tmp_path):
    page = _parse(write_report(eval_dir, tmp_path / "report.html"))
    et = _summary_row(page, "ET", "post")
    assert et[8].endswith("(1)")  # the missed ET of BraTS_003: one penalty in the mean
    text = " ".join(page.text)
    assert "374 (penalty)" in text and "a penalty, not a distance" in text
    (et_cases,) = [t for t in page.tables if t and t[0][0] == "case"
                   and any(r[0] == "BraTS_003" and "374 (penalty)" in r for r in t)]  # fmt: skip
    classes = [v for k, v in page.attrs if k == "class"]
    assert "penalty" in classes and "empty" in classes
    assert "reference and prediction empty" in [v for k, v in page.attrs if k == "title"]
    assert et_cases


def test_a_case_lesion_hd95_with_penalties_says_how_many_in_its_text(eval_dir, tmp_path):
    """Not only by colour: "(k)" after the value, as in the summary."""
    rows = _evaluator_rows()
    for r in rows:
        if (r["volume_id"], r["name"], r["variant"]) == ("BraTS_002", "WT", "post"):
            r.update(lesion_fn=1.0, lesion_fp=1.0, lesion_hd95=250.0)
    write_table(eval_dir / EVALUATOR_FILES.cases, rows, EVALUATOR_CASES_COLUMNS)
    page = _parse(write_report(eval_dir, tmp_path / "report.html"))
    (wt_cases,) = [t for t in page.tables if t and t[0][0] == "case"
                   and any(r[0] == "BraTS_002" and "250.00 (2)" in r for r in t)]  # fmt: skip
    (other,) = [r for r in wt_cases if r[0] == "BraTS_001"]
    assert not any(c.endswith(")") for c in other[1:])


def test_no_duplicated_rows_and_tables_per_name(eval_dir, tmp_path):
    page = _parse(write_report(eval_dir, tmp_path / "report.html"))
    (summary,) = [t for t in page.tables if t and "cases with it" in t[0]]
    names = [(r[0], r[1]) for r in summary[2:]]
    assert names == [(n, v) for n in ("WT", "TC", "ET") for v in ("raw", "post")]
    assert not any("cat_" in t or "(category)" in t for t in page.text)
    per_case = [t for t in page.tables if t and t[0][0] == "case"]
    assert len(per_case) == 3  # one per name, not one wide table
    assert all(len(row) <= 15 for t in page.tables for row in t)  # fits the page


def test_run_information_links_and_pictures(eval_dir, tmp_path):
    thumbs = {}
    for i, vid in enumerate(("BraTS_002", "BraTS_003")):  # worst and best holding WT
        thumbs[vid] = tmp_path / f"thumb{i}.png"
        cv2.imwrite(str(thumbs[vid]), np.full((30, 40, 3), 60 * i, np.uint8))
    nifti = tmp_path / "predictions" / "BraTS_001_pred.nii.gz"
    nifti.parent.mkdir()
    nifti.write_bytes(b"")
    out = write_report(eval_dir, tmp_path / "report.html", thumbs, num_extremes=1,
                       links={"BraTS_001": {"prediction": nifti}})  # fmt: skip
    page = _parse(out)
    text = " ".join(page.text)
    for expected in ("BrainSegRCNN", "output/model_final.pth", "2025-01-02T03:04:05",
                     "brainseg_d2=0.1.0", "MIN_VOLUME_3D=[10]", "original=4"):  # fmt: skip
        assert expected in text, expected
    hrefs = [v for k, v in page.attrs if k == "href"]
    assert "inference/brainseg_config.yaml" in hrefs and "inference/brainseg_cases.csv" in hrefs
    assert "predictions/BraTS_001_pred.nii.gz" in hrefs
    sources = [v for k, v in page.attrs if k == "src"]
    assert len(sources) == 3  # the Dice plot, the worst and the best case
    assert all(s.startswith("data:image/") and ";base64," in s for s in sources)
    # Nothing is loaded from elsewhere; links are relative files.
    html = out.read_text(encoding="utf-8")
    without_data = re.sub(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+", "", html)
    assert "//" not in without_data and "url(" not in without_data
    assert not {"script", "link", "iframe"} & set(page.tags)
    assert all(not h.startswith(("/", "http", "file:")) for h in hrefs)


def test_baseline_beside_the_model(eval_dir, tmp_path):
    rows = [dict(r, dice=r["dice"] / 2) for r in _evaluator_rows()]
    baseline = tmp_path / "baseline_cases.csv"
    write_table(baseline, rows, EVALUATOR_CASES_COLUMNS)
    page = _parse(write_report(eval_dir, tmp_path / "report.html", baseline=baseline,
                               baseline_name="FLAIR > mean + 2 SD"))  # fmt: skip
    assert "Against the baseline: FLAIR > mean + 2 SD" in " ".join(page.text)
    (table,) = [t for t in page.tables if t and t[1][:2] == ["model", "baseline"]]
    wt = next(r for r in table[2:] if r[0] == "WT")
    assert float(wt[3]) == pytest.approx(float(wt[2]) / 2, abs=1e-3)


def test_brainseg_evaluate_writes_the_same_report(tmp_path):
    """Missing predictions flagged, files linked, lesion volumes in mL."""
    shape = (6, 10, 12)
    truth = np.zeros(shape, np.uint8)
    truth[1:5, 2:8, 2:9] = 2
    truth[2:4, 3:6, 3:7] = 3
    for cid in ("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"):
        path = tmp_path / "ref" / f"{cid}-seg.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(truth), str(path))
    (tmp_path / "pred").mkdir()
    pred = tmp_path / "pred" / "BraTS-GLI-00001-000.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(truth), str(pred))
    evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", progress=False)
    page = _parse(tmp_path / "out" / REPORT_FILE)
    text = " ".join(page.text)
    assert "missing" in text and "1 (scored Dice 0, HD95 374 mm)" in text
    hrefs = [v for k, v in page.attrs if k == "href"]
    assert "../pred/BraTS-GLI-00001-000.nii.gz" in hrefs
    assert "../ref/BraTS-GLI-00002-000-seg.nii.gz" in hrefs and "cases.csv" in hrefs
    wt = next(r for t in page.tables if t and t[0][0] == "case" for r in t
              if r[0] == "BraTS-GLI-00001-000")  # fmt: skip
    assert wt[1] == f"{(truth > 0).sum() / 1000:.3g}" == wt[2]  # ref mL, its one lesion mL


def test_the_page_comes_from_the_template_file(eval_dir, tmp_path):
    package = REPO / "brainseg_d2" / "templates" / TEMPLATE
    assert package.is_file()
    assert "templates/*.j2" in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    for module in (REPO / "brainseg_d2" / "report").glob("*.py"):
        source = module.read_text(encoding="utf-8")
        assert "<table" not in source and "<td" not in source, module  # no HTML built in Python
    own = tmp_path / "mine.html.j2"
    own.write_text("<html><head>{{ generator }}</head><body>{{ title }}: "
                   "{% for r in overlap %}{{ r.name }}/{{ r.variant }} {% endfor %}</body></html>")
    out = write_report(eval_dir, tmp_path / "own.html", title="<T>", template=own)
    assert out.read_text(encoding="utf-8") == (f"<html><head>{GENERATOR}</head><body>&lt;T&gt;: "
                               "WT/raw WT/post TC/raw TC/post ET/raw ET/post </body></html>")
    bad = tmp_path / "bad.html.j2"
    bad.write_text("<html>{{ title }}</html>")
    with pytest.raises(ValueError, match="generator"):
        write_report(eval_dir, tmp_path / "bad.html", template=bad)
    assert not (tmp_path / "bad.html").exists()


def test_reads_tables_written_before_phase_2(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / EVALUATOR_FILES.cases).write_text(
        "volume_id,patient_id,group,name,variant,dice,iou,hd95,gt_voxels,pred_voxels\n"
        "A,A,region,WT,raw,0.5,0.3,4,10,12\nA,A,region,WT,post,0.6,0.4,3,10,11\n"
    )
    (folder / EVALUATOR_FILES.summary).write_text(json.dumps({"volume_dice_WT_post": 0.6}))
    page = _parse(write_report(folder, tmp_path / "old.html"))
    assert _summary_row(page, "WT", "post")[2:4] == ["1", "0.600"]


def test_cli_takes_the_old_spellings_for_one_release(eval_dir, tmp_path, capsys):
    out = tmp_path / "old.html"
    assert main(["--eval-dir", str(eval_dir), "--out", str(out)]) == 0
    assert out.is_file()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "--eval-dir is deprecated, use --input" in err[0]
    assert "--out is deprecated, use --output" in err[1]


def test_cli_names_a_missing_input_folder(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / 'nope'} is not a folder" in err[0]
    assert not (tmp_path / "r.html").exists()


def test_cli_refuses_a_negative_number_of_extremes(eval_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["--input", str(eval_dir), "--output", str(out), "--num-extremes", "-1"]) == 2
    assert "--num-extremes must be >= 0, got -1" in capsys.readouterr().err
    assert not out.exists()
    assert main(["--input", str(eval_dir), "--output", str(out), "--num-extremes", "0"]) == 0


def test_cli_finds_demo_montages_as_thumbnails(eval_dir, tmp_path, capsys):
    thumbs = tmp_path / "demo_out"
    (thumbs / "BraTS_002").mkdir(parents=True)
    cv2.imwrite(str(thumbs / "BraTS_002" / "montage.png"), np.zeros((8, 8, 3), np.uint8))
    out = tmp_path / "cli.html"
    assert main(["--input", str(eval_dir), "--output", str(out), "--thumbs", str(thumbs)]) == 0
    assert out.read_text(encoding="utf-8").count("data:image/jpeg") == 1
    assert main(["--input", str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
