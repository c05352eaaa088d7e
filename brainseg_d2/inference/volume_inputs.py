"""What the volume predictor accepts as a volume, and which label convention it writes.

Four kinds of input become one :class:`~brainseg_d2.data.sources.Case`
(:func:`find_case`): a case, a BraTS case folder, a mapping channel -> file or
``sitk.Image``, or a sequence of them in the model's channel order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainseg_d2.data.sources import Case, find_brats_cases
from brainseg_d2.data.volume_io import VolumeError
from brainseg_d2.labels import CONVENTIONS, brats_task

__all__ = ["VolumeInput", "case_convention", "find_case"]

#: What :func:`find_case` (and :meth:`VolumePredictor.predict`) accepts.
VolumeInput = Case | str | os.PathLike | Mapping[str, Any] | Sequence[Any]


def find_case(images: VolumeInput, channels: Sequence[str], default_convention: str) -> Case:
        """Turn any accepted input into a :class:`Case` whose channels are all present.

        Args:
            images: a :class:`~brainseg_d2.data.sources.Case`; a BraTS case folder
                (2018-2021 ``<case>_flair.nii.gz`` or 2023 ``<case>-t2f.nii.gz`` names);
                a mapping channel name -> path or ``sitk.Image``; or a sequence of
                paths/images in ``channels`` order.
            channels: the source channels the model needs, in order.
            default_convention: label convention of inputs without a case's names.

        Returns:
            the case (channel values may be ``sitk.Image`` for in-memory input).

        Raises:
            VolumeError: a needed channel is missing (the message names case and channel).
            ValueError: a folder that is not one BraTS case, or a sequence of the wrong length.
        """
        if isinstance(images, Case):
            case = images
        elif isinstance(images, (str, os.PathLike)):
            folder = Path(images)
            if not folder.is_dir():
                raise ValueError(f"{folder} is not a case folder")
            cases = find_brats_cases(folder)
            if len(cases) != 1:
                raise ValueError(
                    f"{folder} holds {len(cases)} cases; predict one case folder at a time"
                )
            case = cases[0]
        elif isinstance(images, Mapping):
            case = Case("volume", "volume", dict(images), None, default_convention)
        elif isinstance(images, Sequence):
            if len(images) != len(channels):
                raise ValueError(
                    f"expected {len(channels)} images in channel order {channels}, "
                    f"got {len(images)}"
                )
            case = Case(
                "volume", "volume", dict(zip(channels, images)), None,
                default_convention,
            )  # fmt: skip
        else:
            raise ValueError(
                f"images must be a case folder, a mapping channel -> image or a sequence of "
                f"images, got {type(images).__name__}"
            )
        for name in channels:
            if name not in case.channels:
                where = case.expected.get(name, f"have {sorted(case.channels)}")
                raise VolumeError(f"case {case.case_id}: missing channel '{name}' ({where})")
        return case


def case_convention(case: Case, dataset_convention: str) -> str:
    """A case's own label convention, the one its prediction is written in by default.

    BraTS file names tell it (``<case>_flair.nii.gz``: brats2021, ET = 4;
    ``<case>-t2f.nii.gz``: brats2023, ET = 3), as :func:`find_brats_cases` found.
    A training dataset converted with a user's own convention applies it to
    BraTS-style folders as well (the converter does), unless the case id is a
    BraTS one (``BraTS-GLI-00000-000``, ``BraTS2021_00000``, ...). BraTS 2013-2015
    cases (``brats2015``: 1 necrosis, 3 non-enhancing) are written in BraTS 2017-2021
    labels, where 1 is the whole non-enhancing core and 3 is unused: a model learns the
    two as one tissue, and 2 (edema) and 4 (enhancing) are the same in both.

    Args:
        case: the input case.
        dataset_convention: the training dataset's (``dataset.json``).
    """
    user_dataset = dataset_convention not in CONVENTIONS and dataset_convention != "mixed"
    if user_dataset and brats_task(case.case_id) is None:
        return dataset_convention
    return "brats2021" if case.label_convention == "brats2015" else case.label_convention
