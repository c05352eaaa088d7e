"""The post-processing settings: one definition that gives the config defaults,
reads them back and offers a :meth:`~PostprocessParams.raw` variant."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np


@dataclass(frozen=True)
class PostprocessParams:
    """Post-processing settings; the defaults are the project's defaults.

    Attributes:
        enabled: False turns every step off (masks are returned unchanged). The
            score threshold still applies: it is how instances become masks.
        score_threshold: pixels enter the category masks where the score is
            ``>=`` this: the pixel's probability for a dense head's output, the
            instance's score for instance masks.
        category_score_threshold: one threshold per category instead of
            ``score_threshold`` (empty = ``score_threshold`` for every category);
            see :meth:`score_thresholds`.
        opening_kernel: diameter in pixels of the elliptical structuring element
            of a 2D opening (removes specks and thin bridges); odd; 0 = off.
        closing_kernel: same for a 2D closing (bridges small gaps); odd; 0 = off.
        fill_holes: fill 2D holes (background not connected to the slice border).
        min_area_2d: drop 2D components smaller than this many pixels; 0 = off.
        min_volume_3d: drop 3D components smaller than this many voxels; 0 = off.
            One value for every category, or one per category (for nested
            targets, e.g. ``(200, 0, 0)`` filters lesions by their WT extent and
            keeps whatever core lies inside a surviving lesion). Stored as a tuple.
        min_volume_ml: the same in millilitres, so that a size chosen on one
            voxel size holds on another (the tuner chooses this one; a value
            chosen at 1.5 mm is 3.4 times as many voxels at 1 mm). A component
            must reach both minima. :func:`postprocess_volume` needs ``voxel_ml``
            when it is set.
        connectivity_3d: 3D neighbourhood, 6, 18 or 26 (26 as in BraTS lesion
            analysis); its in-plane part (4 or 8) is the 2D connectivity.
        keep_largest_k: keep only the K largest 3D components per category;
            0 = off (gliomas are usually one lesion, but metastases are not).
        component_score_threshold: hysteresis on scores; empty = off.
            A 3D component (of the masks made at ``score_threshold``) is kept
            only if it holds a voxel scoring ``>=`` this (pixel probability, or
            the score of an instance covering the voxel). One
            value for every category, or one per category. Low-scoring instances
            then extend a confident lesion's outline without creating lesions
            of their own (false positives on tumour-free volumes are mostly
            such lone low-score detections). Needs the seed masks
            (:func:`postprocess_volume` ``seeds``).
        core_hull_margin: for nested targets (``regions``: the last category,
            ET, inside the one before it, TC), a core component that holds
            enhancing voxels keeps only what lies within the convex hull of those
            voxels grown by this many voxels (each hull face moved out); core
            components without enhancement are left alone. -1 = off. Labelled
            enhancing cores lie almost wholly inside that hull (94-100 % on the real
            scans measured), while a 2D model can call the core well past the
            enhancement, into edema that looks like core (BENCHMARKS.md "The core
            within its enhancement's hull").
        core_hull_min_share: the core hull cuts only a core component whose
            enhancing voxels are at least this share of it. A low-grade glioma's
            mostly non-enhancing core with a patch of enhancement, or a false
            enhancing speck, would otherwise be cut down to that patch's hull.
            On the phantom's held-out and validation cases and three real scans,
            every predicted core the hull improves is at least 0.16 enhancing,
            while the non-enhancing phantom tumours it ruined were mostly under
            0.11 (BENCHMARKS.md "Tumours without enhancement"). Not tuned:
            validation sets rarely hold the tumours it protects.
        min_total_ml: a category whose voxels in the whole volume add up to less
            than this many millilitres is emptied in that volume; 0 = off. One
            value for every category, or one per category. For nested targets
            the categories inside it go too, and an emptied inner category's
            voxels stay in the outer ones: ``(0, 0, 0.5)`` turns an enhancing
            call under 0.5 ml into tumour core, as BraTS submissions relabel a
            small enhancing volume as necrosis (a non-enhancing tumour's false
            enhancing speck costs a whole case's ET Dice). Millilitres, not
            voxels, so a value chosen on one voxel size holds on another
            (:func:`postprocess_volume` needs ``voxel_ml``).

    Defaults: every cleaning step is off, so ``PostprocessParams()`` differs from
    :meth:`raw` only in being enabled. Sizes and kernels need tuning per dataset
    (a min-size that helps gliomas deletes small metastases). Hole filling is off
    as well because it applies to every category, and some are *meant* to have
    holes: enhancing tumour is a rim around necrosis
    (``ET`` in both ``labels`` and ``regions``) and edema surrounds the core in
    ``labels``. Turn it on for ``binary`` or WT/TC-only work. Tune on validation
    data; compare with :meth:`raw`.
    """

    enabled: bool = True
    score_threshold: float = 0.5
    opening_kernel: int = 0
    closing_kernel: int = 0
    fill_holes: bool = False
    min_area_2d: int = 0
    min_volume_3d: tuple[int, ...] = (0,)
    min_volume_ml: tuple[float, ...] = (0.0,)
    connectivity_3d: int = 26
    keep_largest_k: int = 0
    component_score_threshold: tuple[float, ...] = ()
    category_score_threshold: tuple[float, ...] = ()
    core_hull_margin: int = -1
    core_hull_min_share: float = 0.15
    min_total_ml: tuple[float, ...] = (0.0,)

    #: field name -> config key under the post-processing node.
    CFG_KEYS: ClassVar[dict[str, str]] = {
        "enabled": "ENABLED",
        "score_threshold": "SCORE_THRESH",
        "opening_kernel": "OPENING_KERNEL",
        "closing_kernel": "CLOSING_KERNEL",
        "fill_holes": "FILL_HOLES",
        "min_area_2d": "MIN_AREA_2D",
        "min_volume_3d": "MIN_VOLUME_3D",
        "min_volume_ml": "MIN_VOLUME_ML",
        "connectivity_3d": "CONNECTIVITY_3D",
        "keep_largest_k": "KEEP_LARGEST_K",
        "component_score_threshold": "COMPONENT_SCORE_THRESH",
        "category_score_threshold": "CATEGORY_SCORE_THRESH",
        "core_hull_margin": "CORE_HULL_MARGIN",
        "core_hull_min_share": "CORE_HULL_MIN_SHARE",
        "min_total_ml": "MIN_TOTAL_ML",
    }

    def __post_init__(self) -> None:
        for name in ("enabled", "fill_holes"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {value!r}")
        thr = self.score_threshold
        if not isinstance(thr, numbers.Real) or isinstance(thr, bool) or not 0.0 <= thr <= 1.0:
            raise ValueError(f"score_threshold must be a number in [0, 1], got {thr!r}")
        volumes = _values_at_least_zero("min_volume_3d", self.min_volume_3d, integral=True)
        object.__setattr__(self, "min_volume_3d", tuple(int(v) for v in volumes))
        values = _values_at_least_zero("min_volume_ml", self.min_volume_ml, integral=False)
        object.__setattr__(self, "min_volume_ml", tuple(float(v) for v in values))
        for name in (
            "opening_kernel",
            "closing_kernel",
            "min_area_2d",
            "keep_largest_k",
            "connectivity_3d",
        ):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        for name in ("opening_kernel", "closing_kernel"):
            value = getattr(self, name)
            if value > 0 and value % 2 == 0:
                raise ValueError(f"{name} must be odd (or 0 for off), got {value!r}")
        if self.connectivity_3d not in (6, 18, 26):
            raise ValueError(f"connectivity_3d must be 6, 18 or 26, got {self.connectivity_3d!r}")
        margin = self.core_hull_margin
        if not isinstance(margin, numbers.Integral) or isinstance(margin, bool) or margin < -1:
            raise ValueError(
                f"core_hull_margin must be an integer >= -1 (-1: off), got {margin!r}"
            )
        share = self.core_hull_min_share
        if not isinstance(share, numbers.Real) or isinstance(share, bool) or not 0 <= share <= 1:
            raise ValueError(f"core_hull_min_share must be a number in [0, 1], got {share!r}")
        object.__setattr__(self, "core_hull_min_share", float(share))
        values = _values_at_least_zero("min_total_ml", self.min_total_ml, integral=False)
        object.__setattr__(self, "min_total_ml", tuple(float(v) for v in values))
        values = self.component_score_threshold
        if isinstance(values, numbers.Real) and not isinstance(values, bool):
            values = (values,)
        if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in values
        ):
            raise ValueError(
                "component_score_threshold must be numbers in [0, 1] (one, or one per "
                f"category; empty = off), got {self.component_score_threshold!r}"
            )
        object.__setattr__(self, "component_score_threshold", tuple(float(v) for v in values))
        values = self.category_score_threshold
        if not isinstance(values, (tuple, list)) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= v <= 1.0
            for v in values
        ):
            raise ValueError(
                "category_score_threshold must be numbers in [0, 1] (one per category; "
                f"empty = score_threshold), got {self.category_score_threshold!r}"
            )
        object.__setattr__(self, "category_score_threshold", tuple(float(v) for v in values))

    def score_thresholds(self, num_categories: int) -> np.ndarray:
        """Per-category score thresholds ``(C,)``: ``category_score_threshold`` if set,
        else ``score_threshold`` for every category.

        Raises:
            ValueError: if ``category_score_threshold`` has neither 0 nor ``C`` values.
        """
        values = self.category_score_threshold
        if not values:
            return np.full(num_categories, self.score_threshold, dtype=float)
        if len(values) != num_categories:
            raise ValueError(
                f"category_score_threshold has {len(values)} values; give one per category "
                f"({num_categories})"
            )
        return np.asarray(values, dtype=float)

    @property
    def lowest_score_threshold(self) -> float:
        """The lowest score that can enter any category's mask."""
        return min((self.score_threshold, *self.category_score_threshold))

    def thresholds_only(self) -> PostprocessParams:
        """The ``raw`` variant of these settings: the same score thresholds, every step off."""
        return replace(
            PostprocessParams.raw(self.score_threshold),
            category_score_threshold=self.category_score_threshold,
        )

    def check_categories(self, num_categories: int) -> None:
        """Raise now what a volume of ``num_categories`` categories would raise later:
        every per-category key must have 1 or ``C`` values (``category_score_threshold``
        0 or ``C``). One-line ``ValueError`` naming the key."""
        self.score_thresholds(num_categories)
        self.min_volumes(num_categories)
        self.min_volumes_ml(num_categories)
        self.min_totals_ml(num_categories)
        self.component_thresholds(num_categories)

    def min_volumes(self, num_categories: int) -> np.ndarray:
        """Per-category minimum 3D component size ``(C,)`` (all 0 when disabled).

        Raises:
            ValueError: if ``min_volume_3d`` has neither 1 nor ``C`` values.
        """
        values = self.min_volume_3d if self.enabled else (0,)
        return _per_category("min_volume_3d", values, num_categories, np.int64)

    def min_volumes_ml(self, num_categories: int) -> np.ndarray:
        """Per-category minimum 3D component volume in millilitres ``(C,)`` (all 0 when
        disabled).

        Raises:
            ValueError: if ``min_volume_ml`` has neither 1 nor ``C`` values.
        """
        values = self.min_volume_ml if self.enabled else (0.0,)
        return _per_category("min_volume_ml", values, num_categories, float)

    def min_component_voxels(self, num_categories: int, voxel_ml: float | None) -> np.ndarray:
        """Per-category least 3D component size in voxels ``(C,)``: the larger of
        ``min_volume_3d`` and ``min_volume_ml`` at a voxel of ``voxel_ml`` millilitres.

        Raises:
            ValueError: a value count that is neither 1 nor ``C``, or
                ``min_volume_ml`` set without a positive ``voxel_ml``.
        """
        voxels = self.min_volumes(num_categories)
        ml = self.min_volumes_ml(num_categories)
        if not ml.any():
            return voxels
        if voxel_ml is None or not voxel_ml > 0:
            raise ValueError(f"min_volume_ml is set: the voxel volume is needed, got {voxel_ml!r}")
        # The tolerance keeps a volume chosen as N voxels at N voxels (0.675 / 0.003375
        # is 200.00000000000003 in floating point).
        return np.maximum(voxels, np.ceil(ml / voxel_ml - 1e-6).astype(np.int64))

    def min_totals_ml(self, num_categories: int) -> np.ndarray:
        """Per-category least total volume in millilitres ``(C,)`` (all 0 when disabled).

        Raises:
            ValueError: if ``min_total_ml`` has neither 1 nor ``C`` values.
        """
        values = self.min_total_ml if self.enabled else (0.0,)
        return _per_category("min_total_ml", values, num_categories, float)

    def component_thresholds(self, num_categories: int) -> np.ndarray | None:
        """Per-category seed score thresholds ``(C,)``, or None when hysteresis is off.

        Raises:
            ValueError: if ``component_score_threshold`` has neither 1 nor ``C`` values.
        """
        values = self.component_score_threshold
        if not self.enabled or not values:
            return None
        return _per_category("component_score_threshold", values, num_categories, float)

    @classmethod
    def from_cfg(cls, node: Any) -> PostprocessParams:
        """Build from a config node with UPPERCASE keys (see :attr:`CFG_KEYS`).

        Args:
            node: a yacs/fvcore ``CfgNode`` (or anything with those attributes,
                e.g. ``types.SimpleNamespace``), such as ``cfg.BRAINSEG.POSTPROCESS``.

        Raises:
            ValueError: if keys are missing (all are named) or a value is invalid.
        """
        missing = [key for key in cls.CFG_KEYS.values() if not hasattr(node, key)]
        if missing:
            raise ValueError(f"post-processing config node lacks keys {missing}")
        return cls(**{field: getattr(node, key) for field, key in cls.CFG_KEYS.items()})

    def to_cfg_dict(self) -> dict[str, Any]:
        """UPPERCASE key -> value, so a config can take its defaults from here.

        ``CfgNode(PostprocessParams().to_cfg_dict())`` gives a node with the
        defaults above, so config defaults are not a second copy kept by hand.
        """
        return {key: getattr(self, field) for field, key in self.CFG_KEYS.items()}

    @classmethod
    def raw(cls, score_threshold: float | None = None) -> PostprocessParams:
        """Every post-processing step off; only the score threshold remains.

        Args:
            score_threshold: ``None`` keeps the default threshold. Pass the
                threshold of the post-processed params to compare like with like:
                ``PostprocessParams.raw(params.score_threshold)``.
        """
        if score_threshold is None:
            score_threshold = cls.score_threshold
        return cls(
            enabled=False,
            score_threshold=score_threshold,
            opening_kernel=0,
            closing_kernel=0,
            fill_holes=False,
            min_area_2d=0,
            min_volume_3d=(0,),
            min_volume_ml=(0.0,),
            keep_largest_k=0,
            component_score_threshold=(),
            core_hull_margin=-1,
            min_total_ml=(0.0,),
        )


def _per_category(name: str, values: tuple, num_categories: int, dtype) -> np.ndarray:
    """``values`` (one, or one per category) as a ``(C,)`` array.

    Raises:
        ValueError: neither 1 nor ``C`` values (the message names the field).
    """
    if len(values) not in (1, num_categories):
        raise ValueError(
            f"{name} has {len(values)} values; give 1 or one per category ({num_categories})"
        )
    return np.broadcast_to(np.asarray(values, dtype=dtype), (num_categories,)).copy()


def _values_at_least_zero(name: str, value, *, integral: bool) -> tuple:
    """``value`` (a number, or a non-empty tuple or list of them), each finite and >= 0.

    Raises:
        ValueError: anything else (the message names the field and the value).
    """
    kind = numbers.Integral if integral else numbers.Real
    values = (value,) if isinstance(value, kind) and not isinstance(value, bool) else value
    if (
        not isinstance(values, (tuple, list))
        or not values
        or not all(
            isinstance(v, kind) and not isinstance(v, bool) and 0 <= v < float("inf")
            for v in values
        )
    ):
        raise ValueError(
            f"{name} must be {'integers' if integral else 'numbers'} >= 0 (one, or one per "
            f"category), got {value!r}"
        )
    return tuple(values)
