"""What a converted dataset is: its ``dataset.json`` (:class:`DatasetInfo`) and the
preprocessing that made its slices (:class:`PreprocessOptions`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from brainseg_d2.structures.geometry import CANONICAL_ORIENTATION

#: Every BraTS sequence, in the order they become image channels. T1 without
#: contrast is what tells enhancement apart in T1ce, so all four reach the model.
BRATS_CHANNELS = ("flair", "t1", "t1ce", "t2")

#: How each channel's intensities are put on the 0-255 scale (``PreprocessOptions``).
NORMALIZATIONS = ("percentile", "zscore")

#: ``zscore`` normalisation: brain z-scores mapped to 0 and 255. On the phantom the
#: converter's 0.5th and 99.5th brain percentiles lie at median z -2.97 and +3.43 (the
#: upper one from +1.56 to +4.85 between cases, with the size of a bright lesion), so
#: this keeps the percentile scale's contrast on average with a steady reference.
ZSCORE_RANGE = (-3.0, 3.5)

#: How slice PNGs hold their channels (``data.io.png.tile_channels``), in dataset.json.
IMAGE_LAYOUT = "channel_tiles"


@dataclass(frozen=True)
class PreprocessOptions:
    """How volumes become 8-bit slices.

    Attributes:
        channels: source channel names, one per image channel, in order (at
            least one, no repeats).
        slice_axis: ``axial``, ``coronal`` or ``sagittal``.
        lower_percentile: intensity mapped to 0, computed inside the brain
            (``percentile`` normalisation).
        upper_percentile: intensity mapped to 255, computed inside the brain
            (``percentile`` normalisation).
        normalization: ``percentile`` (the brain's lower and upper percentiles to
            0 and 255) or ``zscore`` (the brain's mean minus 3 SD to 0 and mean
            plus 3.5 SD to 255: :data:`ZSCORE_RANGE`; the converter's default).
            This class's own default stays ``percentile``: that is what a
            ``dataset.json`` written before the option existed was made with.
    """

    channels: tuple[str, ...] = BRATS_CHANNELS
    slice_axis: str = "axial"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    normalization: str = "percentile"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise ValueError(
                f"channels must name at least one channel, each once, got {list(self.channels)}"
            )
        if self.slice_axis not in CANONICAL_ORIENTATION:
            raise ValueError(
                f"unknown slice_axis {self.slice_axis!r}; choose one of "
                f"{sorted(CANONICAL_ORIENTATION)}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {self.normalization!r}; choose one of "
                f"{', '.join(NORMALIZATIONS)}"
            )
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                f"need 0 <= lower_percentile < upper_percentile <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )


@dataclass(frozen=True)
class DatasetInfo:
    """A converted dataset's ``dataset.json``; every default is here and nowhere else.

    Attributes:
        channels: source channel of each image channel, in order.
        target: what the categories are: ``labels``, ``regions`` or ``binary``.
        label_convention: the raw label convention of the cases (``mixed`` when
            they differ; each volume's own is in ``volumes.json``).
        slice_axis: axis the volumes were cut along.
        image_layout: how slice PNGs hold their channels (:data:`IMAGE_LAYOUT`;
            None for datasets older than the channel tiles).
        options: the converter's options and how the cases were found.
        name, tool_version, categories, classes, splits, counts, skipped,
        file_name_root, sem_seg_file_name_root: the rest of the file, as written.
    """

    channels: tuple[str, ...]
    target: str = "labels"
    label_convention: str = "brats2021"
    slice_axis: str = "axial"
    image_layout: str | None = None
    options: Mapping = field(default_factory=dict)
    name: str = ""
    tool_version: str = ""
    categories: tuple[Mapping, ...] = ()
    classes: tuple[str, ...] = ()
    splits: Mapping = field(default_factory=dict)
    counts: Mapping = field(default_factory=dict)
    skipped: tuple[Mapping, ...] = ()
    file_name_root: str = "images/<split>"
    sem_seg_file_name_root: str = "labels/<split>"

    @classmethod
    def from_json(cls, data: Mapping) -> DatasetInfo:
        """From the contents of ``dataset.json``; keys it lacks take the defaults.

        Raises:
            ValueError: no ``channels`` (top level or in ``options``).
        """
        options = dict(data.get("options") or {})
        channels = data.get("channels") or options.get("channels")
        if not channels:
            raise ValueError("dataset info names no channels ('channels' / 'options.channels')")
        known = {
            k: data[k]
            for k in ("target", "label_convention", "slice_axis", "image_layout", "name",
                      "tool_version", "splits", "counts", "file_name_root",
                      "sem_seg_file_name_root")
            if k in data
        }  # fmt: skip
        return cls(
            channels=tuple(channels),
            options=options,
            categories=tuple(data.get("categories", ())),
            classes=tuple(data.get("classes", ())),
            skipped=tuple(data.get("skipped", ())),
            **known,
        )

    @classmethod
    def load(cls, source: DatasetInfo | Mapping | str | os.PathLike) -> DatasetInfo:
        """From its contents, the ``dataset.json`` file, or the dataset folder.

        Raises:
            ValueError: unreadable file (naming it), or no channels.
        """
        if isinstance(source, DatasetInfo):
            return source
        if isinstance(source, Mapping):
            return cls.from_json(source)
        path = Path(source)
        if path.is_dir():
            path = path / "dataset.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read dataset info {path}: {exc}") from None
        try:
            return cls.from_json(data)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path} is not a dataset.json ({exc})") from None

    def to_json(self) -> dict:
        """The contents of ``dataset.json``."""
        return {
            "name": self.name,
            "tool_version": self.tool_version,
            "label_convention": self.label_convention,
            "target": self.target,
            "categories": [dict(c) for c in self.categories],
            "classes": list(self.classes),
            "channels": list(self.channels),
            "image_layout": self.image_layout,
            "slice_axis": self.slice_axis,
            "splits": dict(self.splits),
            "counts": dict(self.counts),
            "options": dict(self.options),
            "skipped": [dict(s) for s in self.skipped],
            "file_name_root": self.file_name_root,
            "sem_seg_file_name_root": self.sem_seg_file_name_root,
        }

    @property
    def preprocess_options(self) -> PreprocessOptions:
        """The preprocessing the converter applied (so the predictor applies the same).

        The converter's recorded ``options`` win; without them the top-level
        ``channels`` and ``slice_axis`` are used with the default percentiles.
        """
        opts = self.options
        defaults = PreprocessOptions(channels=self.channels)
        return PreprocessOptions(
            channels=tuple(opts.get("channels") or self.channels),
            slice_axis=opts.get("slice_axis") or self.slice_axis,
            lower_percentile=opts.get("lower_percentile", defaults.lower_percentile),
            upper_percentile=opts.get("upper_percentile", defaults.upper_percentile),
            # Datasets converted before the option existed were percentile-scaled.
            normalization=opts.get("normalization", "percentile"),
        )

    def shorter_side_mm(self, split: str = "train") -> tuple[float, float] | None:
        """[least, most] millimetres the shorter side of a ``split`` slice spans (None for
        datasets converted before it was recorded)."""
        side = (self.counts.get(split) or {}).get("shorter_side_mm")
        return (float(side[0]), float(side[1])) if side else None

    @property
    def context_slices(self) -> int:
        """Neighbouring slices written on each side of a kept slice (0: none)."""
        return int(self.options.get("context_slices") or 0)

    @property
    def label_conventions(self) -> dict[str, dict]:
        """The users' label conventions the dataset defines, name -> definition."""
        return dict(self.options.get("label_conventions") or {})
