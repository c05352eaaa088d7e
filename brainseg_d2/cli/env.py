"""``brainseg-env``: what this machine runs (Python, torch, CUDA, Detectron2 install).

::

    brainseg-env [--short] [--expect {fallback,source}]

The facts and checks: :mod:`brainseg_d2.env`.
"""

from __future__ import annotations

import sys

from brainseg_d2.env import check_expected, collect, detectron2_install
from brainseg_d2.utils.cli import ArgumentParser

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="brainseg-env", description="Print the environment report.")
    parser.add_argument("--short", action="store_true", help="one line: torch, detectron2 kind")
    parser.add_argument(
        "--expect",
        choices=("fallback", "source"),
        help="exit 1, with a one-line error, unless Detectron2 is this kind of install "
        "(source: with compiled ops) and its model zoo can load",
    )
    args = parser.parse_args(argv)
    if args.short:
        import torch

        d2 = detectron2_install()
        print(
            f"torch {torch.__version__}, detectron2 {d2.describe()}, compiled ops: "
            f"{'yes' if d2.has_compiled_ops else 'no'}, pkg_resources: "
            f"{'yes' if d2.pkg_resources else 'no'}, CUDA devices: "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
        )
    else:
        rows = collect()
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")
    if args.expect:
        problem = check_expected(detectron2_install(), args.expect)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
