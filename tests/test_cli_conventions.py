"""What every command shares: executable scripts, quiet start-up, --help with defaults."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    str(p.relative_to(REPO)) for p in [*REPO.glob("tools/*.py"), *REPO.glob("demo/*.py")]
)


def _load(relative: str):
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem + "_conventions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parsers() -> dict[str, argparse.ArgumentParser]:
    from brainseg_d2.cli import convert, phantom
    from brainseg_d2.cli import predict as cli
    from brainseg_d2.cli.report import build_parser as report_parser
    from brainseg_d2.engine.trainer import argument_parser

    return {
        "brainseg-convert": convert.build_parser(),
        "brainseg-predict": cli.build_parser(),
        "brainseg-phantom": phantom.build_parser(),
        "brainseg-report": report_parser(),
        "tools/train_net.py": argument_parser(),
        "tools/run_demo.py": _load("tools/run_demo.py").build_parser(),
        "tools/visualize_data.py": _load("tools/visualize_data.py").build_parser(),
        "demo/demo.py": _load("demo/demo.py").get_parser(),
    }


# ------------------------------------------------------------------ item 9
@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_in_git_and_on_disk(script):
    staged = subprocess.run(
        ["git", "ls-files", "-s", "--", script], capture_output=True, text=True, cwd=REPO
    )
    if staged.returncode != 0 or not staged.stdout:
        pytest.skip("not a git checkout")
    assert staged.stdout.split()[0] == "100755", f"git stores {script} without +x"
    assert os.access(REPO / script, os.X_OK)
    assert (REPO / script).read_text(encoding="utf-8").startswith("#!/usr/bin/env python")


# ------------------------------------------------------------------ item 11
def test_every_option_has_help_and_shows_its_default():
    for name, parser in _parsers().items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and action.help.strip(), f"{label} has no help"
            shown = formatter._get_help_string(action) % {"default": action.default}
            has_default = action.default not in (None, False, [], argparse.SUPPRESS)
            if action.option_strings and has_default:
                assert "default" in shown, f"{label}: --help does not show the default"


def test_help_shows_the_defaults_the_issue_names():
    text = _parsers()["brainseg-convert"].format_help()
    for option, default in [("--slice-axis", "axial"), ("--lower-percentile", "0.5"),
                            ("--upper-percentile", "99.5"), ("--seed", "0"),
                            ("--min-area", "10"), ("--connectivity", "8")]:  # fmt: skip
        section = text.split(option, 2)[2].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(section.split()), option
    demo = " ".join(_parsers()["tools/run_demo.py"].format_help().split())
    assert "(default: output/demo)" in demo and "(default: 60)" in demo


# ------------------------------------------------------------------ item 10
def test_a_torch_command_starts_with_its_own_output(weights_files, tiny_cases, tmp_path):
    out = tmp_path / "Tiny_A_pred.nii.gz"
    out.write_bytes(b"done before")
    r = subprocess.run(
        [sys.executable, "-m", "brainseg_d2.cli.predict",
         "--config-file", weights_files["config"], "--input", str(tiny_cases / "Tiny_A"),
         "--output", str(out), "--skip-existing",
         "MODEL.WEIGHTS", str(weights_files["good"]), *weights_files["opts"]],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["skipping 1 of 1 cases whose output exists"]
    assert r.stderr == ""


def test_a_detectron2_script_help_has_no_warnings_first():
    r = subprocess.run(
        [sys.executable, str(REPO / "demo" / "demo.py"), "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith("usage: ")
    assert r.stderr == ""
