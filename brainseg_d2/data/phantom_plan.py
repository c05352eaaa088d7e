"""What a phantom case is drawn from, before any image is made: the ranges and rates
(:class:`PhantomParams`) and one case's draws (:func:`plan_case`, milliseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from brainseg_d2.data.phantom_anatomy import (
    AnatomyDraw,
    AnatomyParams,
    draw_anatomy,
)
from brainseg_d2.data.phantom_contrast import ContrastParams, SequenceAppearance, draw_appearance
from brainseg_d2.data.phantom_template import SITE_SPACING, sites
from brainseg_d2.data.phantom_tumour import TumourParams, TumourPlan, plan_tumour

#: Voxel sizes the phantom renders (mm): the template is 1 mm; coarser than 4 mm
#: loses small tumours.
SPACING_RANGE = (1.0, 4.0)


@dataclass(frozen=True)
class PhantomParams:
    """Every range and rate of the phantom; the defaults are what the demo trains on.

    Change one part with :func:`dataclasses.replace`, e.g.
    ``replace(p, tumour=replace(p.tumour, p_multifocal=0.5))``.
    """

    tumour: TumourParams = field(default_factory=TumourParams)
    anatomy: AnatomyParams = field(default_factory=AnatomyParams)
    contrast: ContrastParams = field(default_factory=ContrastParams)


@dataclass(frozen=True)
class CasePlan:
    """Everything drawn for a case before any image is made (see :func:`plan_case`)."""

    tumour: TumourPlan
    anatomy: AnatomyDraw
    appearance: dict[str, SequenceAppearance]

    @property
    def kind(self) -> str:
        return self.tumour.kind


def check_spacing(spacing: float) -> float:
    low, high = SPACING_RANGE
    if not low <= float(spacing) <= high:
        raise ValueError(f"spacing must be between {low:g} and {high:g} mm, got {spacing}")
    return float(spacing)


def case_streams(seed: int | Sequence[int]) -> list[np.random.Generator]:
    """Independent generators: tumour plan, anatomy, appearance, rendering."""
    if isinstance(seed, (int, np.integer)):
        values = [seed]
    elif isinstance(seed, Sequence) and not isinstance(seed, str):
        values = list(seed)
    else:
        values = []
    if not values or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 for v in values
    ):
        raise ValueError(f"seed must be a non-negative integer or a sequence of them, not {seed!r}")
    children = np.random.SeedSequence([int(v) for v in values]).spawn(4)
    return [np.random.default_rng(s) for s in children]


def check_p_empty(p_empty: float) -> None:
    if not 0.0 <= p_empty <= 1.0:
        raise ValueError(f"p_empty must be between 0 and 1, got {p_empty}")


def plan_case(
    seed: int | Sequence[int], *, p_empty: float = 0.1, params: PhantomParams | None = None
) -> CasePlan:
    """Draw a case's tumour, anatomy and appearance without making images (milliseconds).

    :func:`generate_case` with the same seed, ``p_empty`` and ``params`` renders
    exactly this plan, at any spacing.

    Args:
        seed: non-negative integer or a sequence of them.
        p_empty: probability that the case has no tumour.
        params: ranges and rates (default :class:`PhantomParams`).

    Returns:
        the :class:`CasePlan`.
    """
    check_p_empty(p_empty)
    params = params or PhantomParams()
    rng_tumour, rng_anatomy, rng_look, _ = case_streams(seed)
    tumour = plan_tumour(rng_tumour, params.tumour, sites(), p_empty, SITE_SPACING)
    return CasePlan(
        tumour,
        draw_anatomy(rng_anatomy, params.anatomy),
        draw_appearance(rng_look, params.contrast),
    )
