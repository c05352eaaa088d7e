"""What a conversion does before any voxel is read: options, defaults, patient splits.

Splits:

* split names ``train``/``val``/``test``; with ``folds`` K, fold i is ``val``
  and the rest ``train`` (no test split); unlabelled cases go to ``unlabelled``.
* a patient's cases all go to one split; the split depends on ``seed`` and the
  set of patient ids only (not on the order the cases were found in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from brainseg_d2.data.preprocess import BRATS_CHANNELS, CANONICAL_ORIENTATION, PreprocessOptions
from brainseg_d2.data.sources import CaseSource
from brainseg_d2.data.sources.slices import SliceCase
from brainseg_d2.labels import CONVENTIONS, convention_to_dict, get_convention, get_target

SPLITS = ("train", "val", "test")
UNLABELLED_SPLIT = "unlabelled"


class ConversionError(ValueError):
    """A case could not be converted, or the conversion cannot start."""


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that changes the converted dataset.

    Attributes:
        channels: source channels, one image channel each, in order; None =
            every BraTS sequence (flair, t1, t1ce, t2) for BraTS conventions,
            else all of the first case's channels in the order given.
        target: ``labels``, ``regions`` or ``binary``; None = ``binary`` for the
            binary convention, else ``regions`` (the nested WT, TC and ET that
            BraTS scores: the formulation the configs are built for, chosen by
            the ablation in BENCHMARKS.md "Model formulation").
        slice_axis: ``axial``, ``coronal`` or ``sagittal`` (2D inputs: ``axial``).
        lower_percentile, upper_percentile: intensity clip inside the brain.
        normalization: ``zscore`` (the default: the brain's mean and SD set the
            scale) or ``percentile`` (the clip above, to 0-255; the only way before
            this option, and what a dataset.json without it means); see
            :class:`~brainseg_d2.structures.PreprocessOptions`.
        split: train/val/test ratios over patients (sum 1; a 0 drops the split).
        folds, fold: K-fold cross-validation over patients instead of ``split``.
        seed: for the patient split and the choice of empty training slices.
        empty_ratio: fraction of empty (no annotation) brain slices kept in train.
        min_area: training annotations drop connected components smaller than
            this (pixels); val/test annotations keep every labelled pixel.
        connectivity: 4 or 8, for connected components.
        png_compression: PNG deflate level 0-9 (0: stored; 1: ISA-L, fast and small
            enough; 2-9: zlib, slower, a few percent smaller).
        context_slices: also write the images (not the annotations) of the K
            slices on each side of every kept slice, for models that see
            neighbouring slices (``BRAINSEG.INPUT.CONTEXT_SLICES``); 0 = none.
        label_conventions: the users' label conventions the cases use, name ->
            definition (:func:`~brainseg_d2.labels.convention_to_dict`); filled in
            by :func:`resolve_options`. Recorded in ``dataset.json`` (where the
            predictor and the evaluator read them back) and part of each case's
            cache key, so an edited convention file converts again.
    """

    channels: tuple[str, ...] | None = None
    target: str | None = None
    slice_axis: str = "axial"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    normalization: str = "zscore"
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    folds: int | None = None
    fold: int = 0
    seed: int = 0
    empty_ratio: float = 0.2
    min_area: int = 10
    connectivity: int = 8
    png_compression: int = 1
    context_slices: int = 0
    label_conventions: dict[str, dict] | None = None

    def __post_init__(self) -> None:
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "split", tuple(float(r) for r in self.split))
        if self.target is not None:
            get_target(self.target)
        if self.slice_axis not in CANONICAL_ORIENTATION:
            raise ValueError(f"unknown slice axis {self.slice_axis!r}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"split must be 3 ratios >= 0 summing to 1, got {list(self.split)}")
        if self.folds is not None and not (self.folds >= 2 and 0 <= self.fold < self.folds):
            raise ValueError(
                f"need folds >= 2 and 0 <= fold < folds, got {self.folds}, {self.fold}"
            )
        if not 0.0 <= self.empty_ratio <= 1.0:
            raise ValueError(f"empty_ratio must be in [0, 1], got {self.empty_ratio}")
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0, got {self.min_area}")
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if self.context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {self.context_slices}")
        if not 0 <= self.png_compression <= 9:
            raise ValueError(f"png_compression must be 0-9, got {self.png_compression}")
        self.preprocess()  # channels, percentiles, normalisation: checked once, before any case

    def preprocess(self) -> PreprocessOptions:
        return PreprocessOptions(
            channels=self.channels or BRATS_CHANNELS,
            slice_axis=self.slice_axis,
            lower_percentile=self.lower_percentile,
            upper_percentile=self.upper_percentile,
            normalization=self.normalization,
        )


def tool_version() -> str:
    """``brainseg_d2.__version__``, else the installed distribution's version."""
    try:
        from brainseg_d2 import __version__

        return str(__version__)
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("brainseg_d2")
    except PackageNotFoundError:
        return "0+unknown"


def resolve_options(cases: Sequence[CaseSource], options: ConvertOptions) -> ConvertOptions:
    """Fill ``channels``/``target`` defaults from the cases and check they fit.

    Args:
        cases: 3D or 2D cases.
        options: as given by the user.

    Returns:
        options with ``channels`` and ``target`` set.

    Raises:
        ConversionError: binary masks with a multi-class target, or 2D slices
            with a slice axis other than ``axial``.
    """
    conventions = {c.label_convention for c in cases}
    users = {
        name: convention_to_dict(get_convention(name))
        for name in sorted(conventions)
        if name not in CONVENTIONS
    }
    channels = options.channels
    any_2d = any(c.dimensions == 2 for c in cases)
    if channels is None:
        # The four BraTS sequences in their fixed order where every case names them
        # (found or expected); else the channels the first case was given.
        if not any_2d and all(set(BRATS_CHANNELS) <= set(c.channel_names()) for c in cases):
            channels = BRATS_CHANNELS
        else:
            channels = tuple(cases[0].channel_names())
    target = options.target or _default_target(cases, conventions)
    if "binary" in conventions and target != "binary":
        raise ConversionError(f"binary masks need --target binary, not {target!r}")
    if options.slice_axis != "axial" and any_2d:
        raise ConversionError(
            f"2D slices can only be cut along 'axial' (their own plane), not {options.slice_axis!r}"
        )
    return replace(
        options, channels=tuple(channels), target=target, label_conventions=users or None
    )


def _default_target(cases: Sequence[CaseSource], conventions: set[str]) -> str:
    """``binary`` for binary masks; ``labels`` for polygons named by tissue class; else ``regions``.

    Label maps (3D volumes, 2D label images) give tissue codes, from which the
    nested BraTS regions follow, so they default to ``regions``. VIA polygons
    carry class names, which name the categories of one target: ``labels``
    (necrotic, edema, enhancing) unless every class names a region (WT, TC, ET).
    """
    if conventions == {"binary"}:
        return "binary"
    named = {
        region.class_name.lower()
        for case in cases
        if isinstance(case, SliceCase)
        for part in case.slices
        for region in part.regions or ()
        if region.class_name
    }
    regions = {name.lower() for name in get_target("regions").categories}
    return "labels" if named - regions else "regions"


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split n items by ratios: largest remainder, every non-zero ratio >= 1 if possible."""
    exact = [r * n for r in ratios]
    counts = [int(e) for e in exact]
    nonzero = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(nonzero):
        for i in nonzero:
            counts[i] = max(counts[i], 1)
    while sum(counts) > n:
        counts[max(nonzero, key=lambda i: (counts[i], -i))] -= 1
    while sum(counts) < n:
        counts[max(nonzero, key=lambda i: (exact[i] - counts[i], -i))] += 1
    return counts


def assign_splits(cases: Sequence[CaseSource], options: ConvertOptions) -> dict[str, str]:
    """Split by patient, deterministically for ``options.seed``.

    Args:
        cases: all cases.
        options: ``split`` ratios or ``folds``/``fold``, and ``seed``.

    Returns:
        case id -> split name. Patients whose cases are all unlabelled go to
        ``unlabelled``; the others to train/val/test (or train/val for folds).

    Raises:
        ConversionError: a patient has both labelled and unlabelled cases.
    """
    labelled: dict[str, set[bool]] = {}
    for case in cases:
        labelled.setdefault(case.patient_id, set()).add(case.labelled)
    mixed = sorted(p for p, kinds in labelled.items() if len(kinds) > 1)
    if mixed:
        raise ConversionError(
            f"patient '{mixed[0]}' has labelled and unlabelled cases; convert them separately"
        )
    patients = sorted(p for p, kinds in labelled.items() if True in kinds)
    order = [patients[i] for i in np.random.default_rng(options.seed).permutation(len(patients))]
    split_of: dict[str, str] = {}
    if options.folds:
        for k, chunk in enumerate(np.array_split(np.arange(len(order)), options.folds)):
            for i in chunk:
                split_of[order[i]] = "val" if k == options.fold else "train"
    else:
        start = 0
        for name, count in zip(SPLITS, _allocate(len(order), options.split)):
            for p in order[start : start + count]:
                split_of[p] = name
            start += count
    return {c.case_id: split_of.get(c.patient_id, UNLABELLED_SPLIT) for c in cases}
