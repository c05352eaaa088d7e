"""``pairs``: one glob per channel (``[name=]glob``, relative to the input folder)
and an optional mask glob. The text matched by the wildcards is the case key
that pairs files across channels and masks: the distinct texts, in order, joined
by ``_`` (``*/*_flair.nii.gz`` on ``P1/P1_flair.nii.gz`` gives ``P1``)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from brainseg_d2.data.sources.common import SourceError, check_input_dir, patient_of
from brainseg_d2.data.sources.registry import Layout, SourceQuery
from brainseg_d2.data.sources.volume import Case
from brainseg_d2.labels import get_convention


def glob_regex(pattern: str) -> re.Pattern:
    """Regex matching what ``Path.glob(pattern)`` matches, wildcards as groups."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:(.*)/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append("(.*)")
            i += 2
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def match_glob(root: Path, pattern: str) -> dict[str, str]:
    """Files under ``root`` matching ``pattern`` keyed by the wildcard text."""
    if Path(pattern).is_absolute():
        raise SourceError(f"glob {pattern!r} must be relative to the input folder {root}")
    regex = glob_regex(pattern)
    found: dict[str, str] = {}
    for path in sorted(root.glob(pattern)):
        rel = path.relative_to(root).as_posix()
        match = regex.fullmatch(rel)
        # Distinct texts only: a case folder named like its files gives one id, not two.
        groups = list(dict.fromkeys(g for g in (match.groups() if match else ()) if g))
        key = "_".join(groups).replace("/", "_") or path.name.split(".")[0]
        if key in found:
            raise SourceError(
                f"duplicate case id '{key}': {found[key]} and {path} both match {pattern!r}"
            )
        found[key] = str(path)
    return found


def parse_channel_globs(specs: Sequence[str]) -> dict[str, str]:
    """``["flair=a/*_flair.nii.gz", ...]`` -> {name: glob}; unnamed: ``image`` or ``c0, c1..``."""
    out: dict[str, str] = {}
    for i, spec in enumerate(specs):
        name, sep, pattern = spec.partition("=")
        if not sep:
            name, pattern = ("image" if len(specs) == 1 else f"c{i}"), spec
        if not name or not pattern or name in out:
            raise SourceError(f"bad or repeated image glob {spec!r} (use NAME=GLOB)")
        out[name] = pattern
    return out


def find_pair_cases(
    root: str | os.PathLike,
    image_globs: Sequence[str],
    mask_glob: str | None = None,
    *,
    label_convention: str = "binary",
    patient_pattern: str | None = None,
) -> list[Case]:
    """Pair image and mask files by the text their globs' wildcards match.

    Args:
        root: input folder; globs are relative to it (``**`` recurses).
        image_globs: one ``[name=]glob`` per channel.
        mask_glob: glob of label maps, or None (all cases unlabelled).
        label_convention: convention of the masks.
        patient_pattern: regex on the case id; its first group (or the whole
            match) is the patient id. Default: patient id = case id.

    Returns:
        cases sorted by case id; images without a mask are unlabelled.

    Raises:
        SourceError: empty folder, nothing matched, a mask without images.
    """
    root = Path(root).resolve()
    check_input_dir(root)
    get_convention(label_convention)
    globs = parse_channel_globs(image_globs)
    if not globs:
        raise SourceError("layout 'pairs' needs at least one --images glob")
    per_channel = {name: match_glob(root, g) for name, g in globs.items()}
    masks = match_glob(root, mask_glob) if mask_glob else {}
    keys = sorted(set().union(*per_channel.values()))
    if not keys:
        raise SourceError(f"no files under {root} match {sorted(globs.values())}")
    orphans = sorted(set(masks) - set(keys))
    if orphans:
        raise SourceError(f"mask {masks[orphans[0]]} has no matching image (case '{orphans[0]}')")
    cases = []
    for key in keys:
        channels = {n: files[key] for n, files in per_channel.items() if key in files}
        expected = {n: f"no file matches {globs[n]!r}" for n in globs if n not in channels}
        patient = patient_of(key, patient_pattern)
        cases.append(Case(key, patient, channels, masks.get(key), label_convention, expected))
    return cases


def _find(input_path: str | os.PathLike, query: SourceQuery) -> list[Case]:
    return find_pair_cases(
        input_path,
        query.image_globs,
        query.mask_glob,
        label_convention=query.label_convention or "binary",
        patient_pattern=query.patient_pattern,
    )


#: This layout, registered by the package.
LAYOUT = Layout("pairs", _find)
