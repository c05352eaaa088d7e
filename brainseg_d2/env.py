"""Environment facts for ``brainseg-env`` (:mod:`brainseg_d2.cli.env`).

:func:`collect` gives the versions that matter for a bug report, and which
Detectron2 install is present (:func:`detectron2_install`): a source build (with
the commit it was built from, when known) or the Python-only fallback built by
``scripts/provision_detectron2.py`` (with its fix level), whether its compiled ops
load, and whether ``pkg_resources`` (which upstream's ``detectron2.model_zoo``
imports) is there. :func:`check_expected` turns the report into a check (CI uses
it). Also :func:`library_threads`, for code that runs its own threads beside a
library's pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def library_threads(get: Callable[[], int], set_: Callable[[int], None], n: int) -> Iterator[None]:
    """Set a library's process-wide thread count inside the block, restore it after.

    Example: ``with library_threads(torch.get_num_threads, torch.set_num_threads, 1):``.
    """
    before = get()
    set_(n)
    try:
        yield
    finally:
        set_(before)


#: Where ``scripts/provision_detectron2.py`` records a source build, relative to
#: ``sys.prefix`` (the script keeps its own copy of this path; a test checks both agree).
BUILD_RECORD = Path("share", "brainseg_d2", "detectron2-build.json")

_FALLBACK = "python-only fallback"
_SOURCE = "source build"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Detectron2Install:
    """What ``import detectron2`` gets in this environment.

    Attributes:
        version: the distribution's version (``0.6``, ``0.6+pyonly3``), None if missing.
        kind: ``"python-only fallback"``, ``"source build"`` or ``"not installed"``.
        has_compiled_ops: ``detectron2._C`` imports.
        fix_level: the fallback's compatibility-fix level (None for a source build).
        commit: the upstream commit a source build came from, None if unknown.
        source: the folder, archive or URL it was built from, None if unknown.
        pkg_resources: ``pkg_resources`` is importable (setuptools < 81).
        zoo_needs_pkg_resources: this Detectron2's ``model_zoo`` imports it (upstream
            does; the fallback's does not), so ``zoo://`` configs need it.
    """

    version: str | None
    kind: str
    has_compiled_ops: bool
    fix_level: int | None = None
    commit: str | None = None
    source: str | None = None
    pkg_resources: bool = False
    zoo_needs_pkg_resources: bool = False

    def describe(self) -> str:
        """One line: version, kind, and the fix level or the commit."""
        if self.version is None:
            return self.kind
        if self.kind == _FALLBACK:
            return f"{self.version} ({self.kind} of v0.6, fix level {self.fix_level})"
        return f"{self.version} ({self.kind}, commit {self.commit or 'unknown'})"


def _source_build_origin(dist: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """(commit, source) of a source build: the set-up's record, else pip's direct_url.json."""
    record_path = Path(sys.prefix, BUILD_RECORD)
    try:
        record = json.loads(record_path.read_text())
        installed = hashlib.sha256((dist.read_text("RECORD") or "").encode()).hexdigest()
        if record.get("record_sha256") == installed:  # else detectron2 was reinstalled since
            return record.get("commit"), record.get("source")
    except (OSError, ValueError):
        pass
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct = {}
    url = direct.get("url")
    commit = direct.get("vcs_info", {}).get("commit_id")
    if commit is None and url:  # an archive named like detectron2-main-02b5c4e2.tar.gz
        m = re.search(r"[-_]([0-9a-f]{7,40})\.t", url.rsplit("/", 1)[-1])
        commit = m.group(1) if m else None
    return commit, url


def detectron2_install() -> Detectron2Install:
    """Describe the Detectron2 install without importing ``detectron2.model_zoo``."""
    try:
        dist = importlib.metadata.distribution("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return Detectron2Install(None, "not installed", False)
    try:
        importlib.import_module("detectron2._C")
        has_ops = True
    except ImportError:
        has_ops = False
    spec = importlib.util.find_spec("detectron2")  # finds the package without running it
    zoo = Path(spec.origin).parent / "model_zoo" / "model_zoo.py" if spec and spec.origin else None
    try:
        zoo_needs = zoo is not None and "import pkg_resources" in zoo.read_text(encoding="utf-8")
    except OSError:
        zoo_needs = False
    common = dict(
        pkg_resources=importlib.util.find_spec("pkg_resources") is not None,
        zoo_needs_pkg_resources=zoo_needs,
    )
    version = dist.version
    m = re.search(r"\+pyonly(\d+)$", version)
    if m:
        return Detectron2Install(version, _FALLBACK, has_ops, fix_level=int(m.group(1)), **common)
    commit, source = _source_build_origin(dist)
    return Detectron2Install(version, _SOURCE, has_ops, commit=commit, source=source, **common)


def detectron2_install_kind() -> tuple[str | None, str, bool]:
    """(version, kind, has_compiled_ops) of :func:`detectron2_install`."""
    d2 = detectron2_install()
    return d2.version, d2.kind, d2.has_compiled_ops


def _pkg_resources_row(d2: Detectron2Install) -> str:
    if d2.pkg_resources:
        return "yes"
    if d2.zoo_needs_pkg_resources:
        return (
            "no, and detectron2.model_zoo needs it (zoo:// configs fail): "
            "pip install 'setuptools<81'"
        )
    return "no (this detectron2.model_zoo does not need it)"


def check_expected(d2: Detectron2Install, expect: str) -> str | None:
    """Why `d2` is not the `expect`ed install (``"fallback"`` or ``"source"``), or None.

    A source build must also have its compiled ops and, if its model zoo needs
    it, ``pkg_resources``.
    """
    want = {"fallback": _FALLBACK, "source": _SOURCE}[expect]
    if d2.kind != want:
        return f"expected a {want} of Detectron2, found {d2.describe()}"
    if expect == "source" and not d2.has_compiled_ops:
        return f"Detectron2 {d2.describe()} has no compiled ops (detectron2._C does not import)"
    if d2.zoo_needs_pkg_resources and not d2.pkg_resources:
        return f"Detectron2 {d2.describe()}: pkg_resources is missing; pip install 'setuptools<81'"
    return None


def collect() -> list[tuple[str, str]]:
    """Collect (name, value) rows for the report."""
    rows: list[tuple[str, str]] = [
        ("Python", sys.version.split()[0]),
        ("Platform", platform.platform()),
    ]
    from brainseg_d2 import __version__

    rows.append(("brainseg_d2", __version__))
    try:
        import torch

        rows.append(("torch", torch.__version__))
        rows.append(("torch CUDA build", str(torch.version.cuda)))
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        rows.append(("CUDA devices", str(n)))
        for i in range(n):
            rows.append((f"  cuda:{i}", torch.cuda.get_device_name(i)))
    except ImportError:
        rows.append(("torch", "not installed"))
    rows.append(("torchvision", _dist_version("torchvision") or "not installed"))
    d2 = detectron2_install()
    rows.append(("detectron2", d2.describe()))
    if d2.kind == _SOURCE:
        rows.append(("detectron2 source", d2.source or "unknown"))
    rows.append(("detectron2 compiled ops", "yes" if d2.has_compiled_ops else "no"))
    rows.append(("pkg_resources", _pkg_resources_row(d2)))
    for name in ("SimpleITK", "pycocotools", "opencv-python-headless", "numpy", "fvcore"):
        rows.append((name, _dist_version(name) or "not installed"))
    return rows
