"""brainseg_d2.utils.cli: the shared command-line helpers."""

from __future__ import annotations

import pytest

from brainseg_d2.utils.cli import ArgumentParser, deprecated_alias


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--output", "--out", required=True, action=deprecated_alias("--out"))
    return parser


def test_current_spelling_is_silent(capsys):
    assert _parser().parse_args(["--output", "x"]).output == "x"
    assert capsys.readouterr().err == ""


def test_old_spelling_works_and_warns_once(capsys):
    assert _parser().parse_args(["--out", "x"]).output == "x"
    assert capsys.readouterr().err == "tool: warning: --out is deprecated, use --output\n"


def test_required_is_kept():
    with pytest.raises(SystemExit):
        _parser().parse_args([])
