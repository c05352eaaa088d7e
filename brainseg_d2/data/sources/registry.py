"""The layout registry: each layout module registers how it finds cases and how
:func:`detect_layout` recognises its folders."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from brainseg_d2.data.sources.common import SourceError


@dataclass(frozen=True)
class SourceQuery:
    """What the user said about the input besides its path and layout.

    Attributes:
        image_globs: ``[name=]glob`` per channel (``pairs``).
        mask_glob: glob of label maps (``pairs``).
        manifest: CSV file (``csv``; default: the input path).
        label_convention: raw label convention; None: the layout's default
            (detected for ``brats`` and ``via``, else ``binary``).
        patient_pattern: regex on the case id giving the patient id.
        on_warning: called with a one-line warning about input the layout
            passed over (e.g. image files in no case); None: logged.
    """

    image_globs: Sequence[str] = ()
    mask_glob: str | None = None
    manifest: str | os.PathLike | None = None
    label_convention: str | None = None
    patient_pattern: str | None = None
    on_warning: Callable[[str], None] | None = None

    def warn(self, message: str) -> None:
        """Pass ``message`` to :attr:`on_warning`, or log it."""
        if self.on_warning is not None:
            self.on_warning(message)
        else:
            logging.getLogger(__name__).warning(message)


@dataclass(frozen=True)
class Layout:
    """One way cases lie on disk.

    Attributes:
        name: the ``--layout`` value.
        find: ``(input_path, query) -> cases`` sorted by case id.
        detect: ``(folder, file names) -> bool``: the folder holds this layout
            (None: never chosen by ``auto`` from the folder alone).
    """

    name: str
    find: Callable[[str | os.PathLike, SourceQuery], list]
    detect: Callable[[Path, Sequence[str]], bool] | None = None


#: Layout name -> layout, in registration order.
LAYOUT_REGISTRY: dict[str, Layout] = {}


def register_layout(layout: Layout) -> None:
    """Add a layout (its name must be new)."""
    if layout.name in LAYOUT_REGISTRY:
        raise ValueError(f"layout {layout.name!r} is registered already")
    LAYOUT_REGISTRY[layout.name] = layout


def get_layout(name: str) -> Layout:
    """The registered layout called ``name``.

    Raises:
        SourceError: unknown name (listing the known ones).
    """
    if name not in LAYOUT_REGISTRY:
        raise SourceError(
            f"unknown layout {name!r}; choose auto or one of {', '.join(LAYOUT_REGISTRY)}"
        )
    return LAYOUT_REGISTRY[name]
