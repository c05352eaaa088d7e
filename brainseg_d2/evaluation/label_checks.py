"""Label maps that do not follow the convention their BraTS names imply.

BraTS 2023+ names (``BraTS-GLI-00000-000``) put enhancing tumour at 3 and, in
BraTS 2024 GLI data, the resection cavity at 4; BraTS 2018-2021 data put
enhancing tumour at 4. Files renamed from one era to the other, or predictions
written in the other era's labels, would score ET as the resection cavity with
no error. These checks find that from the label values alone:

* :func:`looks_like_2021_labels`: one case whose prediction has 4 and no 3 while
  its reference has 3 and no 4 (a warning: one case cannot tell more).
* :func:`check_implied_conventions`: the whole evaluation; an error when every
  reference, or every prediction, of such cases has 4 and none has 3.

And :func:`binary_01`: 0/255 masks under the ``binary`` convention.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brainseg_d2.evaluation.label_map_files import EvaluationError
from brainseg_d2.labels import CONVENTIONS, LabelConvention, resolve_convention

__all__ = ["binary_01", "check_implied_conventions", "looks_like_2021_labels",
           "option_convention"]  # fmt: skip


def option_convention(value: str | LabelConvention | None, option: str) -> LabelConvention | None:
    """The convention an option names (None for None), or an error naming the option."""
    if value is None:
        return None
    try:
        return resolve_convention(value)
    except ValueError as exc:
        raise EvaluationError(f"{option}: {exc}") from None


def binary_01(labels: np.ndarray, convention: LabelConvention) -> np.ndarray:
    """0/255 masks count as 0/1 under ``binary``, as in the converter."""
    return np.where(labels == 255, 1, labels) if convention.name == "binary" else labels


def _cavity_era(convention: LabelConvention) -> bool:
    """3 is enhancing tumour and 4 the resection cavity (BraTS 2024 GLI)."""
    return (convention.classes.get(4) == "resection_cavity"
            and convention.classes.get(3) == "enhancing")


def looks_like_2021_labels(pred: np.ndarray, ref: np.ndarray, convention: LabelConvention) -> bool:
    """A 2023+ case whose prediction writes ET as 4 (BraTS 2021) where 4 means RC."""
    if not _cavity_era(convention):
        return False
    pred_values = set(np.unique(pred).tolist())
    ref_values = set(np.unique(ref).tolist())
    return 4 in pred_values and 3 not in pred_values and 4 not in ref_values and 3 in ref_values


def check_implied_conventions(rows: Sequence[dict], *, pred_convention_given: bool) -> None:
    """Raise when label values contradict the convention the case names implied.

    Args:
        rows: every case's score rows (``case_id``, ``convention``, ``name``,
            ``ref_voxels``, ``pred_voxels``), before absent names are dropped; their
            conventions are built-in ones, as the case names implied them.
        pred_convention_given: the predictions' convention was named by the user
            (they were relabelled, so only the references are checked).

    Raises:
        EvaluationError: one line naming a case and the option that settles it.
    """
    cases: dict[str, dict[str, int]] = {}  # case -> voxels of ET and RC, both sides
    for row in rows:
        if row["name"] in ("ET", "RC") and _cavity_era(CONVENTIONS[row["convention"]]):
            counts = cases.setdefault(row["case_id"], {})
            counts["ref_" + row["name"]] = row.get("ref_voxels") or 0
            counts["pred_" + row["name"]] = row.get("pred_voxels") or 0
    if not cases:
        return

    def total(key: str) -> int:
        return sum(c.get(key, 0) for c in cases.values())

    def first(key: str) -> str:
        return next(case for case, c in sorted(cases.items()) if c.get(key, 0))

    if total("ref_RC") and not total("ref_ET"):
        raise EvaluationError(
            f"references named like BraTS 2023+ (3 = enhancing tumour, 4 = resection cavity) "
            f"hold label 4 and never 3 (e.g. {first('ref_RC')}): BraTS 2021 labels? pass "
            "--label-convention brats2021, or brats2024 if 4 is the resection cavity; "
            "nothing was written"
        )
    if (not pred_convention_given and total("pred_RC") and not total("pred_ET")
            and total("ref_ET") and not total("ref_RC")):
        raise EvaluationError(
            f"the predictions hold label 4 (the resection cavity under BraTS 2023+ names) and "
            f"never 3, while the references hold 3 and never 4 (e.g. {first('pred_RC')}): "
            "predictions in BraTS 2021 labels? pass --pred-label-convention brats2021; "
            "nothing was written"
        )
