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
from brainseg_d2.data.volume_io import VolumeError, check_same_geometry, read_header, read_image
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
    """

    case_id: str
    patient_id: str
    channels: Mapping[str, str | sitk.Image]
    mask: str | None
    label_convention: str
    expected: Mapping[str, str] = field(default_factory=dict)

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
        return out + ([self.mask] if self.mask else [])

    def source_record(self) -> dict:
        """JSON-able description of the inputs, for ``volumes.json``."""
        return {"channels": dict(self.channels), "mask": self.mask}

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
        headers = {}
        for name, path in items:
            if path is None or isinstance(path, sitk.Image) or os.path.isdir(path):
                continue  # no mask, an image in memory, or a DICOM series (checked when read)
            header = read_header(path)
            if header.GetDimension() != 3:
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
        paths = [self.channels[c] for c in used] + ([self.mask] if self.mask else [])

        def read(source):
            return source if isinstance(source, sitk.Image) else read_image(source)

        # Inflating (zlib, ITK) releases the GIL: the files are read at once. map()
        # raises the first error in file order, as reading one by one would.
        with ThreadPoolExecutor(max_workers=len(paths)) as pool:
            images = list(pool.map(read, paths))
        channels = dict(zip(used, images))
        mask_image = images[len(used)] if self.mask else None
        grid = dict(channels, **({"mask": mask_image} if mask_image is not None else {}))
        check_same_geometry(grid, case_id=self.case_id)
        sources = {c: str(p) for c, p in self.channels.items() if not isinstance(p, sitk.Image)}
        pre = preprocess_volume(channels, options, case_id=self.case_id, sources=sources)
        del channels, images
        if mask_image is not None:
            raw = pre.geometry.label_slices(mask_image)
            pre.tissue = raw_labels_to_tissue(raw, self.label_convention, self.mask)
        return pre
