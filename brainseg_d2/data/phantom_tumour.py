"""Glioma morphology for the MRI phantom: a cheap random plan (rendering: phantom_lesions).

:func:`plan_tumour` draws everything about a case's tumour that is a number or
a choice (grade, lesions, sites, volumes, enhancement pattern, mass effect)
without touching an image, so rates and ranges can be checked over many
cases in milliseconds. :func:`~brainseg_d2.data.phantom_lesions.render_tumour`
turns a plan into a map of tumour tissue codes on the template grid.

Shapes are ranked random fields, so planned volumes are exact on the template
grid: a lesion's core is the ``N`` voxels with the smallest lobulated "radius"
(several random ellipsoids, their outline modulated by smooth noise), and its
edema is the next voxels by the same radius stretched outside white matter, so
edema reaches further along white matter than into grey matter and stops at
the ventricles. The
case's deformation (head size, mass effect) and resampling to the output
spacing then change them: measured over phantom cases, the written whole
tumour is 0.6-1.4 times the planned volume at 3 mm and 0.7-1.2 at 1.5 mm, and
nearby satellites may merge with the main lesion.

Arrays are numpy ``(z, y, x)``; physical points are LPS millimetres.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Tumour tissue codes of a rendered map (not raw label values): necrosis,
# edema, enhancing tumour, non-enhancing tumour. NEC and NET are both BraTS
# label 1 (NCR/NET) but look different.
NEC, ED, ET, NET = 1, 2, 3, 4

LOCATIONS = ("lobar", "periventricular", "cortical")
_MASS_BALL = 1.4  # mass-effect ball radius / core sphere radius
HIGH_GRADE_PATTERNS = ("thin_rim", "thick_rim", "partial_rim", "nodular", "solid")
LOW_GRADE_PATTERNS = ("non_enhancing", "patchy")

Range = tuple[float, float]


@dataclass(frozen=True)
class TumourParams:
    """Rates and ranges of the tumour plan; every range is drawn uniformly unless noted.

    Attributes:
        p_low_grade: share of tumour cases that are low-grade (non-enhancing core).
        p_multifocal: share of tumour cases with satellite lesions.
        p_mass_effect: share of tumour cases whose cores push tissue aside.
        volume_ml: planned whole-tumour volume (all lesions, core + edema); the written
            one differs (module docstring).
        volume_skew: the volume is ``lo * (hi / lo) ** (u ** volume_skew)`` with
            ``u`` uniform: 1 is log-uniform, smaller favours large tumours (0.5:
            median ~50 ml, ~8% under 5 ml, ~30% over 100 ml for 1-250 ml).
        core_fraction_high / core_fraction_low: core (NCR + ET) share of a lesion.
        p_periventricular / p_cortical: share of lesions next to the ventricles /
            under the cortex; the rest are in deep lobar white matter.
        patterns: high-grade enhancement patterns and their weights.
        p_low_grade_enhancement: share of low-grade tumours with patchy enhancement.
        thin_rim_mm / thick_rim_mm: enhancing wall thickness of thin / thick rims
            (partial rims draw from both).
        enhancing_fraction: rim coverage of a partial rim, or core share of the
            nodules of a nodular or patchy pattern.
        satellites: (min, max) extra lesions of a multifocal case.
        satellite_fraction: volume of a satellite relative to the main lesion.
        satellite_distance_mm: centre distance of a satellite from the main lesion.
        mass_effect: share of the core volume that displaces tissue (the rest
            replaces it) when a case has mass effect.
        lobes: (min, max) ellipsoids in a core.
        lobulation: amplitude of the smooth noise on the core outline.
        edema_wm_preference: how much further edema reaches in white matter than
            outside it (radius stretch factor ``1 + p * (1 - wm)``).
        edema_irregularity: amplitude of the smooth noise on the edema outline.
        edema_border_mm: width of the edema's fuzzy border in the images (with
            ``edema_fade`` 1 the label is its half-maximum level).
        edema_wm_scale_mm: the scale at which edema follows white matter: the
            template's white-matter fraction is smoothed by a Gaussian of this
            sigma (mm) before it stretches the reach, so edema runs along the
            broad white-matter cores of the gyri instead of every thin strand;
            0 (the default) follows the template voxel by voxel. Fixed, not
            drawn. Real BraTS whole tumours are more compact than the default's
            (an opening with a 3 mm ball removes 4.5-10 % of the three measured,
            8-21 % of the phantom's large ones; 3 mm gives 3-16 %), but a model
            trained on 3 mm did worse on those real scans on both seeds tried
            (BENCHMARKS.md "Whole-tumour shape"), so the default stays 0.
        edema_fade: exponent on the edema's fuzzy opacity, which is 0.5 on the
            label's outline at 1; at 2 the outline keeps a quarter of the edema's
            contrast, at 3 an eighth, so the label reaches out over the edema's
            faint edge. Real BraTS labels do: FLAIR falls through half the edema's
            contrast 0.5-1.3 mm inside their outline, in the phantom without the
            fade 0.4 mm inside to 0.2 mm outside (``bench/border_profile.py``,
            BENCHMARKS.md "Where the whole tumour's outline lies").
    """

    p_low_grade: float = 0.25
    p_multifocal: float = 0.15
    p_mass_effect: float = 0.7
    volume_ml: Range = (1.0, 250.0)
    volume_skew: float = 0.5
    core_fraction_high: Range = (0.15, 0.65)
    core_fraction_low: Range = (0.25, 0.85)
    p_periventricular: float = 0.3
    p_cortical: float = 0.3
    patterns: tuple[tuple[str, float], ...] = (
        ("thin_rim", 0.25),
        ("thick_rim", 0.3),
        ("partial_rim", 0.2),
        ("nodular", 0.15),
        ("solid", 0.1),
    )
    p_low_grade_enhancement: float = 0.15
    thin_rim_mm: Range = (1.5, 3.0)
    thick_rim_mm: Range = (3.5, 8.0)
    enhancing_fraction: Range = (0.2, 0.7)
    satellites: tuple[int, int] = (1, 2)
    satellite_fraction: Range = (0.05, 0.5)
    satellite_distance_mm: Range = (20.0, 60.0)
    mass_effect: Range = (0.2, 0.8)
    lobes: tuple[int, int] = (1, 5)
    lobulation: Range = (0.05, 0.35)
    edema_wm_preference: Range = (0.5, 3.0)
    edema_irregularity: Range = (0.1, 0.4)
    edema_border_mm: Range = (1.0, 4.0)
    edema_wm_scale_mm: float = 0.0
    edema_fade: Range = (1.0, 3.0)

    def __post_init__(self) -> None:
        for name in ("p_low_grade", "p_multifocal", "p_mass_effect", "p_low_grade_enhancement"):
            _check_probability(name, getattr(self, name))
        _check_probability(
            "p_periventricular + p_cortical", self.p_periventricular + self.p_cortical
        )
        for name, value in vars(self).items():
            if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], tuple):
                if not 0 <= value[0] <= value[1]:
                    raise ValueError(
                        f"{name} must be (low, high) with 0 <= low <= high, got {value}"
                    )
        scale = self.edema_wm_scale_mm
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or not scale >= 0:
            raise ValueError(f"edema_wm_scale_mm must be a number >= 0, got {scale!r}")
        if not self.volume_ml[0] > 0:
            raise ValueError(f"volume_ml must be positive, got {self.volume_ml}")
        if not self.edema_fade[0] > 0:
            raise ValueError(f"edema_fade must be positive, got {self.edema_fade}")
        if not 0.0 < self.mass_effect[1] < 1.0:
            raise ValueError(f"mass_effect must lie below 1, got {self.mass_effect}")
        if not self.lobes[0] >= 1:
            raise ValueError(f"lobes must be at least 1, got {self.lobes}")
        names = [p for p, _ in self.patterns]
        unknown = sorted(set(names) - set(HIGH_GRADE_PATTERNS))
        if unknown or not self.patterns or min(w for _, w in self.patterns) < 0:
            raise ValueError(
                f"patterns must give non-negative weights to {HIGH_GRADE_PATTERNS}, got "
                f"{self.patterns}"
            )


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class Lesion:
    """One lesion of a tumour plan.

    Attributes:
        centre: template-space physical point (LPS mm) of the core.
        location: one of :data:`LOCATIONS`.
        volume_ml: planned lesion volume (core + edema; module docstring).
        core_fraction: core share of ``volume_ml``.
        pattern: one of :data:`HIGH_GRADE_PATTERNS` or :data:`LOW_GRADE_PATTERNS`.
        rim_mm: enhancing wall thickness (rim patterns).
        enhancing_fraction: rim coverage (partial rim) or nodule share of the core.
        mass_effect: share of the core volume that displaces tissue; 0 for none.
        lobes, lobulation: core shape.
        edema_wm_preference, edema_irregularity, edema_border_mm,
        edema_wm_scale_mm, edema_fade: edema shape and border.
    """

    centre: tuple[float, float, float]
    location: str
    volume_ml: float
    core_fraction: float
    pattern: str
    rim_mm: float
    enhancing_fraction: float
    mass_effect: float
    lobes: int
    lobulation: float
    edema_wm_preference: float
    edema_irregularity: float
    edema_border_mm: float
    edema_wm_scale_mm: float = 0.0
    edema_fade: float = 1.0

    @property
    def core_ml(self) -> float:
        return self.volume_ml * self.core_fraction

    @property
    def core_radius_mm(self) -> float:
        """Radius of a sphere of the core's volume in the output image."""
        return float(np.cbrt(3.0 * self.core_ml * 1000.0 / (4.0 * np.pi)))

    @property
    def mass_ball(self) -> tuple[float, float]:
        """(radius mm, displaced share) of the ball the mass effect inflates.

        The ball is wider than the core's sphere so that it holds the core's
        lobes; its displaced share is set so that ``mass_effect`` of the core's
        volume is displaced.
        """
        return _MASS_BALL * self.core_radius_mm, self.mass_effect / _MASS_BALL**3


@dataclass(frozen=True)
class TumourPlan:
    """A case's tumour before rendering.

    Attributes:
        kind: ``"empty"``, ``"high_grade"`` or ``"low_grade"``.
        lesions: main lesion first, then satellites; empty for ``"empty"``.
    """

    kind: str
    lesions: tuple[Lesion, ...] = ()

    @property
    def multifocal(self) -> bool:
        return len(self.lesions) > 1

    @property
    def mass_effect(self) -> bool:
        return any(lesion.mass_effect > 0 for lesion in self.lesions)

    @property
    def volume_ml(self) -> float:
        return float(sum(lesion.volume_ml for lesion in self.lesions))


def plan_tumour(
    rng: np.random.Generator,
    params: TumourParams,
    sites: Mapping[str, np.ndarray],
    p_empty: float,
    site_spacing: float,
) -> TumourPlan:
    """Draw a tumour plan.

    The case-level decisions (empty, grade, multifocal, mass effect) each use
    their own first draw, and every lesion draws the same numbers whatever its
    pattern, so changing one rate changes only the decisions it governs.

    Args:
        rng: the case's plan generator.
        params: rates and ranges.
        sites: location name -> (N, 3) template-space physical points where a
            lesion centre may sit (every name of :data:`LOCATIONS`, each non-empty).
        p_empty: probability of a tumour-free case.
        site_spacing: mm between site points; centres are jittered within it.

    Returns:
        the plan.
    """
    u_empty, u_grade, u_multi, u_mass = rng.random(4)
    n_satellites = int(rng.integers(params.satellites[0], params.satellites[1] + 1))
    fractions = rng.uniform(*params.satellite_fraction, size=params.satellites[1])
    lo, hi = params.volume_ml
    total = lo * (hi / lo) ** (rng.random() ** params.volume_skew)
    if u_empty < p_empty:
        return TumourPlan("empty")
    high = u_grade >= params.p_low_grade
    n_satellites = n_satellites if u_multi < params.p_multifocal else 0
    main_volume = total / (1.0 + fractions[:n_satellites].sum())
    mass = u_mass < params.p_mass_effect

    p_loc = [1.0 - params.p_periventricular - params.p_cortical, params.p_periventricular]
    location = LOCATIONS[int(np.searchsorted(np.cumsum(p_loc), rng.random(), side="right"))]
    centre = _pick_site(rng, sites[location], site_spacing)
    lesions = [_draw_lesion(rng, params, high, location, centre, main_volume, mass)]
    near = np.concatenate([sites["lobar"], sites["cortical"]])
    for i in range(n_satellites):
        dist = np.linalg.norm(near - centre, axis=1)
        lo_d, hi_d = params.satellite_distance_mm
        pool = near[(dist >= lo_d) & (dist <= hi_d)]
        site = _pick_site(rng, pool if len(pool) else near, site_spacing)
        volume = main_volume * fractions[i]
        lesions.append(_draw_lesion(rng, params, high, "satellite", site, volume, mass))
    return TumourPlan("high_grade" if high else "low_grade", tuple(lesions))


def _pick_site(rng: np.random.Generator, pool: np.ndarray, spacing: float) -> np.ndarray:
    return pool[rng.integers(len(pool))] + rng.uniform(-spacing / 2, spacing / 2, 3)


def _draw_lesion(
    rng: np.random.Generator,
    params: TumourParams,
    high: bool,
    location: str,
    centre: np.ndarray,
    volume_ml: float,
    mass: bool,
) -> Lesion:
    names = [n for n, _ in params.patterns]
    weights = np.array([w for _, w in params.patterns], float)
    u_pattern, u_low, u_thin, u_thick = rng.random(4)
    if high:
        pattern = names[int(np.searchsorted(np.cumsum(weights) / weights.sum(), u_pattern))]
    else:
        pattern = "patchy" if u_low < params.p_low_grade_enhancement else "non_enhancing"
    thin = params.thin_rim_mm[0] + u_thin * (params.thin_rim_mm[1] - params.thin_rim_mm[0])
    thick = params.thick_rim_mm[0] + u_thick * (params.thick_rim_mm[1] - params.thick_rim_mm[0])
    rim = {"thin_rim": thin, "thick_rim": thick, "partial_rim": thin if u_low < 0.5 else thick}
    core_range = params.core_fraction_high if high else params.core_fraction_low
    core_fraction = rng.uniform(*core_range)
    mass_effect = rng.uniform(*params.mass_effect)
    return Lesion(
        centre=tuple(float(v) for v in centre),
        location=location,
        volume_ml=float(volume_ml),
        core_fraction=float(core_fraction),
        pattern=pattern,
        rim_mm=float(rim.get(pattern, thin)),
        enhancing_fraction=float(rng.uniform(*params.enhancing_fraction)),
        mass_effect=float(mass_effect) if mass else 0.0,
        lobes=int(rng.integers(params.lobes[0], params.lobes[1] + 1)),
        lobulation=float(rng.uniform(*params.lobulation)),
        edema_wm_preference=float(rng.uniform(*params.edema_wm_preference)),
        edema_irregularity=float(rng.uniform(*params.edema_irregularity)),
        edema_border_mm=float(rng.uniform(*params.edema_border_mm)),
        edema_wm_scale_mm=float(params.edema_wm_scale_mm),
        edema_fade=float(rng.uniform(*params.edema_fade)),
    )
