"""Domain-randomised MRI appearance for the phantom (after SynthSeg, Billot et al. 2023).

Per case and per sequence, :func:`draw_appearance` draws every tissue's mean
signal relative to white matter from its own range (a distribution per tissue
per sequence rather than one fixed table), a scanner gain, within-tissue
texture, a bias-field strength, a noise level, a gamma, and an acquisition
resolution (in-plane blur, and with some probability thick slices along one
axis). This module only draws numbers (:class:`SequenceAppearance`);
:func:`~brainseg_d2.data.phantom_render.render_sequence` turns them and the
case's tissue maps into an image.

The ranges keep the contrasts that define the tumour regions in every draw
(edema hyperintense on FLAIR and T2; enhancing tumour brighter, relative to
white matter, on T1ce than on T1; necrosis darker than enhancing tumour on
T1ce; the necrotic and non-enhancing core brighter than the edema around it on
T2 and no brighter on T1) and vary everything else widely. BraTS labels are
drawn from the images (edema is the FLAIR/T2 hyperintensity, enhancing tumour
the T1ce hyperintensity), so those lesions are also brighter than the brighter
of grey and white matter by a drawn factor (``ContrastParams.lesion_contrast``):
a lesion that looks like normal tissue would be a label the images do not carry.
The ranges were chosen so that the per-tissue intensities of real BraTS scans
after the converter's normalisation fall well inside what the phantom produces
(``bench/phantom.py --real``; BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

SEQUENCES = ("flair", "t1", "t1ce", "t2")
#: Normal tissues, tumour tissues (NEC/NET are both BraTS label 1) and enhancing vessels.
TISSUES = ("csf", "gm", "wm", "ed", "et", "nec", "net", "vessel")

Range = tuple[float, float]


class FrozenTable(Mapping):
    """A read-only, hashable mapping (nested mappings are frozen too)."""

    def __init__(self, data: Mapping) -> None:
        self._data = {
            k: FrozenTable(v) if isinstance(v, Mapping) else tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
        }

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self) -> Iterator:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._data.items())))

    def __repr__(self) -> str:
        return repr(self._data)


def _default_means() -> dict[str, dict[str, Range]]:
    # Signal relative to white matter (wm = 1), each drawn log-uniformly. The
    # core's nec and net are not here: FLAIR, T1 and T2 draw them relative to the
    # edema (ContrastParams.core_vs_edema), and T1ce's et, nec and net derive from
    # the tissue's T1 signal, et enhanced, nec and net not (see ContrastParams).
    return {
        "flair": {
            "csf": (0.3, 0.9),
            "gm": (0.9, 1.45),
            "ed": (1.25, 2.4),
            "et": (1.1, 2.4),
            "vessel": (0.5, 1.5),
        },
        "t1": {
            "csf": (0.4, 0.85),
            "gm": (0.65, 0.97),
            "ed": (0.75, 1.05),
            "et": (0.65, 1.25),
            "vessel": (0.4, 1.0),
        },
        "t1ce": {
            "csf": (0.4, 0.95),
            "gm": (0.65, 1.0),
            "ed": (0.7, 1.05),
            "vessel": (2.0, 4.5),
        },
        "t2": {
            "csf": (1.6, 4.5),
            "gm": (1.05, 1.6),
            "ed": (1.1, 2.4),
            "et": (1.1, 2.4),
            "vessel": (0.3, 1.2),
        },
    }


@dataclass(frozen=True)
class ContrastParams:
    """Ranges of the per-sequence appearance draw.

    Attributes:
        means: sequence -> tissue -> (low, high) signal relative to white matter,
            drawn log-uniformly; nec and net come from ``core_vs_edema`` and
            T1ce's et, nec and net from the ratios below.
        core_vs_edema: sequence -> nec / net -> (low, high) signal of the
            necrotic / non-enhancing core relative to the case's edema in that
            sequence, drawn log-uniformly. Necrosis holds fluid: brighter than
            edema on T2 and darker on T1; non-enhancing tumour less so. Real BraTS
            scans measure 0.94-1.26 (FLAIR), 0.85-1.00 (T1) and 1.19-1.41 (T2)
            for their NCR/NET label over their edema (BENCHMARKS.md "The tumour
            core against edema"); the ranges hold those with a margin.
        enhancement: T1ce/T1 ratio of enhancing tumour (each relative to white matter).
        lesion_contrast: sequence -> tissue -> (low, high) least signal of that
            lesion tissue relative to the brighter of white and grey matter in
            that sequence, drawn log-uniformly; the lesion's mean is the larger
            of this and its ``means``/``enhancement`` draw.
        t1ce_nec / t1ce_net: T1ce/T1 ratio of necrosis / non-enhancing tumour
            (each relative to white matter): about 1, as neither takes up
            contrast. Real BraTS scans measure 0.92-1.22 for their NCR/NET label
            (BENCHMARKS.md "Non-enhancing tissue on T1ce"). With the default
            ranges both stay below the least enhancing-tumour signal (T1 at most
            the edema's, itself at most 1.05; 1.05 x 1.2 < 1.3), so necrosis is
            dark in a bright rim.
        gain: scanner gain (raw intensity of white matter), log-uniform.
        texture: within-tissue heterogeneity of normal tissue (relative sd).
        tumour_texture: the same for tumour tissue.
        bias_sd: standard deviation of the log bias field.
        noise_sd: noise standard deviation relative to white matter.
        gamma: exponent applied to the image scaled by its gain, log-uniform.
        rim: signal just outside the brain (skull, meninges, background),
            relative to white matter: the brain's edge voxels are partly that, so
            skull-stripped scans have a dark rim, the darkest voxels of real scans.
        blur_mm: in-plane blur (Gaussian FWHM in mm); 0 keeps the grid's resolution.
        p_thick_slices: probability that a sequence is acquired with thick slices.
        p_thick_slices_by_sequence: sequence -> that probability for it, where it
            differs from ``p_thick_slices``. BraTS acquires T1ce mostly as a 3D
            volume of about 1 mm voxels and the other sequences mostly as 2D
            slices 2-6 mm thick (Menze et al., IEEE TMI 2015). Of the three real
            scans measured (``bench/acquisition.py``; BENCHMARKS.md "T1ce acquired
            in 3D") T1 is thick-sliced in all three, T1ce clearly in one and
            mildly in one (about 3 mm slices): too few to set a rate, which
            follows the protocol.
        slice_mm: slice thickness when it is.
        slice_axes: (axial, coronal, sagittal) weights of the thick-slice axis.
    """

    means: Mapping[str, Mapping[str, Range]] = field(default_factory=_default_means)
    core_vs_edema: Mapping[str, Mapping[str, Range]] = field(
        default_factory=lambda: {
            "flair": {"nec": (0.65, 1.35), "net": (0.8, 1.35)},
            "t1": {"nec": (0.6, 1.0), "net": (0.75, 1.0)},
            "t2": {"nec": (1.1, 1.6), "net": (1.05, 1.4)},
        }
    )
    enhancement: Range = (1.25, 2.6)
    lesion_contrast: Mapping[str, Mapping[str, Range]] = field(
        default_factory=lambda: {
            "flair": {"ed": (1.2, 2.0)},
            "t2": {"ed": (1.15, 1.8)},
            "t1ce": {"et": (1.3, 2.4)},
        }
    )
    t1ce_nec: Range = (0.85, 1.2)
    t1ce_net: Range = (0.85, 1.2)
    gain: Range = (300.0, 3000.0)
    texture: Range = (0.01, 0.04)
    tumour_texture: Range = (0.03, 0.15)
    bias_sd: Range = (0.0, 0.12)
    noise_sd: Range = (0.005, 0.05)
    gamma: Range = (0.6, 1.5)
    rim: Range = (0.0, 0.25)
    blur_mm: Range = (0.0, 2.0)
    p_thick_slices: float = 0.6
    p_thick_slices_by_sequence: Mapping[str, float] = field(default_factory=lambda: {"t1ce": 0.25})
    slice_mm: Range = (2.0, 7.0)
    slice_axes: tuple[float, float, float] = (0.6, 0.2, 0.2)

    def __post_init__(self) -> None:
        object.__setattr__(self, "means", FrozenTable(self.means))  # hashable, read-only
        object.__setattr__(self, "lesion_contrast", FrozenTable(self.lesion_contrast))
        object.__setattr__(self, "core_vs_edema", FrozenTable(self.core_vs_edema))
        object.__setattr__(
            self, "p_thick_slices_by_sequence", FrozenTable(self.p_thick_slices_by_sequence)
        )
        # T1ce's core comes from t1ce_nec / t1ce_net, not from core_vs_edema.
        _check_table("core_vs_edema", self.core_vs_edema, ("flair", "t1", "t2"), {"nec", "net"})
        _check_table("lesion_contrast", self.lesion_contrast, SEQUENCES, {"ed", "et", "nec", "net"})
        for seq, table in self.core_vs_edema.items():
            both = sorted(set(table) & set(self.means.get(seq, {})))
            if both:
                raise ValueError(f"{both} of {seq!r} are in both means and core_vs_edema; give one")
        missing = [s for s in SEQUENCES if s not in self.means]
        if missing:
            raise ValueError(f"means has no entry for {missing}")
        for seq, table in self.means.items():
            need = {"csf", "gm", "ed", "vessel"} | (
                set()
                if seq == "t1ce"
                else {"et", "nec", "net"} - set(self.core_vs_edema.get(seq, {}))
            )
            if need - set(table):
                raise ValueError(f"means[{seq!r}] lacks {sorted(need - set(table))}")
            for tissue, r in table.items():
                _check_range(f"means[{seq!r}][{tissue!r}]", r, positive=True)
        for name in ("enhancement", "t1ce_nec", "t1ce_net", "gain", "gamma"):
            _check_range(name, getattr(self, name), positive=True)
        for name in (
            "texture",
            "tumour_texture",
            "bias_sd",
            "noise_sd",
            "rim",
            "blur_mm",
            "slice_mm",
        ):
            _check_range(name, getattr(self, name))
        if not 0.0 <= self.p_thick_slices <= 1.0:
            raise ValueError(f"p_thick_slices must be between 0 and 1, got {self.p_thick_slices}")
        for seq, p in self.p_thick_slices_by_sequence.items():
            if seq not in SEQUENCES or not 0.0 <= p <= 1.0:
                raise ValueError(
                    f"p_thick_slices_by_sequence[{seq!r}] must be a probability (0 to 1) "
                    f"of one of {list(SEQUENCES)}, got {p}"
                )

    def thick_slice_probability(self, sequence: str) -> float:
        """Probability that ``sequence`` is acquired with thick slices."""
        return self.p_thick_slices_by_sequence.get(sequence, self.p_thick_slices)


def _check_table(name: str, table: Mapping, sequences, tissues: set[str]) -> None:
    """A sequence -> tissue -> range table: known keys and positive ranges."""
    for seq, ranges in table.items():
        if seq not in sequences or set(ranges) - tissues:
            raise ValueError(
                f"{name}[{seq!r}] must map some of {sorted(tissues)} of one of {list(sequences)}"
            )
        for tissue, r in ranges.items():
            _check_range(f"{name}[{seq!r}][{tissue!r}]", r, positive=True)


def _check_range(name: str, r: Range, positive: bool = False) -> None:
    if len(r) != 2 or not (0 < r[0] if positive else 0 <= r[0]) or not r[0] <= r[1]:
        raise ValueError(
            f"{name} must be (low, high) with {'0 <' if positive else '0 <='} low <= high, got {r}"
        )


@dataclass(frozen=True)
class SequenceAppearance:
    """One sequence's drawn appearance.

    Attributes:
        means: tissue -> signal relative to white matter (``wm`` is 1).
        gain: raw intensity of white matter.
        texture / tumour_texture: relative sd of the within-tissue texture.
        bias_sd: sd of the log bias field.
        noise_sd: noise sd relative to white matter.
        gamma: intensity exponent.
        rim: signal outside the brain relative to white matter.
        blur_mm: in-plane blur FWHM in mm.
        slice_axis: array axis (0 z, 1 y, 2 x) of thick slices, or None.
        slice_mm: slice thickness along ``slice_axis``.
    """

    means: dict[str, float]
    gain: float
    texture: float
    tumour_texture: float
    bias_sd: float
    noise_sd: float
    gamma: float
    rim: float
    blur_mm: float
    slice_axis: int | None
    slice_mm: float


def _log_uniform(rng: np.random.Generator, r: Range) -> float:
    return float(np.exp(rng.uniform(np.log(r[0]), np.log(r[1]))))


def draw_appearance(
    rng: np.random.Generator, params: ContrastParams
) -> dict[str, SequenceAppearance]:
    """Draw every sequence's appearance (no images; a fixed number of draws).

    Returns:
        sequence name (:data:`SEQUENCES`) -> :class:`SequenceAppearance`.
    """
    out = {}
    t1_tumour: dict[str, float] = {}
    for seq in SEQUENCES:
        table = params.means[seq]
        means = {"wm": 1.0}
        for tissue in TISSUES:
            if tissue == "wm":
                continue
            relative = params.core_vs_edema.get(seq, {}).get(tissue)
            if relative is not None:  # ed is drawn before nec and net
                value = means["ed"] * _log_uniform(rng, relative)
            else:
                value = _log_uniform(rng, table.get(tissue, (1.0, 1.0)))
            if seq == "t1ce" and tissue == "et":
                value = t1_tumour["et"] * _log_uniform(rng, params.enhancement)
            elif seq == "t1ce" and tissue in ("nec", "net"):
                ratio = params.t1ce_nec if tissue == "nec" else params.t1ce_net
                value = t1_tumour[tissue] * _log_uniform(rng, ratio)
            visible = params.lesion_contrast.get(seq, {}).get(tissue)
            if visible is not None:  # gm is drawn before any lesion tissue
                value = max(value, max(1.0, means["gm"]) * _log_uniform(rng, visible))
            means[tissue] = value
        if seq == "t1":
            t1_tumour = {k: means[k] for k in ("et", "nec", "net")}
        u_thick, u_axis = rng.random(2)
        axis = int(np.searchsorted(np.cumsum(params.slice_axes) / sum(params.slice_axes), u_axis))
        out[seq] = SequenceAppearance(
            means=means,
            gain=_log_uniform(rng, params.gain),
            texture=float(rng.uniform(*params.texture)),
            tumour_texture=float(rng.uniform(*params.tumour_texture)),
            bias_sd=float(rng.uniform(*params.bias_sd)),
            noise_sd=float(rng.uniform(*params.noise_sd)),
            gamma=_log_uniform(rng, params.gamma),
            rim=float(rng.uniform(*params.rim)),
            blur_mm=float(rng.uniform(*params.blur_mm)),
            # Axial slices are along z (array axis 0), coronal y (1), sagittal x (2).
            slice_axis=min(axis, 2) if u_thick < params.thick_slice_probability(seq) else None,
            slice_mm=float(rng.uniform(*params.slice_mm)),
        )
    return out
