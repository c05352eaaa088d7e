"""A 3D case: co-registered channel volumes and an optional label map."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ClassVar

import SimpleITK as sitk

from brainseg_d2.data.ground_truth import raw_labels_to_tissue
from brainseg_d2.data.preprocess import PreprocessedVolume, preprocess_volume
from brainseg_d2.data.volume_io import (
    VolumeError,
    check_frames,
    check_same_geometry,
    read_frames,
    read_header,
    read_image,
)
from brainseg_d2.labels import Target
from brainseg_d2.structures import PreprocessOptions


@dataclass(frozen=True)
class Case:
    """One volume: co-registered channels and an optional label map.

    Attributes:
        case_id: unique id (becomes the ``volume_id``).
        patient_id: patients, not cases, are split into train/val/test.
        channels: channel name -> file or DICOM folder, or an image already in
            memory (the volume predictor's in-memory input).
        mask: label map file, or None for an unlabelled case.
        label_convention: name in ``brainseg_d2.labels.CONVENTIONS``.
        expected: channel name -> where a channel missing from ``channels`` was
            looked for (for error messages).
        frames: channel name -> its volume in a 4D file (a Decathlon image holds
            every sequence of a case; each of its volumes is a channel here);
            channels not named here are 3D files.
    """

    case_id: str
    patient_id: str
    channels: Mapping[str, str | sitk.Image]
    mask: str | None
    label_convention: str
    expected: Mapping[str, str] = field(default_factory=dict)
    frames: Mapping[str, int] = field(default_factory=dict)

    #: 3D volumes can be cut along any axis.
    dimensions: ClassVar[int] = 3

    @property
    def labelled(self) -> bool:
        return self.mask is not None

    def channel_names(self) -> list[str]:
        """The channels the case has, then those it lacks (``expected``)."""
        return list(dict.fromkeys([*self.channels, *self.expected]))

    def files(self) -> list[str]:
        """All input files of the case, channels first (sorted by name), then mask."""
        out = [str(self.channels[c]) for c in sorted(self.channels)]
        return list(dict.fromkeys(out + ([self.mask] if self.mask else [])))

    def source_record(self) -> dict:
        """JSON-able description of the inputs, for ``volumes.json``."""
        frames = {"frames": dict(self.frames)} if self.frames else {}
        return {"channels": dict(self.channels), **frames, "mask": self.mask}

    def sources(self) -> dict[str, str]:
        """Channel name -> where it is read from, for messages (files only)."""
        return {
            c: f"{p} (volume {self.frames[c]})" if c in self.frames else str(p)
            for c, p in self.channels.items()
            if not isinstance(p, sitk.Image)
        }

    def read_channels(self, names: Sequence[str]) -> dict[str, sitk.Image]:
        """The named channels as 3D images (a 4D file is read once for all its volumes).

        Raises:
            VolumeError: unreadable or bad file (naming it).
        """
        out: dict[str, sitk.Image] = {}
        for name in names:
            source = self.channels[name]
            if isinstance(source, sitk.Image):
                out[name] = source
            elif name not in self.frames:
                out[name] = read_image(source)
            elif name not in out:
                same = [n for n in names if n in self.frames and self.channels[n] == source]
                out.update(zip(same, read_frames(source, [self.frames[n] for n in same])))
        return {name: out[name] for name in names}

    def check(
        self, channels: Sequence[str], target: Target | None = None, *, all_files: bool = True
    ) -> None:
        """Pre-flight from headers only: channels present, 3D, one voxel grid.

        Args:
            channels: channel names that must be present.
            target: unused (3D label maps are checked when read).
            all_files: also check the case's other channels and its label map;
                False checks only ``channels`` (what a prediction reads).

        Raises:
            VolumeError: naming the case and the channel or file.
        """
        for name in channels:
            if name not in self.channels:
                where = self.expected.get(name) or f"the case has {', '.join(self.channels)}"
                raise VolumeError(f"case {self.case_id}: missing channel '{name}' ({where})")
        items = (
            list(self.channels.items()) if all_files else [(n, self.channels[n]) for n in channels]
        )
        if all_files:
            items.append(("mask", self.mask))
        headers, read = {}, {}  # channel -> header; file -> header (a 4D file is read once)
        for name, path in items:
            if path is None or isinstance(path, sitk.Image) or os.path.isdir(path):
                continue  # no mask, an image in memory, or a DICOM series (checked when read)
            if path not in read:
                read[path] = read_header(path)
            header = read[path]
            if name in self.frames:
                total = sum(1 for c in self.frames if self.channels[c] == path)
                check_frames(header, path, [self.frames[name]], total)
            elif header.GetDimension() != 3:
                hint = ("; 2D slice sets convert with brainseg-convert --layout tcga_lgg or via"
                        if header.GetDimension() == 2 else "")  # fmt: skip
                raise VolumeError(
                    f"case {self.case_id}: {path}: expected a 3D volume, got "
                    f"{header.GetDimension()}D of size {header.GetSize()}{hint}"
                )
            headers[name] = header
        check_same_geometry(headers, case_id=self.case_id)

    def load(self, options: PreprocessOptions, target: Target | None = None) -> PreprocessedVolume:
        """Read the case and cut it into normalised slices along ``options.slice_axis``.

        Args:
            options: the preprocessing.
            target: unused (3D label maps hold raw labels, not categories).

        Returns:
            the preprocessed volume with its ``tissue`` (None when unlabelled).

        Raises:
            VolumeError: unreadable file, geometry mismatch, bad labels (naming the file).
        """
        used = list(options.channels)
        # One read per file: the channels of a 4D file are read together.
        groups: dict[tuple, list[str]] = {}
        for c in used:
            key = ("4D", str(self.channels[c])) if c in self.frames else ("3D", c)
            groups.setdefault(key, []).append(c)
        jobs = [lambda g=g: self.read_channels(g) for g in groups.values()]
        if self.mask:
            jobs.append(lambda: {"mask": read_image(self.mask)})
        # Inflating (zlib, ITK) releases the GIL: the files are read at once. map()
        # raises the first error in file order, as reading one by one would.
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            read = {k: v for images in pool.map(lambda job: job(), jobs) for k, v in images.items()}
        channels = {c: read[c] for c in used}
        mask_image = read.get("mask")
        grid = dict(channels, **({"mask": mask_image} if mask_image is not None else {}))
        check_same_geometry(grid, case_id=self.case_id)
        pre = preprocess_volume(channels, options, case_id=self.case_id, sources=self.sources())
        del channels, read
        if mask_image is not None:
            raw = pre.geometry.label_slices(mask_image)
            pre.tissue = raw_labels_to_tissue(raw, self.label_convention, self.mask)
        return pre
