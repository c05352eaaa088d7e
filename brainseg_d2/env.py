"""Environment report: ``python -m brainseg_d2.env`` (or ``brainseg-env``).

Prints the versions that matter for a bug report, and which kind of Detectron2
install is present: a source build (with compiled ops) or the Python-only
fallback built by ``scripts/provision_detectron2.py``. Also
:func:`library_threads`, for code that runs its own threads beside a library's pool.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import platform
import sys
from collections.abc import Callable, Iterator


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


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def detectron2_install_kind() -> tuple[str | None, str, bool]:
    """Describe the Detectron2 install.

    Returns:
        (version, kind, has_compiled_ops): ``version`` is None when Detectron2 is
        missing; ``kind`` is ``"python-only fallback"``, ``"source build"`` or
        ``"not installed"``.
    """
    version = _dist_version("detectron2")
    if version is None:
        return None, "not installed", False
    try:
        importlib.import_module("detectron2._C")
        has_ops = True
    except ImportError:
        has_ops = False
    kind = "python-only fallback" if "+pyonly" in version else "source build"
    return version, kind, has_ops


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
    version, kind, has_ops = detectron2_install_kind()
    rows.append(("detectron2", f"{version} ({kind})" if version else kind))
    rows.append(("detectron2 compiled ops", "yes" if has_ops else "no"))
    for name in ("SimpleITK", "pycocotools", "opencv-python-headless", "numpy", "fvcore"):
        rows.append((name, _dist_version(name) or "not installed"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the brainseg_d2 environment report.")
    parser.add_argument("--short", action="store_true", help="one line: torch, detectron2 kind")
    args = parser.parse_args(argv)
    if args.short:
        import torch

        version, kind, has_ops = detectron2_install_kind()
        print(
            f"torch {torch.__version__}, detectron2 {version} ({kind}, "
            f"compiled ops: {'yes' if has_ops else 'no'}), CUDA devices: "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
        )
        return 0
    rows = collect()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
