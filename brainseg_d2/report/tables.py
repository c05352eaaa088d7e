"""The report's tables: cells (``{text, cls, tip}``, rendered by the template) and rows.

Rows are those of :func:`~brainseg_d2.evaluation.results_files.load_cases`; every
mean carries its *n*, both-empty scores and the HD95 penalty are marked.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from brainseg_d2.evaluation.results_files import (
    to_float,
)

#: Reference lesions listed per case and name (largest first).
MAX_LESIONS_SHOWN = 4


# ---------------------------------------------------------------------------
# formatting: cells are {text, cls, tip}; the template renders them
# ---------------------------------------------------------------------------


def format_number(value, pattern: str = "{:.3f}") -> str:
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
    return {"text": format_number(value, pattern), "cls": cls, "tip": tip}


def _count(value: int) -> dict:
    return {"text": str(int(value)), "cls": "n", "tip": ""}


def has_value(row: Mapping, field: str) -> bool:
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


def _mean_cell(values: Sequence[float], pattern: str = "{:.3f}") -> dict:
    """The mean of the defined values; undefined ones (NaN, e.g. both-empty Dice with
    ``EVAL.EMPTY_SCORE`` nan) are left out and the cell says over how many it is."""
    values = [float(v) for v in values]
    k = sum(1 for v in values if not math.isnan(v))
    cell = _cell(_mean(values), pattern)
    if k < len(values):
        cell.update(text=f"{cell['text']} [{k}]", cls="undefined",
                    tip=f"mean over {k} of {len(values)} cases; "
                    f"{len(values) - k} undefined (NaN) left out")  # fmt: skip
    return cell


def _tipped(cell: dict, tip: str) -> dict:
    """The cell with ``tip`` before any tip it has."""
    return {**cell, "tip": "; ".join(t for t in (tip, cell["tip"]) if t)}


def _penalised(cell: dict, k: int, tip: str) -> dict:
    """A mean cell holding ``k`` penalty values: "(k)" after it, marked, ``tip`` first."""
    if not k:
        return cell
    return {**_tipped(cell, tip), "text": f"{cell['text']} ({k})", "cls": "penalty"}


def _hd95_cell(rows: Sequence[Mapping], penalty: float) -> dict:
    k = sum(1 for r in rows if _hd95_is_penalty(r))
    cell = _mean_cell([r["hd95"] for r in rows], "{:.2f}")
    return _penalised(cell, k, f"includes {k} penalty value(s) of {penalty:g} mm (one side empty)")


def _case_hd95(row: Mapping, field: str, penalty: float) -> dict:
    value = row.get(field, math.nan)
    if row.get("missing"):
        return _cell(value, "{:.2f}", "missing", "no prediction: scored the penalty")
    if field == "hd95" and _hd95_is_penalty(row):
        return {"text": f"{format_number(value, '{:g}')} (penalty)", "cls": "penalty",
                "tip": "one side is empty: a penalty, not a distance"}  # fmt: skip
    if field == "lesion_hd95" and _lesion_penalties(row):
        k = _lesion_penalties(row)
        return _penalised(_cell(value, "{:.2f}"), k,
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


def names_in(rows: Sequence[Mapping]) -> list[tuple[str, str]]:
    """(group, name) in first-seen order, regions first."""
    seen: list[tuple[str, str]] = []
    for row in rows:
        key = (row["group"], row["name"])
        if key not in seen:
            seen.append(key)
    return sorted(seen, key=lambda k: k[0] != "region")


def variants_in(rows: Sequence[Mapping]) -> list[str]:
    out: list[str] = []
    for row in rows:
        if row["variant"] not in out:
            out.append(row["variant"])
    return sorted(out, key=lambda v: {"raw": 0, "post": 1}.get(v, 2))


def rows_by_name(rows: Sequence[Mapping]) -> dict[tuple[str, str, str], list[Mapping]]:
    out: dict[tuple[str, str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        out[(row["group"], row["name"], row["variant"])].append(row)
    return out


def grouped_rows(rows: Sequence[Mapping]) -> Iterator[tuple[str, str, list[Mapping]]]:
    """``(name, variant, rows)`` for each name and variant present, in table order."""
    groups = rows_by_name(rows)
    for group, name in names_in(rows):
        for variant in variants_in(rows):
            items = groups.get((group, name, variant), [])
            if items:
                yield name, variant, items


def overlap_rows(rows: Sequence[Mapping], penalty: float) -> list[dict]:
    out = []
    for name, variant, items in grouped_rows(rows):
        exists = [r for r in items if has_value(r, "ref_voxels")]
        cells = [_count(len(exists))]
        for field in ("dice", "iou", "sensitivity", "specificity", "precision"):
            cells.append(_mean_cell([r[field] for r in exists]))
        cells.append(_hd95_cell(exists, penalty))
        cells.append(_mean_cell([r["volume_diff_ml"] for r in exists], "{:+.2f}"))
        n_empty = sum(1 for r in items if r.get("both_empty"))
        n_missing = sum(1 for r in items if r.get("missing"))
        cells += [
            _count(len(items)),
            _mean_cell([r["dice"] for r in items]),
            _hd95_cell(items, penalty),
            _cell(n_empty, cls="empty" if n_empty else ""),
            _cell(n_missing, cls="missing" if n_missing else ""),
        ]  # fmt: skip
        out.append({"name": name, "variant": variant, "cells": cells})
    return out


def lesion_rows(rows: Sequence[Mapping], penalty: float) -> list[dict]:
    out = []
    for name, variant, items in grouped_rows(rows):
        k = sum(_lesion_penalties(r) for r in items)
        hd95 = _mean_cell([r["lesion_hd95"] for r in items], "{:.2f}")
        hd95 = _penalised(hd95, k, f"includes {k} missed/false lesion(s) at {penalty:g} mm "
                          "(penalty)")
        defined = [r for r in items if not math.isnan(r["pq"])]
        k_sq = sum(1 for r in defined if _sq_hd95_is_penalty(r))
        sq_hd95 = _mean_cell([r["sq_hd95"] for r in defined], "{:.2f}")
        sq_hd95 = _penalised(sq_hd95, k_sq, f"includes {k_sq} case(s) without a matched "
                             f"lesion at {penalty:g} mm (penalty)")
        counts = [sum(r[f] for r in items if not math.isnan(r[f]))
                  for f in ("lesion_tp", "lesion_fn", "lesion_fp")]  # fmt: skip
        out.append({
            "name": name, "variant": variant,
            "cells": [
                _count(len(items)), _mean_cell([r["lesion_dice"] for r in items]), hd95,
                _cell(" / ".join(str(int(c)) for c in counts)), _count(len(defined)),
                *(_mean_cell([r[f] for r in defined]) for f in ("rq", "sq", "pq")),
                sq_hd95,
            ],
        })  # fmt: skip
    return out


def baseline_rows(
    rows: Sequence[Mapping], baseline: Sequence[Mapping], variant: str, penalty: float
) -> list[dict]:
    ours, theirs = rows_by_name(rows), rows_by_name(baseline)
    out = []
    for group, name in names_in(rows):
        if group != "region":
            continue
        a = ours.get((group, name, variant), [])
        b = theirs.get((group, name, variant), []) or theirs.get((group, name, ""), [])
        if not a or not b:
            continue
        a_exist = [r for r in a if has_value(r, "ref_voxels")]
        b_exist = [r for r in b if has_value(r, "ref_voxels")]
        out.append({
            "name": name,
            "cells": [
                _count(len(a_exist)),
                _mean_cell([r["dice"] for r in a_exist]),
                _tipped(_mean_cell([r["dice"] for r in b_exist]), f"n = {len(b_exist)}"),
                _hd95_cell(a_exist, penalty), _hd95_cell(b_exist, penalty),
                _count(len(a)),
                _mean_cell([r["dice"] for r in a]),
                _tipped(_mean_cell([r["dice"] for r in b]), f"N = {len(b)}"),
            ],
        })  # fmt: skip
    return out


def relative_href(path: str | os.PathLike, base: Path) -> str:
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


def per_case_tables(
    rows: Sequence[Mapping],
    lesions: Mapping[tuple, list[float]],
    links: Mapping[str, Sequence[dict]],
    penalty: float,
) -> list[dict]:
    variants = variants_in(rows)
    last = variants[-1]
    by_key = {(r["case_id"], r["group"], r["name"], r["variant"]): r for r in rows}
    case_ids = sorted({r["case_id"] for r in rows})
    tables = []
    for group, name in names_in(rows):
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
