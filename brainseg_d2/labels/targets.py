"""Segmentation targets: what the detector learns, as categories over tissue codes,
and which conventions a model of a target can write its predictions in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainseg_d2.labels.convention_files import resolve_convention
from brainseg_d2.labels.conventions import LabelConvention
from brainseg_d2.labels.tissue import (
    REGIONS,
    TISSUE_ED,
    TISSUE_ET,
    TISSUE_MAX,
    TISSUE_NAMES,
    TISSUE_NCR,
)


@dataclass(frozen=True)
class Target:
    """What the detector learns: a list of categories, each a set of tissue codes.

    Attributes:
        name: ``labels``, ``regions`` or ``binary``.
        categories: category name -> tissue codes that form its mask. Order gives
            COCO ``category_id`` 1, 2, 3, ...
        nested: True when categories overlap (one pixel in several categories).
    """

    name: str
    categories: dict[str, tuple[int, ...]]
    nested: bool

    @property
    def category_names(self) -> list[str]:
        return list(self.categories)

    def coco_categories(self) -> list[dict]:
        """COCO ``categories`` list with ids starting at 1."""
        return [
            {"id": i + 1, "name": n, "supercategory": "tumour"}
            for i, n in enumerate(self.categories)
        ]

    def masks_from_tissue(self, tissue: np.ndarray) -> np.ndarray:
        """Split a canonical tissue map into one boolean mask per category.

        Args:
            tissue: integer array of any shape (..., ) holding tissue codes
                0-``TISSUE_MAX``. The resection cavity (4) is in no category of
                the built-in targets: it counts as background, as in BraTS 2024.

        Returns:
            bool array of shape (C, ...) with C = number of categories.

        Raises:
            ValueError: a value outside 0-``TISSUE_MAX``.
        """
        tissue = np.asarray(tissue)
        if tissue.size and (tissue.min() < 0 or tissue.max() > TISSUE_MAX):
            raise ValueError(
                f"tissue codes must be 0-{TISSUE_MAX}, got values {tissue.min()}..{tissue.max()}"
            )
        # One table lookup gives each voxel a bit per category it belongs to; an
        # isin per category costs several times more (this runs per slice).
        table = np.zeros(TISSUE_MAX + 1, dtype=np.uint8)
        for bit, codes in enumerate(self.categories.values()):
            table[list(codes)] |= 1 << bit
        bits = np.take(table, tissue)
        return np.stack([(bits & (1 << b)).astype(bool) for b in range(len(self.categories))])

    def tissue_from_masks(self, masks: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`masks_from_tissue` for predicted category masks.

        Args:
            masks: bool array (C, ...) in category order.

        Returns:
            uint8 tissue map (...). For ``labels`` later categories win ties; for
            ``regions`` a pixel is ET if in ET, else NCR if in TC, else ED if in WT
            (the BraTS way of turning nested regions back into labels); for
            ``binary`` tumour becomes edema-coded whole tumour.
        """
        masks = np.asarray(masks, dtype=bool)
        if masks.ndim < 1 or masks.shape[0] != len(self.categories):
            raise ValueError(
                f"expected {len(self.categories)} category masks for target '{self.name}', "
                f"got array of shape {masks.shape}"
            )
        out = np.zeros(masks.shape[1:], dtype=np.uint8)
        if self.name == "regions":
            wt, tc, et = masks
            out[wt] = TISSUE_ED
            out[tc] = TISSUE_NCR
            out[et] = TISSUE_ET
            return out
        for mask, codes in zip(masks, self.categories.values()):
            out[mask] = codes[0] if len(codes) == 1 else max(codes)
        if self.name == "binary":
            out[masks[0]] = TISSUE_ED
        return out


TARGETS: dict[str, Target] = {
    "labels": Target(
        "labels",
        {"necrotic": (TISSUE_NCR,), "edema": (TISSUE_ED,), "enhancing": (TISSUE_ET,)},
        nested=False,
    ),
    "regions": Target("regions", {k: v for k, v in REGIONS.items()}, nested=True),
    "binary": Target("binary", {"tumour": (TISSUE_NCR, TISSUE_ED, TISSUE_ET)}, nested=False),
}

#: Display colours (RGB 0-255) per category name, used in metadata and overlays.
CATEGORY_COLORS: dict[str, tuple[int, int, int]] = {
    "necrotic": (220, 50, 47),
    "edema": (38, 139, 210),
    "enhancing": (253, 203, 0),
    "WT": (38, 139, 210),
    "TC": (220, 50, 47),
    "ET": (253, 203, 0),
    "tumour": (211, 54, 130),
}


def get_target(name: str) -> Target:
    """Look up a segmentation target by name; ``ValueError`` names the bad value."""
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}") from None


def writable_tissues(target: Target) -> frozenset[int]:
    """Tissue codes :meth:`Target.tissue_from_masks` can write for some category masks.

    ``labels`` and ``regions``: NCR, ED, ET; ``binary``: ED (its whole tumour).
    """
    num = len(target.categories)
    # Every combination of categories at one voxel each: exact and tiny (2^C voxels).
    combos = (np.arange(2**num)[None, :] >> np.arange(num)[:, None]) & 1
    written = target.tissue_from_masks(combos.astype(bool))
    return frozenset(int(t) for t in np.unique(written) if t)


def check_writable(target: Target, convention: LabelConvention) -> None:
    """Refuse a convention with a class that a model of ``target`` cannot write.

    A class can be written when its tissue code is one the target writes
    (:func:`writable_tissues`) and its value is the one :func:`tissue_to_raw`
    writes for that code (BraTS 2024 PED's cystic part shares NCR with the
    non-enhancing part, and a model trained on both as NCR cannot tell them
    apart). The ``binary`` convention takes any tumour tissue as its one class.

    Raises:
        ValueError: one line naming the classes, the target and what it writes.
    """
    writable = writable_tissues(target)
    if convention.name == "binary":
        writable = writable | {TISSUE_NCR, TISSUE_ED, TISSUE_ET}
    written_as = convention.tissue_to_raw
    bad = []
    for value, name in sorted(convention.classes.items()):
        tissue = convention.raw_to_tissue.get(value)
        if tissue is None or tissue not in writable or written_as.get(tissue) != value:
            bad.append(f"'{name}' ({value})")
    if bad:
        what = "class" if len(bad) == 1 else "classes"
        raise ValueError(
            f"a model of target '{target.name}' (it predicts {', '.join(target.categories)}) "
            f"cannot write {what} {', '.join(bad)} of label convention '{convention.name}'; "
            "choose another --label-convention"
        )


def check_nothing_lost(
    target: Target, trained_on: str | LabelConvention, convention: LabelConvention
) -> None:
    """Refuse a convention with no value for a tissue the model learned.

    The model learned the tissues of its training data's convention (``trained_on``;
    ``mixed`` stands for BraTS 2021's) that its target writes; :func:`tissue_to_raw`
    would write one the convention lacks as background, its voxels silently lost.
    ``binary`` takes every tumour tissue.

    Raises:
        ValueError: one line naming the tissues and the convention.
    """
    if convention.name == "binary":
        return
    if not isinstance(trained_on, LabelConvention):
        trained_on = resolve_convention("brats2021" if trained_on == "mixed" else trained_on)
    learned = writable_tissues(target) & set(trained_on.tissue_to_raw)
    lost = sorted(learned - set(convention.tissue_to_raw))
    if lost:
        names = ", ".join(TISSUE_NAMES.get(t, str(t)) for t in lost)
        raise ValueError(
            f"label convention '{convention.name}' has no value for {names}, which the model "
            f"predicts (trained on '{trained_on.name}'); its voxels would become background: "
            "add a class for it or choose another --label-convention"
        )


def prediction_convention(
    target: Target,
    case_convention: str | LabelConvention,
    requested: str | LabelConvention | None = None,
) -> LabelConvention:
    """The convention a prediction is written in: ``requested`` if given, else the
    case's own (BraTS 2023+ names: ET = 3), checked with :func:`check_writable`.

    Args:
        target: the model's target.
        case_convention: the input case's convention (detected from its file
            names, else the training dataset's).
        requested: a built-in name, a convention file or a convention
            (``--label-convention``); None keeps the case's.

    Raises:
        ValueError: unknown convention, or one the model cannot write (one line).
    """
    convention = resolve_convention(requested if requested is not None else case_convention)
    check_writable(target, convention)
    return convention
