"""Per-case rows aggregated by region and class: means with their *n*, medians.

Both evaluation entry points summarise through :func:`summarize_cases`: the
Detectron2 evaluator (through :func:`~brainseg_d2.evaluation.volume_scores.summarize`),
``brainseg-evaluate`` and the HTML report.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from brainseg_d2.evaluation.case_scores import DISTANCE_METRICS, SCORE_METRICS

__all__ = ["SUMMARY_METRICS", "summarize_cases"]

#: Per-case metrics that the summary averages.
SUMMARY_METRICS = (*SCORE_METRICS, *DISTANCE_METRICS, "volume_diff_ml")


def _stats(values: Sequence[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if not arr.size:
        return math.nan, math.nan, 0
    return float(arr.mean()), float(np.median(arr)), int(arr.size)


def summarize_cases(rows: Sequence[Mapping]) -> list[dict]:
    """Aggregate per-case rows by region/class.

    Args:
        rows: dicts with ``group``, ``name``, ``missing``, ``both_empty``,
            ``ref_voxels`` and the metrics, one per case x name.

    Returns:
        One dict per ``(group, name)`` in first-seen order with

        * ``n_cases``: rows; ``n_exists``: cases whose reference holds the
          region (the *n* a tumour-bearing mean is over); ``n_both_empty``;
          ``n_missing`` (missing predictions, scored 0 / penalty);
        * ``mean``, ``median``, ``n_defined``: per metric over all cases
          (BraTS conventions: both empty scores Dice 1, HD95 0), NaN skipped and
          counted out of ``n_defined``;
        * ``mean_exists``: per metric over the ``n_exists`` tumour-bearing cases
          only (the Dice there is unaffected by the both-empty convention).
    """
    grouped: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for row in rows:
        grouped[(row["group"], row["name"])].append(row)
    out = []
    for (group, name), items in grouped.items():
        exists = [r for r in items if (r.get("ref_voxels") or 0) > 0]
        entry: dict = {
            "group": group,
            "name": name,
            "n_cases": len(items),
            "n_exists": len(exists),
            "n_both_empty": sum(1 for r in items if r.get("both_empty")),
            "n_missing": sum(1 for r in items if r.get("missing")),
            "mean": {},
            "median": {},
            "n_defined": {},
            "mean_exists": {},
        }
        for metric in SUMMARY_METRICS:
            mean, median, n = _stats([r.get(metric, math.nan) for r in items])
            entry["mean"][metric] = mean
            entry["median"][metric] = median
            entry["n_defined"][metric] = n
            entry["mean_exists"][metric] = _stats([r.get(metric, math.nan) for r in exists])[0]
        out.append(entry)
    return out
