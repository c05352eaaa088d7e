#!/usr/bin/env python
"""Install Detectron2 into the current Python environment, one of two ways.

1. **From source** (recommended for users with internet and a GPU): pass
   ``--source`` (or set ``BRAINSEG_D2_DETECTRON2_SOURCE``) to a local clone or a
   ``git+https://...`` URL. It is built with ``pip install --no-build-isolation``
   against the torch already installed, so the compiled ops (``detectron2._C``)
   are built too.

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

Both paths are idempotent: if the requested kind is already installed (same
fix level for the fallback), nothing is done.

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
FIX_LEVEL = 2
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
    Fix(
        "engine/launch.py",
        r'    assert torch\.cuda\.is_available\(\), "cuda is not available\. '
        r'Please check your installation\."\n',
        "    has_gpu = torch.cuda.is_available()\n",
        "launch() asserted CUDA; CPU-only machines could not run multi-process (gloo) jobs",
    ),
    Fix(
        "engine/launch.py",
        r'backend="NCCL",',
        'backend="NCCL" if has_gpu else "GLOO",',
        "NCCL needs GPUs; fall back to GLOO on CPU",
    ),
    Fix(
        "engine/launch.py",
        r"    assert num_gpus_per_machine <= torch\.cuda\.device_count\(\)\n"
        r"    torch\.cuda\.set_device\(local_rank\)\n",
        "    if has_gpu:\n"
        "        assert num_gpus_per_machine <= torch.cuda.device_count()\n"
        "        torch.cuda.set_device(local_rank)\n",
        "selecting a CUDA device is only possible with GPUs",
    ),
    Fix(
        "engine/defaults.py",
        r'    if "device_ids" not in kwargs:\n',
        '    if "device_ids" not in kwargs and next(model.parameters()).is_cuda:\n',
        "DDP rejects device_ids for CPU models, so CPU multi-process training failed",
    ),
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


def pip_install(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", *args], check=True)


def install_from_source(source: str) -> None:
    """Build Detectron2 (compiled ops included) from a local clone or a git URL."""
    if not (source.startswith("git+") or Path(source).is_dir()):
        raise SystemExit(
            f"error: Detectron2 source {source!r} is neither a folder nor a git+URL "
            "(e.g. git+https://github.com/facebookresearch/detectron2.git)"
        )
    current = installed_version()
    if current and "+pyonly" not in current:
        log(f"detectron2 {current} (source build) already installed; nothing to do")
        return
    # The build imports torch, so it must see this environment's torch.
    pip_install("-q", "setuptools>=68", "wheel", "ninja")
    if current:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "detectron2"], check=True)
    log(f"building detectron2 from {source} (compiles the C++/CUDA ops; takes minutes)")
    pip_install("--no-build-isolation", source)


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
        help="local Detectron2 clone or git+URL to build with compiled ops "
        "(env BRAINSEG_D2_DETECTRON2_SOURCE)",
    )
    parser.add_argument("--sdist", type=Path, help=f"a local copy of {SDIST_FILE} (offline)")
    parser.add_argument(
        "--cache", type=Path, default=Path(".cache/detectron2"), help="download/wheel cache"
    )
    args = parser.parse_args(argv)
    if args.source:
        install_from_source(args.source)
    else:
        install_fallback(args.cache, args.sdist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
