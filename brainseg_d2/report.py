"""Self-contained HTML report of a volume evaluation.

Reads what :class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator` writes
(``brainseg_cases.csv``: one row per volume x name x variant; and
``brainseg_summary.json``: flat metrics plus run information) and writes one
HTML file that needs nothing else: inline CSS, images embedded as base64
``data:`` URIs, no scripts, no external links. It holds

* the summary: every ``<metric>_<name>_<raw|post>`` key pivoted into a table of
  names x metrics with raw and post-processed values side by side, then the
  run information (post-processing settings, empty-slice policy, ...);
* the worst and best cases by post-processed WT Dice, with their overlay
  thumbnails when given (e.g. ``montage.png`` from :func:`render_case`);
* per-case tables (regions, then categories): Dice, IoU and HD95 per name,
  raw and post-processed side by side.

CLI: ``python -m brainseg_d2.report --eval-dir D --out report.html [--thumbs DIR]``
(also ``brainseg-report``). An existing ``--out`` is replaced only if it is a
report this module wrote (its ``<meta name="generator">`` says so), and never
when it is one of the inputs.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from brainseg_d2.labels import REGIONS
from brainseg_d2.utils.cli import ArgumentParser, print_error
from brainseg_d2.utils.paths import check_not_input

__all__ = ["find_thumbnails", "load_cases", "main", "write_report"]

CASES_FILE = "brainseg_cases.csv"  # same names as brainseg_d2.evaluation.evaluator
SUMMARY_FILE = "brainseg_summary.json"
VARIANTS = ("raw", "post")
#: Per-case columns: CSV field -> header, number format.
CASE_METRICS = {"dice": ("Dice", "{:.3f}"), "iou": ("IoU", "{:.3f}"), "hd95": ("HD95", "{:.2f}")}
NUMERIC_FIELDS = (
    "dice", "iou", "hd95", "sensitivity", "precision", "lesion_dice", "gt_voxels", "pred_voxels",
)  # fmt: skip
#: Ranking of worst/best cases: this region's post-processed Dice.
RANK_NAME = "WT"
#: Largest embedded thumbnail width in pixels (keeps the HTML small).
THUMB_WIDTH = 900
#: JPEG quality of embedded thumbnails (a tenth of the size of PNG for noisy MRI).
JPEG_QUALITY = 85
#: Summary metrics shown first, in this order; others follow as found.
SUMMARY_METRICS = (
    "volume_dice", "volume_iou", "volume_hd95", "volume_sensitivity", "volume_precision",
    "lesion_dice", "slice_dice", "slice_iou",
)  # fmt: skip
#: In every report's head; an existing file is replaced only if it holds this.
GENERATOR = '<meta name="generator" content="brainseg_d2.report">'
_SUMMARY_KEY = re.compile(r"^(?P<metric>[a-z]+_[a-z0-9]+)_(?P<name>.+)_(?P<variant>raw|post)$")

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px;
       color: #222; background: #fafafa; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.85em; background: #fff; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; text-align: center; }
td.id { text-align: left; font-family: monospace; }
td.better { color: #1a7f37; font-weight: bold; } td.worse { color: #c62828; }
.scroll { overflow-x: auto; }
.cases { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid #ccc; padding: 8px; }
figure img { display: block; max-width: 100%; image-rendering: pixelated; }
figcaption { font-size: 0.85em; margin-top: 4px; }
.note { color: #666; font-size: 0.85em; }
"""


def _float(value: str | None) -> float:
    if value is None or value.strip() == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def load_cases(cases_csv: str | Path) -> list[dict]:
    """Rows of ``brainseg_cases.csv`` with numeric fields as floats (empty -> NaN).

    Raises:
        ValueError: unreadable file or missing columns, naming them.
    """
    path = Path(cases_csv)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    missing = [c for c in ("volume_id", "group", "name", "variant", "dice") if c not in columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing} (has {columns})")
    for row in rows:
        for key in NUMERIC_FIELDS:
            if key in row:
                row[key] = _float(row[key])
    return rows


def _load_summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def find_thumbnails(folder: str | Path, volume_ids: Sequence[str]) -> dict[str, Path]:
    """Thumbnail per volume id in ``folder``: ``<id>.png``, ``<id>/montage.png`` or
    ``<id>_montage.png`` (the first that exists; the demo writes ``<id>/montage.png``)."""
    folder = Path(folder)
    found = {}
    for vid in volume_ids:
        for candidate in (f"{vid}.png", f"{vid}/montage.png", f"{vid}_montage.png"):
            if (folder / candidate).is_file():
                found[vid] = folder / candidate
                break
    return found


def _data_uri(path: Path, max_width: int = THUMB_WIDTH) -> str | None:
    """JPEG data URI of an image, shrunk to ``max_width``; None if unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return None
    if image.shape[1] > max_width:
        height = round(image.shape[0] * max_width / image.shape[1])
        image = cv2.resize(image, (max_width, height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _fmt(value, pattern: str = "{:.3f}") -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return pattern.format(v)
    return html.escape(str(value))


def _lower_is_better(metric: str) -> bool:
    return "hd95" in metric


def _compare_class(raw, post, metric: str, pattern: str) -> str:
    """CSS class of a post-processed cell: better / worse than raw, as displayed."""
    try:
        raw, post = float(raw), float(post)
    except (TypeError, ValueError):
        return ""
    if math.isnan(raw) or math.isnan(post) or _fmt(raw, pattern) == _fmt(post, pattern):
        return ""
    better = post < raw if _lower_is_better(metric) else post > raw
    return "better" if better else "worse"


def _cell(value, pattern: str, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{_fmt(value, pattern)}</td>"


def _pivot_cases(rows: Sequence[Mapping], group: str) -> tuple[list[str], dict]:
    """Names of ``group`` in file order, and (volume_id, name, variant) -> row."""
    names: list[str] = []
    table: dict[tuple[str, str, str], Mapping] = {}
    for row in rows:
        if row["group"] != group:
            continue
        if row["name"] not in names:
            names.append(row["name"])
        table[(row["volume_id"], row["name"], row["variant"])] = row
    return names, table


def _case_table(rows: Sequence[Mapping], group: str, volume_ids: Sequence[str]) -> str:
    names, table = _pivot_cases(rows, group)
    if not names:
        return ""
    patients = {r["volume_id"]: r.get("patient_id", "") for r in rows}
    show_patient = any(patients[v] and patients[v] != v for v in volume_ids)
    id_cols = 2 if show_patient else 1
    span = len(CASE_METRICS) * len(VARIANTS)
    head1 = f'<th rowspan="3" colspan="{id_cols}">case</th>' + "".join(
        f'<th colspan="{span}">{html.escape(n)}</th>' for n in names
    )
    head2 = "".join(
        f'<th colspan="{len(VARIANTS)}">{label}</th>'
        for _ in names
        for label, _ in CASE_METRICS.values()
    )
    head3 = "".join(f"<th>{v}</th>" for _ in names for _ in CASE_METRICS for v in VARIANTS)
    body = []
    for vid in volume_ids:
        cells = [f'<td class="id">{html.escape(vid)}</td>']
        if show_patient:
            cells.append(f'<td class="id">{html.escape(str(patients[vid]))}</td>')
        for name in names:
            raw, post = table.get((vid, name, "raw"), {}), table.get((vid, name, "post"), {})
            for metric, (_, pattern) in CASE_METRICS.items():
                r, p = raw.get(metric), post.get(metric)
                cells.append(_cell(r, pattern))
                cells.append(_cell(p, pattern, _compare_class(r, p, metric, pattern)))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="scroll"><table><thead>'
        f"<tr>{head1}</tr><tr>{head2}</tr><tr>{head3}</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def _order(item: str, preferred: Sequence[str]) -> tuple[int, int]:
    """Sort key: position in ``preferred``, unknown items after (stable)."""
    return (0, list(preferred).index(item)) if item in preferred else (1, 0)


def _summary_tables(summary: Mapping) -> str:
    metrics: list[str] = []
    names: list[str] = []
    values: dict[tuple[str, str, str], object] = {}
    other: dict[str, object] = {}
    for key, value in summary.items():
        m = _SUMMARY_KEY.match(key)
        if m is None or isinstance(value, (dict, list, str)):
            other[key] = value
            continue
        metric, name, variant = m["metric"], m["name"], m["variant"]
        metrics += [metric] if metric not in metrics else []
        names += [name] if name not in names else []
        values[(metric, name, variant)] = value
    metrics.sort(key=lambda m: _order(m, SUMMARY_METRICS))
    names.sort(key=lambda n: _order(n, (*REGIONS, "mean")))
    parts = []
    if metrics:
        head1 = '<th rowspan="2">name</th>' + "".join(
            f'<th colspan="2">{html.escape(m)}</th>' for m in metrics
        )
        head2 = "".join(f"<th>{v}</th>" for _ in metrics for v in VARIANTS)
        body = []
        for name in names:
            cells = [f'<td class="id">{html.escape(name)}</td>']
            for metric in metrics:
                pattern = "{:.2f}" if _lower_is_better(metric) else "{:.3f}"
                r = values.get((metric, name, "raw"))
                p = values.get((metric, name, "post"))
                cells.append(_cell(r, pattern))
                cells.append(_cell(p, pattern, _compare_class(r, p, metric, pattern)))
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(
            '<div class="scroll"><table><thead>'
            f"<tr>{head1}</tr><tr>{head2}</tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table></div>"
        )
    if other:
        rows = []
        for key, value in other.items():
            if isinstance(value, Mapping):
                shown = ", ".join(
                    f"{html.escape(str(k))}={_fmt(v, '{:g}')}" for k, v in value.items()
                )
            else:
                shown = _fmt(value, "{:.4g}")
            rows.append(f'<tr><td class="id">{html.escape(str(key))}</td>'
                        f'<td class="id">{shown}</td></tr>')  # fmt: skip
        parts.append("<table><tbody>" + "".join(rows) + "</tbody></table>")
    return "".join(parts)


def _rank(rows: Sequence[Mapping]) -> tuple[str, list[tuple[str, float]]]:
    """(ranking name, [(volume_id, post Dice)] ascending, NaN last)."""
    regions = [r for r in rows if r["group"] == "region" and r["variant"] == "post"]
    pool = regions or [r for r in rows if r["variant"] == "post"]
    if not pool:
        return "", []
    names = [r["name"] for r in pool]
    name = RANK_NAME if RANK_NAME in names else names[0]
    scores = {r["volume_id"]: r["dice"] for r in pool if r["name"] == name}
    order = sorted(scores.items(), key=lambda kv: (math.isnan(kv[1]), kv[1], kv[0]))
    return name, order


def _extremes(rows: Sequence[Mapping], thumbnails: Mapping[str, Path], num: int) -> tuple[str, str]:
    name, order = _rank(rows)
    ranked = [kv for kv in order if not math.isnan(kv[1])]
    if not ranked:
        return "", ""
    k = min(num, math.ceil(len(ranked) / 2))
    worst = ranked[:k]
    best = [kv for kv in reversed(ranked) if kv not in worst][:num]

    def figures(items: Sequence[tuple[str, float]]) -> str:
        out = []
        for vid, score in items:
            caption = f"{html.escape(vid)}: {html.escape(name)} Dice (post) {_fmt(score)}"
            uri = _data_uri(Path(thumbnails[vid])) if vid in thumbnails else None
            img = f'<img src="{uri}" alt="{html.escape(vid)}">' if uri else ""
            if not img:
                caption += ' <span class="note">(no thumbnail)</span>'
            out.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
        return '<div class="cases">' + "".join(out) + "</div>"

    return figures(worst), figures(best)


def write_report(
    source: str | Path | tuple[str | Path, str | Path],
    out_html: str | Path,
    thumbnails: Mapping[str, str | Path] | None = None,
    title: str = "Brain tumour segmentation: evaluation report",
    *,
    num_extremes: int = 3,
) -> Path:
    """Write a self-contained HTML report of an evaluation.

    Args:
        source: the evaluator's output folder (holding ``brainseg_cases.csv``
            and ``brainseg_summary.json``), or a ``(cases_csv, summary_json)`` pair.
        out_html: file to write (parent folders are created).
        thumbnails: volume id -> image file (PNG/JPEG) shown for the worst and
            best cases; embedded as JPEG data URIs, shrunk to ``THUMB_WIDTH`` px.
        title: page title and heading (escaped).
        num_extremes: number of worst and of best cases shown.

    Returns:
        ``out_html`` as a Path.

    Raises:
        ValueError: missing or unreadable inputs (the message names the file).
    """
    if isinstance(source, (tuple, list)):
        cases_csv, summary_json = (Path(p) for p in source)
    else:
        cases_csv, summary_json = Path(source) / CASES_FILE, Path(source) / SUMMARY_FILE
    out = Path(out_html)
    check_replaceable_report(out, [cases_csv, summary_json, *(thumbnails or {}).values()])
    rows = load_cases(cases_csv)
    summary = _load_summary(summary_json)
    thumbnails = {str(k): Path(v) for k, v in (thumbnails or {}).items()}
    volume_ids = sorted({r["volume_id"] for r in rows})
    rank_name, _ = _rank(rows)
    worst, best = _extremes(rows, thumbnails, num_extremes)
    regions = _case_table(rows, "region", volume_ids)
    categories = _case_table(rows, "category", volume_ids)
    esc_title = html.escape(title)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8">{GENERATOR}',
        f"<title>{esc_title}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc_title}</h1>",
        f'<p class="note">{len(volume_ids)} cases from {html.escape(cases_csv.name)} and '
        f"{html.escape(summary_json.name)}. Raw: score threshold only; post: after "
        "post-processing. A post-processed value is green when better than raw, red when "
        "worse. HD95 in mm. – means undefined.</p>",
        "<h2>Summary</h2>",
        _summary_tables(summary),
    ]
    if worst:
        parts += [
            f"<h2>Worst cases ({html.escape(rank_name)} Dice, post-processed)</h2>",
            worst,
            f"<h2>Best cases ({html.escape(rank_name)} Dice, post-processed)</h2>",
            best,
        ]
    if regions:
        parts += ["<h2>Per case: regions</h2>", regions]
    if categories:
        parts += ["<h2>Per case: categories</h2>", categories]
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text("\n".join(parts), encoding="utf-8")
        os.replace(tmp, out)  # complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    return out


def check_replaceable_report(out: Path, inputs: Sequence[str | Path]) -> None:
    """Raise unless ``out`` may be written: not an input, and new or a report of ours.

    Raises:
        ValueError: one line naming ``out`` (and the input it would replace).
    """
    check_not_input(out, inputs, "report")
    if not os.path.lexists(out):
        return
    if not out.is_file() or out.is_symlink():
        raise ValueError(f"report {out} exists and is not a file; choose another --out")
    with open(out, "rb") as f:
        head = f.read(4096)
    if GENERATOR.encode() not in head:
        raise ValueError(
            f"{out} exists and is not a report written by brainseg_d2.report; nothing was "
            "replaced: choose another --out"
        )


def build_parser() -> ArgumentParser:
    """Command-line interface of ``brainseg-report``."""
    p = ArgumentParser(
        prog="brainseg-report",
        description="Write a self-contained HTML report of a brainseg evaluation.",
    )
    p.add_argument(
        "--eval-dir",
        required=True,
        type=Path,
        help=f"evaluator output folder ({CASES_FILE}, {SUMMARY_FILE})",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="HTML file to write (an existing file only if it is an earlier report)",
    )
    p.add_argument(
        "--thumbs",
        type=Path,
        help="folder of overlays: <id>.png, <id>/montage.png (demo output) or <id>_montage.png",
    )
    p.add_argument(
        "--title",
        default="Brain tumour segmentation: evaluation report",
        help="page title and heading",
    )
    p.add_argument(
        "--num-extremes", type=int, default=3, help="number of worst and of best cases shown"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        thumbs = None
        if args.thumbs is not None:
            if not args.thumbs.is_dir():
                raise ValueError(f"--thumbs {args.thumbs} is not a folder")
            ids = sorted({r["volume_id"] for r in load_cases(args.eval_dir / CASES_FILE)})
            thumbs = find_thumbnails(args.thumbs, ids)
        out = write_report(
            args.eval_dir, args.out, thumbs, args.title, num_extremes=args.num_extremes
        )
    except ValueError as e:
        print_error(e)
        return 2
    except OSError as e:
        print_error(e)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
