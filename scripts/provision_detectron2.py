#!/usr/bin/env python
"""Install Detectron2 into the current Python environment, one of two ways.

1. **From source** (recommended for users with internet and a GPU): pass
   ``--source`` (or set ``BRAINSEG_D2_DETECTRON2_SOURCE``) to a local clone, a
   source archive (``.tar.gz``, e.g. a ``git archive``) or a ``git+https://...``
   URL. It is built with ``pip install --no-build-isolation`` against the torch
   already installed, so the compiled ops (``detectron2._C``) are built too;
   ``setuptools<81`` (``detectron2.model_zoo`` imports ``pkg_resources``) and
   ``ninja`` (parallel compiles; ``MAX_JOBS`` or ``--jobs`` sets how many) are
   installed first. The source and its commit, when known, are recorded in
   :data:`BUILD_RECORD` for ``brainseg-env``.

2. **Python-only fallback** (default; machines that cannot reach the source
   host). Detectron2 is not on PyPI, but the sdist ``pb1-detectron2==0.6`` is: its
   Python files are those of Detectron2 v0.6, without the C++/CUDA sources. This
   script downloads it (or takes ``--sdist PATH``), checks its sha256, copies the
   ``detectron2`` package (model-zoo configs and the three bundled projects
   included), applies the short list of compatibility fixes in :data:`FIXES`,
   and builds a local wheel ``detectron2-0.6+pyonly<N>`` that pip installs with its
   runtime dependencies. Mask R-CNN needs no compiled op (it uses torchvision's
   ``nms``/``roi_align``); the few features that do (fast COCO eval, rotated boxes,
   deformable conv) raise a clear ``ImportError`` when used.

   The fixes only make v0.6 import and run on today's Pillow, NumPy and
   setuptools without ``_C``. Behaviour the plugin needs from any Detectron2
   (CPU multi-process training, the training data order, optimizer state in
   checkpoints) lives in the plugin itself (``brainseg_d2.engine``).

Both paths are idempotent: if the requested install is already there (same fix
level for the fallback, same source for a source build), nothing is done.

Run it with the environment's interpreter, e.g. ``.venv/bin/python
scripts/provision_detectron2.py``; ``make setup`` does this for you.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
#: Bump when FIXES change, so `make setup` rebuilds the wheel.
#: 3: launch/create_ddp_model fixes dropped (the plugin handles CPU processes itself).
FIX_LEVEL = 3
WHEEL_VERSION = f"{SDIST_VERSION}+pyonly{FIX_LEVEL}"

#: Runtime dependencies of Detectron2 v0.6 minus what only Caffe2 export and
#: code formatting need (``future``, ``pydot``, and the ``black==21.4b2`` pin,
#: which conflicts with current tooling).
DEPENDENCIES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1",
    "hydra-core>=1.1",
]

# Replaces ``from detectron2 import _C`` so that importing a module that
# *mentions* a compiled op works, and only *using* the op fails, clearly.
COMPILED_SHIM = '''\
"""Lazy access to Detectron2's compiled extension ``detectron2._C``.

Added by brainseg_d2's Python-only build of Detectron2 v0.6. Mask R-CNN does not
need the extension; fast COCO evaluation, rotated boxes and deformable
convolution do. Without it, using one of those raises ImportError saying so.
"""

try:
    from detectron2 import _C  # noqa: F401
    HAS_COMPILED_OPS = True
except ImportError:
    HAS_COMPILED_OPS = False

    class _MissingCompiledOps:
        def __getattr__(self, name):
            require_compiled_ops(f"detectron2._C.{name}")

    _C = _MissingCompiledOps()


def require_compiled_ops(feature: str) -> None:
    """Raise ImportError naming `feature` if the compiled extension is missing."""
    if not HAS_COMPILED_OPS:
        raise ImportError(
            f"{feature} needs Detectron2's compiled ops (detectron2._C), but this is the "
            "Python-only build. Use COCOEvaluator(use_fast_impl=False) for COCO AP, avoid "
            "rotated boxes / deformable conv, or install Detectron2 from source: "
            "BRAINSEG_D2_DETECTRON2_SOURCE=<clone or git URL> make setup"
        )
'''


@dataclass(frozen=True)
class Fix:
    """One compatibility fix: a regex substitution in one file of the package.

    Attributes:
        path: file relative to the ``detectron2`` package folder.
        pattern: regular expression that must match at least once.
        repl: replacement (``re.sub`` syntax).
        why: the breakage it repairs, in one line.
    """

    path: str
    pattern: str
    repl: str
    why: str


_C_IMPORT = (r"^from detectron2 import _C$", "from detectron2._compiled import _C")
_NUMPY_ALIAS = (r"\bnp\.(bool|int|float|str)\b(?!_)", r"\1")
_NUMPY_WHY = "NumPy 1.24 removed the np.bool/np.int/np.float/np.str aliases"

FIXES: list[Fix] = [
    Fix(
        "data/transforms/transform.py",
        r"Image\.LINEAR\b",
        "Image.BILINEAR",
        "Pillow 10 removed Image.LINEAR (an alias of BILINEAR); `import detectron2.data` failed",
    ),
    *[
        Fix(p, *_C_IMPORT, "module-level import of the compiled extension broke imports")
        for p in (
            "evaluation/fast_eval_api.py",
            "layers/deform_conv.py",
            "layers/rotated_boxes.py",
            "layers/roi_align_rotated.py",
        )
    ],
    Fix(
        "layers/nms.py",
        r"(\n)(    return torch\.ops\.detectron2\.nms_rotated\()",
        r"\1    from detectron2._compiled import require_compiled_ops\n\n"
        r'    require_compiled_ops("nms_rotated")\n\2',
        "rotated NMS is a compiled op; without it the error was an opaque torch.ops lookup",
    ),
    Fix(
        "model_zoo/model_zoo.py",
        r"^import pkg_resources\n",
        "",
        "pkg_resources is gone from fresh environments (setuptools >= 81 or absent)",
    ),
    Fix(
        "model_zoo/model_zoo.py",
        r'pkg_resources\.resource_filename\(\s*"detectron2\.model_zoo", '
        r'os\.path\.join\("configs", config_path\)\s*\)',
        'os.path.join(os.path.dirname(__file__), "configs", config_path)',
        "configs are package data beside model_zoo.py; no pkg_resources needed",
    ),
    *[
        Fix(p, *_NUMPY_ALIAS, _NUMPY_WHY)
        for p in (
            "structures/masks.py",
            "evaluation/sem_seg_evaluation.py",
            "evaluation/pascal_voc_evaluation.py",
            "data/datasets/pascal_voc.py",
            "data/build.py",
            "utils/visualizer.py",
            "utils/video_visualizer.py",
        )
    ],
]


def log(msg: str) -> None:
    print(f"[provision_detectron2] {msg}", flush=True)


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("detectron2")
    except importlib.metadata.PackageNotFoundError:
        return None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist(cache: Path) -> Path:
    """Fetch the sdist from the package index (PEP 691 JSON API) into `cache`."""
    target = cache / SDIST_FILE
    if target.exists() and sha256(target) == SDIST_SHA256:
        return target
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    req = urllib.request.Request(
        f"{index}/{SDIST_NAME}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        files = json.load(resp)["files"]
    url = next((f["url"] for f in files if f["filename"] == SDIST_FILE), None)
    if url is None:
        raise SystemExit(f"error: {SDIST_FILE} not listed on {index}/{SDIST_NAME}/")
    log(f"downloading {SDIST_FILE}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=300) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    tmp.replace(target)
    return target


def apply_fixes(pkg: Path) -> None:
    """Apply :data:`FIXES` to the package folder `pkg`; every fix must match."""
    (pkg / "_compiled.py").write_text(COMPILED_SHIM)
    for fix in FIXES:
        f = pkg / fix.path
        text = f.read_text()
        new, n = re.subn(fix.pattern, fix.repl, text, flags=re.MULTILINE)
        if n == 0:
            raise SystemExit(f"error: fix for {fix.path} did not apply ({fix.why})")
        f.write_text(new)
        log(f"fixed {fix.path}: {fix.why}")


def build_fallback_wheel(sdist: Path, wheel_dir: Path) -> Path:
    """Build the patched Python-only wheel from the verified sdist."""
    digest = sha256(sdist)
    if digest != SDIST_SHA256:
        raise SystemExit(
            f"error: {sdist} has sha256 {digest}, expected {SDIST_SHA256}; refusing to install it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        src = Path(tmp) / f"{SDIST_NAME}-{SDIST_VERSION}"
        stage = Path(tmp) / "stage"
        pkg = stage / "detectron2"
        shutil.copytree(src / "detectron2", pkg)
        # setup.py maps these projects into detectron2.projects; do the same by copying.
        for name, folder in {
            "point_rend": "PointRend",
            "deeplab": "DeepLab",
            "panoptic_deeplab": "Panoptic-DeepLab",
        }.items():
            shutil.copytree(src / "projects" / folder / name, pkg / "projects" / name)
        shutil.copy(src / "LICENSE", stage / "LICENSE")
        apply_fixes(pkg)
        deps = ",\n".join(f'    "{d}"' for d in DEPENDENCIES)
        (stage / "pyproject.toml").write_text(
            f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "detectron2"
version = "{WHEEL_VERSION}"
description = "Detectron2 v0.6, Python-only build with compatibility fixes (brainseg_d2)"
requires-python = ">=3.8"
license = {{text = "Apache-2.0"}}
dependencies = [
{deps}
]

[tool.setuptools.packages.find]
include = ["detectron2*"]

[tool.setuptools.package-data]
"detectron2.model_zoo" = ["configs/**/*.yaml", "configs/**/*.py"]
"""
        )
        wheel_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), stage],
            check=True,
        )
    wheels = sorted(wheel_dir.glob(f"detectron2-{WHEEL_VERSION}-*.whl"))
    if not wheels:
        raise SystemExit(f"error: wheel build produced nothing in {wheel_dir}")
    return wheels[-1]


def pip_install(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True, env=env)


#: What a source build needs besides torch: ``pkg_resources`` (``detectron2.model_zoo``
#: imports it; setuptools 81 removed it), ``wheel``, and ``ninja``, without which
#: torch compiles one file at a time and ignores ``MAX_JOBS`` (measured on 2 cores,
#: upstream main 02b5c4e2, CPU ops: 1m47s without ninja, 1m18s with MAX_JOBS=2).
SOURCE_BUILD_REQUIREMENTS = ["setuptools>=68,<81", "wheel", "ninja"]

#: Where a source build records what it was built from, relative to ``sys.prefix``
#: (read by ``brainseg_d2.env``, which keeps its own copy of this path).
BUILD_RECORD = Path("share", "brainseg_d2", "detectron2-build.json")

_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class Source:
    """A Detectron2 source ready for pip.

    Attributes:
        spec: what ``pip install`` gets (a folder or a ``git+`` URL).
        commit: the upstream commit if known (from git metadata, the archive's
            ``git archive`` header or its file name), else None.
    """

    spec: str
    commit: str | None


def resolve_source(source: str, workdir: Path) -> Source:
    """Turn ``--source`` (folder, archive or git URL) into something pip builds.

    An archive is extracted into `workdir`; it must hold one Detectron2 tree
    (a folder with ``setup.py``), at its top or one level down.

    Raises:
        SystemExit: the source is none of the three, or holds no ``setup.py``.
    """
    if source.startswith("git+"):
        return Source(source, None)  # pip records the commit it checks out (direct_url.json)
    if source.startswith(("http://", "https://", "git@")):
        raise SystemExit(
            f"error: Detectron2 source {source!r}: prefix a git URL with git+, e.g. "
            "git+https://github.com/facebookresearch/detectron2.git"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "setup.py").is_file():
            raise SystemExit(f"error: Detectron2 source {path} has no setup.py (not a clone?)")
        return Source(str(path.resolve()), _git_commit(path))
    if path.is_file() and path.name.endswith(_ARCHIVE_SUFFIXES):
        commit = None
        with tarfile.open(path) as tar:
            # `git archive` stores the commit id as the archive's pax comment.
            comment = tar.pax_headers.get("comment", "")
            if _COMMIT.match(comment):
                commit = comment
            tar.extractall(workdir, filter="data")
        if commit is None:  # e.g. detectron2-main-02b5c4e2.tar.gz
            m = re.search(r"[-_]([0-9a-f]{7,40})\.t", path.name)
            commit = m.group(1) if m else None
        roots = [workdir] + sorted(d for d in workdir.iterdir() if d.is_dir())
        root = next((d for d in roots if (d / "setup.py").is_file()), None)
        if root is None:
            raise SystemExit(f"error: Detectron2 archive {path} holds no setup.py at its top")
        return Source(str(root), commit)
    raise SystemExit(
        f"error: Detectron2 source {source!r} is not a folder, a .tar.gz archive or a "
        "git+URL (e.g. git+https://github.com/facebookresearch/detectron2.git)"
    )


def _git_commit(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out if _COMMIT.match(out) else None


def check_compilers() -> None:
    """Fail in one line, before minutes of building, when a compiler is missing or wrong.

    A C++ compiler is always needed. With a GPU, torch builds the CUDA ops only
    if it finds a CUDA toolkit (``nvcc``) whose major version is torch's; without
    one the build silently makes CPU-only ops, so that is an error here too
    (``FORCE_CUDA=0`` accepts CPU-only ops on a GPU machine).
    """
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        raise SystemExit(
            f"error: no C++ compiler ({cxx!r} not found): install one (Debian/Ubuntu: "
            "apt-get install build-essential; conda: conda install gxx_linux-64) and retry"
        )
    import torch
    from torch.utils.cpp_extension import CUDA_HOME

    if not torch.cuda.is_available() or os.environ.get("FORCE_CUDA") == "0":
        return
    if CUDA_HOME is None or not Path(CUDA_HOME, "bin", "nvcc").exists():
        raise SystemExit(
            f"error: this machine has a GPU but no CUDA toolkit (nvcc) was found: install CUDA "
            f"{torch.version.cuda} (torch's) and set CUDA_HOME, or FORCE_CUDA=0 for CPU-only ops"
        )
    out = subprocess.run(
        [str(Path(CUDA_HOME, "bin", "nvcc")), "--version"], capture_output=True, text=True
    ).stdout
    m = re.search(r"release (\d+)\.(\d+)", out)
    if m and torch.version.cuda and m.group(1) != torch.version.cuda.split(".")[0]:
        raise SystemExit(
            f"error: nvcc in {CUDA_HOME} is CUDA {m.group(1)}.{m.group(2)} but torch was built "
            f"with CUDA {torch.version.cuda}: point CUDA_HOME at a matching toolkit, or install "
            f"the torch build for your CUDA (BRAINSEG_D2_TORCH=...)"
        )


def read_build_record() -> dict | None:
    path = Path(sys.prefix, BUILD_RECORD)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _dist_record_sha256() -> str | None:
    """A fingerprint of the installed detectron2 (its RECORD): changes on any reinstall."""
    try:
        text = importlib.metadata.distribution("detectron2").read_text("RECORD")
    except importlib.metadata.PackageNotFoundError:
        return None
    return hashlib.sha256(text.encode()).hexdigest() if text else None


def write_build_record(source: str, commit: str | None) -> None:
    """Record what the installed source build came from (for ``brainseg-env``)."""
    path = Path(sys.prefix, BUILD_RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "source": source,
        "commit": commit,
        "version": installed_version(),
        "torch": importlib.metadata.version("torch"),  # _C is built against this torch
        "record_sha256": _dist_record_sha256(),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def install_from_source(source: str, jobs: int | None = None) -> None:
    """Build Detectron2 (compiled ops included) from a folder, an archive or a git URL.

    Args:
        source: local clone, ``.tar.gz`` archive of one, or ``git+`` URL.
        jobs: parallel compile jobs (``MAX_JOBS``); None leaves torch's default.
    """
    current = installed_version()
    record = read_build_record()
    if (
        current and "+pyonly" not in current and record
        and record.get("source") == source
        and record.get("torch") == importlib.metadata.version("torch")
        and record.get("record_sha256") == _dist_record_sha256()
    ):
        log(f"detectron2 {current} (source build of {source}) already installed; nothing to do")
        return
    check_compilers()
    # The build imports torch, so it must see this environment's torch.
    pip_install("-q", *SOURCE_BUILD_REQUIREMENTS)
    env = dict(os.environ)
    if jobs is not None:
        env["MAX_JOBS"] = str(jobs)
    with tempfile.TemporaryDirectory(prefix="detectron2-src-") as tmp:
        src = resolve_source(source, Path(tmp))
        if current:
            subprocess.run(
                [sys.executable, "-m", "pip", "uninstall", "-y", "-q", "detectron2"], check=True
            )
        log(
            f"building detectron2 from {source}"
            + (f" (commit {src.commit[:12]})" if src.commit else "")
            + f", MAX_JOBS={env.get('MAX_JOBS', 'unset (ninja default)')}; takes minutes"
        )
        try:
            pip_install("--no-build-isolation", src.spec, env=env)
        except subprocess.CalledProcessError:
            raise SystemExit(
                f"error: building Detectron2 from {source} failed (compiler output above); "
                "see 'When the source build fails' in README.md"
            ) from None
    check = subprocess.run(
        [sys.executable, "-c", "from detectron2 import _C; import detectron2.model_zoo"],
        capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["?"])[-1]
        raise SystemExit(f"error: the Detectron2 build installed but does not import: {last}")
    write_build_record(source, src.commit)
    log(f"detectron2 {installed_version()} built from source with compiled ops")


def install_fallback(cache: Path, sdist: Path | None) -> None:
    current = installed_version()
    if current == WHEEL_VERSION:
        log(f"detectron2 {current} (Python-only fallback) already installed; nothing to do")
        return
    if current and "+pyonly" not in current:
        log(f"detectron2 {current} (source build) is installed; leaving it in place")
        return
    wheel_dir = cache / "wheels"
    wheels = sorted(wheel_dir.glob(f"detectron2-{WHEEL_VERSION}-*.whl"))
    if wheels:
        wheel = wheels[-1]
    else:
        wheel = build_fallback_wheel(sdist or download_sdist(cache), wheel_dir)
    log(f"installing {wheel.name}")
    pip_install("-q", str(wheel))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        default=os.environ.get("BRAINSEG_D2_DETECTRON2_SOURCE") or None,
        help="Detectron2 clone, .tar.gz archive or git+URL to build with compiled ops "
        "(env BRAINSEG_D2_DETECTRON2_SOURCE)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ["MAX_JOBS"]) if os.environ.get("MAX_JOBS", "").isdigit() else None,
        help="parallel compile jobs for a source build (env MAX_JOBS; default: torch's, "
        "all cores + 2; lower it if the compiler runs out of memory)",
    )
    parser.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST_FILE} (offline)")
    parser.add_argument(
        "--cache", type=Path, default=Path(".cache/detectron2"), help="download/wheel cache"
    )
    args = parser.parse_args(argv)
    if args.source:
        install_from_source(args.source, args.jobs)
    else:
        install_fallback(args.cache, args.sdist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
