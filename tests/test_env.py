"""The environment report and the Detectron2 compatibility build."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from brainseg_d2 import env
from brainseg_d2.env import Detectron2Install, detectron2_install, detectron2_install_kind

ROOT = Path(__file__).resolve().parents[1]


def _load_provision_module():
    spec = importlib.util.spec_from_file_location(
        "provision_detectron2", ROOT / "scripts" / "provision_detectron2.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_env_report_names_install_kind_truthfully():
    out = subprocess.run(
        [sys.executable, "-m", "brainseg_d2.cli.env"], capture_output=True, text=True, check=True
    ).stdout
    version, kind, has_ops = detectron2_install_kind()
    d2 = detectron2_install()
    line = next(ln for ln in out.splitlines() if ln.startswith("detectron2 "))
    assert version in line and kind in line
    assert ("+pyonly" in version) == (kind == "python-only fallback")
    if kind == "python-only fallback":
        assert f"fix level {d2.fix_level}" in line
        assert d2.fix_level == _load_provision_module().FIX_LEVEL
    else:
        assert f"commit {d2.commit or 'unknown'}" in line
    ops_line = next(ln for ln in out.splitlines() if ln.startswith("detectron2 compiled ops"))
    assert ops_line.split()[-1] == ("yes" if has_ops else "no")
    pkg_line = next(ln for ln in out.splitlines() if ln.startswith("pkg_resources"))
    assert pkg_line.split()[1].startswith("yes" if d2.pkg_resources else "no")
    for name in ("Python", "torch", "torchvision", "CUDA devices", "SimpleITK", "pycocotools"):
        assert any(ln.startswith(name) for ln in out.splitlines()), name


def test_env_expect_checks_the_install_kind_in_one_line():
    kind = detectron2_install().kind
    ok, other = ("fallback", "source") if kind == "python-only fallback" else ("source", "fallback")
    run = [sys.executable, "-m", "brainseg_d2.cli.env", "--short", "--expect"]
    assert subprocess.run(run + [ok], capture_output=True, text=True).returncode == 0
    r = subprocess.run(run + [other], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error: expected a") and len(r.stderr.splitlines()) == 1


FALLBACK = Detectron2Install("0.6+pyonly3", "python-only fallback", False, fix_level=3)
SOURCE = Detectron2Install("0.6", "source build", True, commit="02b5c4e2", pkg_resources=True,
                           zoo_needs_pkg_resources=True)


@pytest.mark.parametrize(
    "d2, expect, problem",
    [
        (FALLBACK, "fallback", None),
        (SOURCE, "source", None),
        (FALLBACK, "source", "expected a source build"),
        (SOURCE, "fallback", "expected a python-only fallback"),
        (Detectron2Install(None, "not installed", False), "source", "found not installed"),
        (Detectron2Install("0.6", "source build", False), "source", "no compiled ops"),
        (Detectron2Install("0.6", "source build", True, zoo_needs_pkg_resources=True), "source",
         "pkg_resources is missing"),
    ],
    ids=["fallback", "source", "fallback-not-source", "source-not-fallback", "missing",
         "source-without-ops", "source-without-pkg-resources"],
)
def test_check_expected(d2, expect, problem):
    got = env.check_expected(d2, expect)
    assert got is None if problem is None else problem in got


def test_describe_names_fix_level_or_commit():
    assert FALLBACK.describe() == "0.6+pyonly3 (python-only fallback of v0.6, fix level 3)"
    assert SOURCE.describe() == "0.6 (source build, commit 02b5c4e2)"
    assert "commit unknown" in Detectron2Install("0.6", "source build", True).describe()


class _FakeDist:
    """Just the two metadata files :func:`env._source_build_origin` reads."""

    def __init__(self, record: str, direct_url: dict | None):
        self.files = {"RECORD": record, "direct_url.json": json.dumps(direct_url or {})}

    def read_text(self, name):
        return self.files.get(name)


@pytest.mark.parametrize(
    "record_matches, direct_url, commit, source",
    [
        (True, None, "a" * 40, "/src/detectron2-main.tar.gz"),
        (False, {"url": "https://github.com/x/detectron2.git",
                 "vcs_info": {"vcs": "git", "commit_id": "b" * 40}},
         "b" * 40, "https://github.com/x/detectron2.git"),
        (False, {"url": "file:///tmp/detectron2-main-02b5c4e2.tar.gz", "archive_info": {}},
         "02b5c4e2", "file:///tmp/detectron2-main-02b5c4e2.tar.gz"),
        (False, {"url": "file:///home/me/detectron2", "dir_info": {}},
         None, "file:///home/me/detectron2"),
    ],
    ids=["build-record", "pip-git-url", "archive-name", "folder-unknown-commit"],
)
def test_source_build_origin(tmp_path, monkeypatch, record_matches, direct_url, commit, source):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    dist = _FakeDist("detectron2/__init__.py,sha256=x,1\n", direct_url)
    digest = hashlib.sha256(dist.files["RECORD"].encode()).hexdigest()
    record = tmp_path / env.BUILD_RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({
        "source": "/src/detectron2-main.tar.gz", "commit": "a" * 40,
        "record_sha256": digest if record_matches else "stale: reinstalled since",
    }))
    assert env._source_build_origin(dist) == (commit, source)


def test_build_record_path_is_shared_with_the_set_up():
    assert _load_provision_module().BUILD_RECORD == env.BUILD_RECORD


def _archive(path: Path, top: str, commit: str | None) -> Path:
    """A `git archive`-like .tar.gz: one top folder with setup.py, commit in the pax comment."""
    src = path.parent / "tree" / top
    src.mkdir(parents=True)
    (src / "setup.py").write_text("")
    headers = {"comment": commit} if commit else {}
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers=headers) as tar:
        tar.add(src, arcname=top)
    return path


@pytest.mark.parametrize(
    "name, commit, expected",
    [
        ("d2.tar.gz", "c" * 40, "c" * 40),
        ("detectron2-main-02b5c4e2.tar.gz", None, "02b5c4e2"),
        ("detectron2.tgz", None, None),
    ],
    ids=["git-archive-header", "commit-in-name", "unknown"],
)
def test_source_archive_is_extracted_with_its_commit(tmp_path, name, commit, expected):
    prov = _load_provision_module()
    archive = _archive(tmp_path / name, "detectron2", commit)
    work = tmp_path / "work"
    work.mkdir()
    src = prov.resolve_source(str(archive), work)
    assert Path(src.spec) == work / "detectron2" and (Path(src.spec) / "setup.py").is_file()
    assert src.commit == expected


@pytest.mark.parametrize(
    "source, message",
    [
        ("https://github.com/facebookresearch/detectron2.git", "prefix a git URL with git+"),
        ("/nonexistent/detectron2", "is not a folder, a .tar.gz archive or a git+URL"),
        ("EMPTY_DIR", "has no setup.py"),
    ],
    ids=["url-without-git+", "missing", "folder-without-setup.py"],
)
def test_bad_source_fails_in_one_line(tmp_path, source, message):
    prov = _load_provision_module()
    if source == "EMPTY_DIR":
        source = str(tmp_path)
    with pytest.raises(SystemExit, match=re.escape(message)) as e:
        prov.resolve_source(source, tmp_path)
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)


def test_git_url_is_passed_to_pip_as_is(tmp_path):
    prov = _load_provision_module()
    url = "git+https://github.com/facebookresearch/detectron2.git@main"
    assert prov.resolve_source(url, tmp_path) == prov.Source(url, None)


def test_source_build_installs_what_upstream_needs():
    reqs = _load_provision_module().SOURCE_BUILD_REQUIREMENTS
    assert any(r.startswith("setuptools") and "<81" in r for r in reqs)  # pkg_resources
    assert "ninja" in reqs  # parallel compiles, MAX_JOBS


def test_fallback_fixes_only_make_v06_run_on_todays_libraries():
    """Launch and DDP behaviour live in brainseg_d2.engine, not in patches to Detectron2."""
    patched = {fix.path for fix in _load_provision_module().FIXES}
    assert not patched & {"engine/launch.py", "engine/defaults.py"}


def test_every_fix_names_its_breakage():
    prov = _load_provision_module()
    assert prov.FIXES
    for fix in prov.FIXES:
        assert fix.why.strip(), fix.path


def test_fix_that_does_not_apply_fails_loudly(tmp_path):
    prov = _load_provision_module()
    pkg = tmp_path / "detectron2"
    (pkg / "data" / "transforms").mkdir(parents=True)
    (pkg / "data" / "transforms" / "transform.py").write_text("interp = Image.BILINEAR\n")
    with pytest.raises(SystemExit, match="did not apply"):
        prov.apply_fixes(pkg)


def test_fallback_fixes_are_in_effect():
    _, kind, _ = detectron2_install_kind()
    if kind != "python-only fallback":
        pytest.skip("source build of Detectron2")
    from detectron2.data.transforms.transform import ExtentTransform
    from detectron2.model_zoo import get_config_file
    from detectron2.structures.masks import polygons_to_bitmask
    from PIL import Image

    assert ExtentTransform((0, 0, 1, 1), (1, 1)).interp == Image.BILINEAR
    empty = polygons_to_bitmask([], 4, 5)  # used np.bool
    assert empty.dtype == bool and empty.shape == (4, 5) and not empty.any()
    assert Path(get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")).is_file()
    assert np.__version__ >= "1.24"


def test_source_build_has_what_upstream_needs():
    d2 = detectron2_install()
    if d2.kind != "source build":
        pytest.skip("Python-only fallback of Detectron2")
    from detectron2 import _C  # noqa: F401
    from detectron2.model_zoo import get_config_file

    assert d2.has_compiled_ops and d2.pkg_resources
    assert Path(get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml")).is_file()


def test_set_up_refuses_a_full_disk_before_creating_anything(tmp_path):
    """Too little space for torch: one line naming the venv, exit 1, no venv left behind."""
    venv = tmp_path / "venv"
    env_vars = {"PATH": "/usr/bin:/bin", "BRAINSEG_D2_VENV": str(venv),
                "BRAINSEG_D2_MIN_FREE_GB": "100000000"}  # fmt: skip
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], env=env_vars,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.startswith(f"error: {venv} needs about 100000000 GB free"), message
    assert "\n" not in message
    assert not venv.exists()


def test_an_unknown_option_is_one_line(capsys):
    from brainseg_d2.cli.env import main

    with pytest.raises(SystemExit) as info:
        main(["--bogus"])
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "brainseg-env: error: unrecognized arguments: --bogus (see brainseg-env --help)"
