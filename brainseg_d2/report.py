"""HTML report of an evaluation, for the Detectron2 evaluator's folder and ``brainseg-evaluate``'s.

Reads the per-case table, the summary and the per-lesion table that either entry
point writes (:class:`~brainseg_d2.evaluation.evaluator.BrainSegEvaluator`:
``brainseg_cases.csv``, ``brainseg_summary.json``, ``brainseg_lesions.csv``, one
row per volume x name x variant; ``brainseg-evaluate``: ``cases.csv``,
``summary.json``, ``lesions.csv``, one row per case x name), aggregates the rows
with the function both entry points use
(:func:`~brainseg_d2.evaluation.case_scores.summarize_cases`), and renders the
Jinja2 template ``brainseg_d2/templates/report.html.j2`` (autoescaped; no HTML is
built here). The page is made so that it cannot mislead:

* every mean has its *n* beside it: the cases whose reference holds the name,
  and the BraTS-convention mean over all *N* cases next to it;
* both-empty scores (Dice 1 by convention) are flagged, and the HD95 penalty
  (374 mm, :data:`~brainseg_d2.evaluation.metrics.HD95_PENALTY_MM`) is labelled as
  a penalty wherever it enters a number;
* a per-name Dice distribution plot (box and points, matplotlib, embedded PNG);
* reference and predicted volumes and reference lesion volumes in mL;
* a baseline's numbers beside the model's when one is given (the demo's FLAIR
  baseline);
* links to the prediction NIfTIs, pictures, CSVs, summary and config (relative
  to the report), and the run: model, config, weights, versions and date;
* regions first, then only the classes/categories that are not a region (no
  duplicated rows), one per-case table per name, so tables fit the page.

Pictures (worst/best case thumbnails, the plot) are embedded as ``data:`` URIs;
the page loads nothing from anywhere else.

CLI: ``brainseg-report --eval-dir D --out report.html [--thumbs DIR] [--baseline CSV]``
(``brainseg-evaluate`` writes ``report.html`` into its output folder itself). An
existing ``--out`` is replaced only if it is a report this module wrote (its
``<meta name="generator">`` says so), and never when it is one of the inputs.
"""

from __future__ import annotations

import base64
import io
import math
import os
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np

from brainseg_d2.evaluation.results_files import (
    EVALUATOR_FILES,
    NIFTI_FILES,
    FoundResults,
    find_result_files,
    load_cases,
    load_lesion_volumes,
    load_summary,
    to_float,
)
from brainseg_d2.utils.cli import ArgumentParser, print_error
from brainseg_d2.utils.paths import check_not_input

__all__ = [
    "GENERATOR",
    "TEMPLATE",
    "check_replaceable_report",
    "find_thumbnails",
    "main",
    "write_report",
]

#: The template, package data of brainseg_d2.
TEMPLATE = "report.html.j2"
#: In every report's head (the template writes it); an existing file is replaced
#: only if it holds this.
GENERATOR = '<meta name="generator" content="brainseg_d2.report">'
#: Ranking of worst/best cases: this region's Dice (last variant).
RANK_NAME = "WT"
#: Largest embedded thumbnail width in pixels (keeps the HTML small).
THUMB_WIDTH = 900
#: JPEG quality of embedded thumbnails (a tenth of the size of PNG for noisy MRI).
JPEG_QUALITY = 85
#: Reference lesions listed per case and name (largest first).
MAX_LESIONS_SHOWN = 4
_DEFAULT_PENALTY = 374.0  # HD95_PENALTY_MM; the summary's own value wins
_DEFAULT_TITLE = "Brain tumour segmentation: evaluation report"


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


# ---------------------------------------------------------------------------
# formatting: cells are {text, cls, tip}; the template renders them
# ---------------------------------------------------------------------------


def _fmt(value, pattern: str = "{:.3f}") -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        return pattern.format(v)
    return str(value)


def _cell(value, pattern: str = "{:.3f}", cls: str = "", tip: str = "") -> dict:
    return {"text": _fmt(value, pattern), "cls": cls, "tip": tip}


def _count(value: int) -> dict:
    return {"text": str(int(value)), "cls": "n", "tip": ""}


def _has(row: Mapping, field: str) -> bool:
    value = row.get(field)
    return isinstance(value, float) and value > 0


def _hd95_is_penalty(row: Mapping) -> bool:
    """The row's HD95 is the penalty: a missing prediction, or exactly one side empty."""
    if row.get("missing"):
        return True
    ref, pred = row.get("ref_voxels"), row.get("pred_voxels")
    if not (isinstance(ref, float) and isinstance(pred, float)) or math.isnan(ref + pred):
        return False
    return (ref > 0) != (pred > 0)


def _sq_hd95_is_penalty(row: Mapping) -> bool:
    """The row's BraTS 2024+ SQ HD95 is the penalty: lesions exist but none is matched."""
    if row.get("missing"):
        return True
    tp = row.get("panoptic_tp", math.nan)
    others = row.get("panoptic_fn", math.nan) + row.get("panoptic_fp", math.nan)
    return tp == 0 and others > 0


def _lesion_penalties(row: Mapping) -> int:
    """Penalty values inside a row's BraTS 2023 lesion-wise HD95 (missed + false lesions)."""
    if row.get("missing"):
        return 1
    fn, fp = row.get("lesion_fn", math.nan), row.get("lesion_fp", math.nan)
    return 0 if math.isnan(fn) or math.isnan(fp) else int(fn + fp)


def _mean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return float(arr.mean()) if arr.size else math.nan


def _hd95_cell(rows: Sequence[Mapping], penalty: float) -> dict:
    k = sum(1 for r in rows if _hd95_is_penalty(r))
    cell = _cell(_mean([r["hd95"] for r in rows]), "{:.2f}")
    if k:
        cell.update(
            text=f"{cell['text']} ({k})",
            cls="penalty",
            tip=f"includes {k} penalty value(s) of {penalty:g} mm (one side empty)",
        )
    return cell


def _case_hd95(row: Mapping, field: str, penalty: float) -> dict:
    value = row.get(field, math.nan)
    if row.get("missing"):
        return _cell(value, "{:.2f}", "missing", "no prediction: scored the penalty")
    if field == "hd95" and _hd95_is_penalty(row):
        return {"text": f"{_fmt(value, '{:g}')} (penalty)", "cls": "penalty",
                "tip": "one side is empty: a penalty, not a distance"}  # fmt: skip
    if field == "lesion_hd95" and _lesion_penalties(row):
        k = _lesion_penalties(row)
        return _cell(value, "{:.2f}", "penalty",
                     f"includes {k} missed/false lesion(s) at {penalty:g} mm (penalty)")
    return _cell(value, "{:.2f}")


def _case_score(row: Mapping, field: str) -> dict:
    if row.get("missing"):
        return _cell(row.get(field), cls="missing", tip="no prediction: scored 0")
    if row.get("both_empty") and field in ("dice", "iou", "lesion_dice"):
        return _cell(row.get(field), cls="empty", tip="reference and prediction empty")
    return _cell(row.get(field))


# ---------------------------------------------------------------------------
# the page's parts
# ---------------------------------------------------------------------------


def _names(rows: Sequence[Mapping]) -> list[tuple[str, str]]:
    """(group, name) in first-seen order, regions first."""
    seen: list[tuple[str, str]] = []
    for row in rows:
        key = (row["group"], row["name"])
        if key not in seen:
            seen.append(key)
    return sorted(seen, key=lambda k: k[0] != "region")


def _variants(rows: Sequence[Mapping]) -> list[str]:
    out: list[str] = []
    for row in rows:
        if row["variant"] not in out:
            out.append(row["variant"])
    return sorted(out, key=lambda v: {"raw": 0, "post": 1}.get(v, 2))


def _grouped(rows: Sequence[Mapping]) -> dict[tuple[str, str, str], list[Mapping]]:
    out: dict[tuple[str, str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        out[(row["group"], row["name"], row["variant"])].append(row)
    return out


def _overlap_rows(rows: Sequence[Mapping], penalty: float) -> list[dict]:
    out = []
    groups = _grouped(rows)
    for group, name in _names(rows):
        for variant in _variants(rows):
            items = groups.get((group, name, variant), [])
            if not items:
                continue
            exists = [r for r in items if _has(r, "ref_voxels")]
            cells = [_count(len(exists))]
            for field in ("dice", "iou", "sensitivity", "specificity", "precision"):
                cells.append(_cell(_mean([r[field] for r in exists])))
            cells.append(_hd95_cell(exists, penalty))
            cells.append(_cell(_mean([r["volume_diff_ml"] for r in exists]), "{:+.2f}"))
            n_empty = sum(1 for r in items if r.get("both_empty"))
            n_missing = sum(1 for r in items if r.get("missing"))
            cells += [
                _count(len(items)),
                _cell(_mean([r["dice"] for r in items])),
                _hd95_cell(items, penalty),
                _cell(n_empty, cls="empty" if n_empty else ""),
                _cell(n_missing, cls="missing" if n_missing else ""),
            ]  # fmt: skip
            out.append({"name": name, "variant": variant, "cells": cells})
    return out


def _lesion_rows(rows: Sequence[Mapping], penalty: float) -> list[dict]:
    out = []
    groups = _grouped(rows)
    for group, name in _names(rows):
        for variant in _variants(rows):
            items = groups.get((group, name, variant), [])
            if not items:
                continue
            k = sum(_lesion_penalties(r) for r in items)
            hd95 = _cell(_mean([r["lesion_hd95"] for r in items]), "{:.2f}")
            if k:
                hd95.update(text=f"{hd95['text']} ({k})", cls="penalty",
                            tip=f"includes {k} missed/false lesion(s) at {penalty:g} mm (penalty)")
            defined = [r for r in items if not math.isnan(r["pq"])]
            k_sq = sum(1 for r in defined if _sq_hd95_is_penalty(r))
            sq_hd95 = _cell(_mean([r["sq_hd95"] for r in defined]), "{:.2f}")
            if k_sq:
                sq_hd95.update(text=f"{sq_hd95['text']} ({k_sq})", cls="penalty",
                               tip=f"includes {k_sq} case(s) without a matched lesion at "
                               f"{penalty:g} mm (penalty)")
            counts = [sum(r[f] for r in items if not math.isnan(r[f]))
                      for f in ("lesion_tp", "lesion_fn", "lesion_fp")]  # fmt: skip
            out.append({
                "name": name, "variant": variant,
                "cells": [
                    _count(len(items)), _cell(_mean([r["lesion_dice"] for r in items])), hd95,
                    _cell(" / ".join(str(int(c)) for c in counts)), _count(len(defined)),
                    *(_cell(_mean([r[f] for r in defined])) for f in ("rq", "sq", "pq")),
                    sq_hd95,
                ],
            })  # fmt: skip
    return out


def _baseline_rows(
    rows: Sequence[Mapping], baseline: Sequence[Mapping], variant: str, penalty: float
) -> list[dict]:
    ours, theirs = _grouped(rows), _grouped(baseline)
    out = []
    for group, name in _names(rows):
        if group != "region":
            continue
        a = ours.get((group, name, variant), [])
        b = theirs.get((group, name, variant), []) or theirs.get((group, name, ""), [])
        if not a or not b:
            continue
        a_exist = [r for r in a if _has(r, "ref_voxels")]
        b_exist = [r for r in b if _has(r, "ref_voxels")]
        out.append({
            "name": name,
            "cells": [
                _count(len(a_exist)),
                _cell(_mean([r["dice"] for r in a_exist])),
                _cell(_mean([r["dice"] for r in b_exist]), tip=f"n = {len(b_exist)}"),
                _hd95_cell(a_exist, penalty), _hd95_cell(b_exist, penalty),
                _count(len(a)),
                _cell(_mean([r["dice"] for r in a])),
                _cell(_mean([r["dice"] for r in b]), tip=f"N = {len(b)}"),
            ],
        })  # fmt: skip
    return out


def _href(path: str | os.PathLike, base: Path) -> str:
    """A link to a local file, relative to the report's folder."""
    target = Path(path)
    try:
        rel = os.path.relpath(target.resolve(), base.resolve())
    except ValueError:  # another drive
        rel = str(target.resolve())
    return quote(Path(rel).as_posix())


def _lesion_text(volumes: Sequence[float] | None, ref_voxels: float) -> str:
    if not ref_voxels > 0:
        return "none"
    vols = sorted((v for v in volumes or () if not math.isnan(v)), reverse=True)
    if not vols:
        return "–"  # not scored (a missing prediction)
    shown = ", ".join(f"{v:.3g}" for v in vols[:MAX_LESIONS_SHOWN])
    more = len(vols) - MAX_LESIONS_SHOWN
    return shown + (f" +{more} more" if more > 0 else "")


def _per_case_tables(
    rows: Sequence[Mapping],
    lesions: Mapping[tuple, list[float]],
    links: Mapping[str, Sequence[dict]],
    penalty: float,
) -> list[dict]:
    variants = _variants(rows)
    last = variants[-1]
    by_key = {(r["case_id"], r["group"], r["name"], r["variant"]): r for r in rows}
    case_ids = sorted({r["case_id"] for r in rows})
    tables = []
    for group, name in _names(rows):
        table_rows = []
        for case in case_ids:
            per_variant = [by_key.get((case, group, name, v)) for v in variants]
            if not any(per_variant):
                continue
            first = next(r for r in per_variant if r)
            ref_voxels = max(to_float(r.get("ref_voxels")) for r in per_variant if r)
            cells = [
                _cell(first.get("ref_ml"), "{:.3g}"),
                _cell(_lesion_text(lesions.get((case, group, name, last)), ref_voxels)),
            ]
            raw = per_variant[0] if len(variants) > 1 else None
            for variant, row in zip(variants, per_variant):
                row = row or {}
                if row.get("missing"):
                    cells.append({"text": "missing", "cls": "missing", "tip": "no prediction"})
                else:
                    cells.append(_cell(row.get("pred_ml"), "{:.3g}"))
                dice, hd95 = _case_score(row, "dice"), _case_hd95(row, "hd95", penalty)
                if raw is not None and variant != variants[0] and row:
                    dice["cls"] = dice["cls"] or _compare(raw.get("dice"), row.get("dice"), False)
                    hd95["cls"] = hd95["cls"] or _compare(raw.get("hd95"), row.get("hd95"), True)
                cells += [dice, hd95]
            final = per_variant[-1] or {}
            cells += [
                _case_score(final, "lesion_dice"),
                _case_hd95(final, "lesion_hd95", penalty),
                _case_score(final, "pq"),
            ]
            table_rows.append({"case": case, "cells": cells, "links": list(links.get(case, []))})
        tables.append({
            "group": group, "name": name,
            "variants": variants, "rows": table_rows,
            "links": any(r["links"] for r in table_rows),
        })  # fmt: skip
    return tables


def _compare(raw, post, lower_is_better: bool) -> str:
    """CSS class of a post-processed value: better / worse than raw."""
    raw, post = to_float(raw), to_float(post)
    if math.isnan(raw) or math.isnan(post) or abs(raw - post) < 5e-4:
        return ""
    better = post < raw if lower_is_better else post > raw
    return "better" if better else "worse"


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


def _extremes(
    rows: Sequence[Mapping], thumbnails: Mapping[str, Path], num: int
) -> tuple[str, str, list[dict], list[dict]]:
    """Ranking name and variant, worst and best cases by that name's Dice."""
    variant = _variants(rows)[-1] if rows else ""
    pool = [r for r in rows if r["variant"] == variant and r["group"] == "region"]
    pool = pool or [r for r in rows if r["variant"] == variant]
    names = [r["name"] for r in pool]
    if not names:
        return "", variant, [], []
    name = RANK_NAME if RANK_NAME in names else names[0]
    # Only cases holding the region: a both-empty 1 says nothing about the model.
    scores = {r["case_id"]: r["dice"] for r in pool if r["name"] == name and _has(r, "ref_voxels")}
    ranked = sorted(((c, d) for c, d in scores.items() if not math.isnan(d)),
                    key=lambda kv: (kv[1], kv[0]))  # fmt: skip
    k = min(num, math.ceil(len(ranked) / 2))
    worst = ranked[:k]
    best = [kv for kv in reversed(ranked) if kv not in worst][:num]

    def figures(items):
        return [
            {"case": c, "score": _fmt(d),
             "uri": _data_uri(Path(thumbnails[c])) if c in thumbnails else None}
            for c, d in items
        ]  # fmt: skip

    return name, variant or "scored", figures(worst), figures(best)


def _dice_plot(rows: Sequence[Mapping]) -> str | None:
    """PNG data URI: per name, a box of Dice over the cases holding it and every case's point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, variants, groups = _names(rows), _variants(rows), _grouped(rows)
    if not names:
        return None
    colours = {"raw": "#9e9e9e", "post": "#1565c0", "": "#1565c0"}
    width = 0.8 / len(variants)
    fig = Figure(figsize=(max(4.0, 1.3 * len(names) + 1.5), 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for i, (group, name) in enumerate(names):
        for j, variant in enumerate(variants):
            items = groups.get((group, name, variant), [])
            x = i - 0.4 + width * (j + 0.5)
            colour = colours.get(variant, "#1565c0")
            scored = [r for r in items if not math.isnan(r["dice"])]
            present = [r["dice"] for r in scored if _has(r, "ref_voxels")]
            if present:
                ax.boxplot([present], positions=[x], widths=width * 0.7, showfliers=False,
                           medianprops={"color": colour}, boxprops={"color": colour},
                           whiskerprops={"color": colour}, capprops={"color": colour})  # fmt: skip
            for r in scored:
                jitter = float(rng.uniform(-width * 0.25, width * 0.25))
                filled = _has(r, "ref_voxels")
                ax.scatter([x + jitter], [r["dice"]], s=14, zorder=3,
                           facecolors=colour if filled else "none", edgecolors=colour)  # fmt: skip
    ax.set_xticks(range(len(names)), [n for _, n in names])
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("Dice per case")
    ax.grid(axis="y", alpha=0.3)
    if len(variants) > 1:
        for variant in variants:
            ax.scatter([], [], color=colours.get(variant, "#1565c0"), label=variant)
        ax.legend(loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _lesion_note(settings: Mapping, lesion: Mapping) -> str:
    dilation = settings.get("lesion_dilation_iters", lesion.get("dilation_iters"))
    volume = settings.get("lesion_min_volume_mm3", lesion.get("min_lesion_volume"))
    if dilation is None or volume is None:
        return ("ground truth dilated and small lesions ignored as each case's BraTS task "
                "says (GLI, SSA, PED: 3 dilations, 50 mm³; MEN: 1, 50 mm³; MET: 1, 2 mm³)")
    return (f"ground truth dilated {dilation} times, lesions of {_fmt(float(volume), '{:g}')} "
            "mm³ or less ignored")


def _describe(value) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    return _fmt(value, "{:g}")


def _run_items(
    inputs: FoundResults, summary: Mapping, run_info: Mapping, base: Path, penalty: float
) -> list[dict]:
    items: list[dict] = []

    def add(label: str, value, href: str | None = None) -> None:
        if value is None or value == "":
            return
        items.append({"label": label, "value": _describe(value), "href": href})

    run = dict(summary.get("run") or {})
    if inputs.kind == "evaluator":
        add("Dataset", summary.get("dataset_name"))
        add("Target", summary.get("target"))
        add("Cases", summary.get("num_volumes"))
        add("Model", run.get("model"))
        config = run.get("config")
        if config:
            add("Config", config, _href(inputs.cases.parent / config, base))
        weights = run.get("weights")
        add("MODEL.WEIGHTS", f"{weights} (loaded at start; evaluations during training "
            "score the model as trained so far)" if weights
            else "— (the model evaluated in memory)")  # fmt: skip
        add("Output folder", run.get("output_dir"))
        add("Versions", run.get("versions"))
        add("Evaluated", run.get("date"))
        add("Ground truth", summary.get("ground_truth"))
        add("Post-processing (post)", summary.get("postprocess"))
        add("Empty slices", summary.get("empty_slice_policy"))
    else:
        add("Tool", f"{summary.get('tool', 'brainseg-evaluate')} {summary.get('version', '')}")
        add("Model", "not recorded: brainseg-evaluate scores label maps from any tool")
        add("Predictions", summary.get("pred_dir"))
        add("References", summary.get("ref_dir"))
        add("Cases", summary.get("num_cases"))
        add("Label conventions", summary.get("conventions"))
        add("Evaluated", summary.get("date"))
        missing = summary.get("missing_predictions") or []
        add("Missing predictions", f"{len(missing)} (scored Dice 0, HD95 {penalty:g} mm)"
            if missing else "none")  # fmt: skip
        add("Predictions without reference", len(summary.get("unmatched_predictions") or []))
    add("Scoring", summary.get("settings"))
    for label, value in run_info.items():
        if isinstance(value, Path):
            add(label, str(value), _href(value, base))
        else:
            add(label, value)
    return items


def _template_environment(template: str | Path | None):
    import jinja2

    if template is None:
        from importlib.resources import files

        folder, name = Path(str(files("brainseg_d2") / "templates")), TEMPLATE
    else:
        folder, name = Path(template).parent, Path(template).name
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    return env.get_template(name)


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------


def write_report(
    source: str | Path | tuple[str | Path, str | Path],
    out_html: str | Path,
    thumbnails: Mapping[str, str | Path] | None = None,
    title: str = _DEFAULT_TITLE,
    *,
    num_extremes: int = 3,
    baseline: str | Path | None = None,
    baseline_name: str = "baseline",
    links: Mapping[str, Mapping[str, str | Path]] | None = None,
    run_info: Mapping[str, object] | None = None,
    template: str | Path | None = None,
) -> Path:
    """Write the HTML report of an evaluation (module docstring).

    Args:
        source: an output folder of the evaluator (``brainseg_cases.csv``,
            ``brainseg_summary.json``, ``brainseg_lesions.csv``) or of
            ``brainseg-evaluate`` (``cases.csv``, ``summary.json``,
            ``lesions.csv``), or a ``(cases_csv, summary_json)`` pair.
        out_html: file to write (parent folders are created).
        thumbnails: case id -> image file (PNG/JPEG) shown for the worst and
            best cases; embedded as JPEG data URIs, shrunk to ``THUMB_WIDTH`` px.
        title: page title and heading.
        num_extremes: number of worst and of best cases shown.
        baseline: per-case table of a baseline scored by the same code (the
            evaluator's columns), shown beside the model's region means.
        baseline_name: what the report calls the baseline.
        links: case id -> {label: file} (prediction NIfTI, pictures, ...);
            ``brainseg-evaluate``'s prediction and reference files are linked
            without asking.
        run_info: more run lines, label -> value (a ``Path`` becomes a link).
        template: a Jinja2 template file to render instead of the package's
            ``templates/report.html.j2`` (it gets the same context).

    Returns:
        ``out_html`` as a Path.

    Raises:
        ValueError: missing or unreadable inputs (the message names the file),
            or an ``out_html`` that is an input or a file this module did not write.
    """
    inputs = find_result_files(source)
    out = Path(out_html)
    extra_inputs = [p for p in (baseline,) if p is not None]
    check_replaceable_report(out, [inputs.cases, inputs.summary, *extra_inputs,
                                   *(thumbnails or {}).values()])  # fmt: skip
    rows = load_cases(inputs.cases)
    summary = load_summary(inputs.summary)
    settings = summary.get("settings") or {}
    penalty = float(settings.get("hd95_penalty_mm") or _DEFAULT_PENALTY)
    base = out.parent
    thumbnails = {str(k): Path(v) for k, v in (thumbnails or {}).items()}

    case_links: dict[str, list[dict]] = defaultdict(list)
    for case, files in (links or {}).items():
        case_links[str(case)] += [{"label": k, "href": _href(v, base)} for k, v in files.items()]
    for row in rows:
        case = row["case_id"]
        if inputs.kind == "brainseg-evaluate" and case not in case_links:
            for label, field in (("prediction", "pred_file"), ("reference", "ref_file")):
                if row.get(field):
                    case_links[case].append({"label": label, "href": _href(row[field], base)})

    files = [
        {"label": p.name, "href": _href(p, base)}
        for p in (inputs.cases, inputs.lesions, inputs.summary)
        if p is not None and p.is_file()
    ]
    variants = _variants(rows)
    rank_name, rank_variant, worst, best = _extremes(rows, thumbnails, num_extremes)
    baseline_block = None
    if baseline is not None:
        base_rows = load_cases(baseline)
        variant = variants[-1] if variants else ""
        files.append({"label": Path(baseline).name, "href": _href(baseline, base)})
        baseline_block = {
            "name": baseline_name,
            "variant": variant or "scored",
            "rows": _baseline_rows(rows, base_rows, variant, penalty),
        }
    lesion_settings = settings.get("lesion") if isinstance(settings.get("lesion"), Mapping) else {}
    num_cases = len({r["case_id"] for r in rows})
    variant_note = (
        " (raw: score threshold only; post: after post-processing; a post-processed value is "
        "green where better than raw, red where worse)" if len(variants) > 1 else ""
    )
    from brainseg_d2 import __version__

    context = {
        "generator": _markup(GENERATOR),
        "title": title,
        "intro": f"{num_cases} cases, scored by {inputs.kind} "
        f"({inputs.cases.name}, {inputs.summary.name}).",
        "empty_score": _fmt(float(settings.get("empty_score", 1.0)), "{:g}"),
        "penalty": _fmt(penalty, "{:g}"),
        "lesion_note": _lesion_note(settings, lesion_settings),
        "run": _run_items(inputs, summary, dict(run_info or {}), base, penalty),
        "files": files,
        "warnings": [str(w) for w in summary.get("warnings") or []],
        "variant_note": variant_note,
        "show_variant": len(variants) > 1,
        "overlap": _overlap_rows(rows, penalty),
        "lesionwise": _lesion_rows(rows, penalty),
        "plot": _dice_plot(rows),
        "baseline": baseline_block,
        "rank_name": rank_name,
        "rank_variant": rank_variant,
        "worst": worst,
        "best": best,
        "per_case": _per_case_tables(
            rows, load_lesion_volumes(inputs.lesions), case_links, penalty
        ),
        "per_case_note": "HD95 in mm." if len(variants) < 2 else
        "HD95 in mm; lesion-wise columns of the last variant.",
        "version": __version__,
        "written": time.strftime("%Y-%m-%d %H:%M"),
    }
    page = _template_environment(template).render(**context)
    if GENERATOR not in page[:4096]:
        raise ValueError(f"template {template}: its <head> must hold {GENERATOR}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)  # complete or absent
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _markup(text: str):
    from markupsafe import Markup

    return Markup(text)


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
        description="Write the HTML report of a brainseg evaluation (the Detectron2 "
        "evaluator's output folder or brainseg-evaluate's).",
    )
    p.add_argument(
        "--eval-dir",
        required=True,
        type=Path,
        help=f"evaluation output folder ({EVALUATOR_FILES.cases}, {EVALUATOR_FILES.summary}, "
        f"or brainseg-evaluate's {NIFTI_FILES.cases}, {NIFTI_FILES.summary})",
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
        "--baseline",
        type=Path,
        help="per-case CSV of a baseline scored by the same code (e.g. the demo's "
        "eval/baseline_cases.csv)",
    )
    p.add_argument("--title", default=_DEFAULT_TITLE, help="page title and heading")
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
            ids = sorted({r["case_id"] for r in load_cases(find_result_files(args.eval_dir).cases)})
            thumbs = find_thumbnails(args.thumbs, ids)
        out = write_report(
            args.eval_dir, args.out, thumbs, args.title, num_extremes=args.num_extremes,
            baseline=args.baseline,
        )  # fmt: skip
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
