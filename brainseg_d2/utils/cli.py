"""What every command does the same way: help text, one-line errors, quiet imports.

* :class:`ArgumentParser`: ``--help`` shows each option's default, and a usage
  error is one line (``prog: error: ...``), exit status 2.
* :func:`quiet_third_party_warnings`: the warnings torch and Detectron2 print
  on import or on first use, which say nothing about the user's run. Called by
  each entry point before it imports torch, never by the library, so a
  program that imports the library keeps its warnings.
* :func:`print_error`: ``error: <one line>``, or one line per problem for
  errors that list several (:class:`ProblemList`).
* :func:`deprecated_alias`: an option's old spelling keeps working for one
  release and says so in one line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import TextIO

#: At most this many problems are listed; the rest are counted.
MAX_LISTED = 20

#: (category, message regex) of known third-party warnings that carry no news for a user.
THIRD_PARTY_WARNINGS = (
    # Detectron2 0.6 decorates a few helpers with torch.jit.script (torch >= 2.5 warns).
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
    (FutureWarning, r"`torch\.jit\.script_method` is deprecated"),
    # Detectron2's anchor generator calls torch.meshgrid without `indexing`.
    (UserWarning, r"torch\.meshgrid: in an upcoming release, it will be required"),
    # fvcore/iopath and torch.load defaults, raised while loading checkpoints.
    (FutureWarning, r"You are using `torch\.load` with `weights_only=False`"),
    # Detectron2 0.6 turns read-only mask arrays into tensors (it never writes to them).
    (UserWarning, r"The given NumPy array is not writable"),
    # Upstream Detectron2's model_zoo imports pkg_resources (the set-up pins setuptools<81).
    (UserWarning, r"pkg_resources is deprecated as an API"),
)
#: Loggers of third-party modules whose warnings are no news for a user: torch
#: says "No CUDA runtime is found" when Detectron2 collects environment info on a
#: CPU machine, and warns about is_fx_tracing when upstream Detectron2's ROI
#: pooler calls it.
THIRD_PARTY_LOGGERS = ("torch.utils.cpp_extension", "torch.fx._symbolic_trace")


def quiet_third_party_warnings() -> None:
    """Ignore :data:`THIRD_PARTY_WARNINGS` and :data:`THIRD_PARTY_LOGGERS` warnings.

    Call from an entry point, before importing torch.
    """
    for category, message in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps descriptions as written and appends ``(default: X)`` where it says something.

    Not for flags (``store_true``), options without a default (None), or help
    that already names its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or (not action.option_strings and action.nargs != argparse.OPTIONAL)
        ):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(str(v) for v in default) or "none"
            return f"{text} (default: {shown})"
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter` and one-line usage errors."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def deprecated_alias(*old: str) -> type[argparse.Action]:
    """An argparse ``action`` that stores the value and warns when ``old`` spellings are used.

    Usage: ``parser.add_argument("--output", "--out", action=deprecated_alias("--out"))``.
    The first option string is the current one; using one of ``old`` prints
    ``<prog>: warning: --out is deprecated, use --output`` on stderr.
    """
    deprecated = frozenset(old)

    class DeprecatedAlias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if option_string in deprecated:
                print(
                    f"{parser.prog}: warning: {option_string} is deprecated, "
                    f"use {self.option_strings[0]}",
                    file=sys.stderr,
                )
            setattr(namespace, self.dest, values)

    return DeprecatedAlias


class ProblemList(ValueError):
    """Several independent problems (e.g. one per bad case), printed one line each.

    Attributes:
        problems: every problem, one line each.
        lines: what is printed: the first :data:`MAX_LISTED` problems, then a count.
    """

    def __init__(self, problems: Sequence[str], what: str = "problems") -> None:
        self.problems = [" ".join(str(p).split()) for p in problems]
        self.lines = self.problems[:MAX_LISTED]
        if len(self.problems) > MAX_LISTED:
            rest = len(self.problems) - MAX_LISTED
            self.lines.append(f"... and {rest} more {what} ({len(self.problems)} in all)")
        super().__init__("\n".join(self.lines))


def error_lines(exc: BaseException) -> list[str]:
    """The lines that describe ``exc``: its :class:`ProblemList` lines, else one line."""
    lines = getattr(exc, "lines", None)
    if lines:
        return [" ".join(str(line).split()) for line in lines]
    return [" ".join(str(exc).split()) or type(exc).__name__]


def print_error(exc: BaseException, file: TextIO | None = None) -> None:
    """Print ``error: <line>`` for each line of :func:`error_lines` (to stderr)."""
    for line in error_lines(exc):
        print(f"error: {line}", file=file or sys.stderr)


#: A config override's key (``SEED``, ``MODEL.DEVICE``), as opposed to a file name.
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*")


def split_trailing_opts(files: Sequence[str], opts: Sequence[str]) -> tuple[list[str], list[str]]:
    """``--weights A B KEY VALUE``: an ``nargs="+"`` option takes the config overrides too.

    Returns:
        ``(files, opts)``: the words before the first config key (:data:`CONFIG_KEY`, and
        neither an existing file nor a checkpoint's name such as ``FOLD0.PTH``), and that
        key onwards followed by ``opts``.
    """

    def is_key(word: str) -> bool:
        return (CONFIG_KEY.fullmatch(word) is not None and not os.path.exists(word)
                and not word.lower().endswith((".pth", ".pkl", ".pt")))  # fmt: skip

    end = next((i for i, word in enumerate(files) if is_key(word)), len(files))
    return list(files[:end]), [*files[end:], *opts]


def weights_opts(args: argparse.Namespace) -> list[str]:
    """Config overrides for ``--weights A [B ...]`` (``args.weights``, ``args.opts``).

    Splits trailing overrides off ``args.weights`` (:func:`split_trailing_opts`), checks
    the files, and returns ``MODEL.WEIGHTS A BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS [A, B]``
    (for one file ``... ENSEMBLE_WEIGHTS ()``, so that it replaces a config's ensemble;
    ``[]`` without ``--weights``).

    Raises:
        ValueError: no file, a folder or a missing file, or ``MODEL.WEIGHTS`` given too.
    """
    if getattr(args, "weights", None) is None:
        return []
    args.weights, args.opts = split_trailing_opts(args.weights, args.opts)
    if not args.weights:
        raise ValueError("--weights needs a weights file before the config overrides")
    if "MODEL.WEIGHTS" in args.opts[::2]:
        raise ValueError("weights given twice: pass --weights or MODEL.WEIGHTS, not both")
    for path in args.weights:
        if os.path.isdir(path):
            raise ValueError(f"--weights {path} is a folder, not a checkpoint")
        if "://" not in path and not os.path.isfile(path):
            raise ValueError(f"--weights {path} does not exist")
    ensemble = repr(list(args.weights)) if len(args.weights) > 1 else "()"
    return ["MODEL.WEIGHTS", args.weights[0], "BRAINSEG.INFERENCE.ENSEMBLE_WEIGHTS", ensemble]
