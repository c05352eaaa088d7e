#!/usr/bin/env bash
# One set-up path for every README command: creates the venv if missing, installs
# the pinned torch/torchvision pair, Detectron2 (scripts/provision_detectron2.py) and
# this project (editable, with test extras). Idempotent: a stamp keyed on the
# inputs below makes a second run return in about a second.
#
# Environment knobs:
#   PYTHON                          interpreter used to create the venv (default python3)
#   BRAINSEG_D2_VENV                the venv folder (default .venv; CI builds the source
#                                   install in .venv-src beside the fallback one)
#   BRAINSEG_D2_TORCH               torch/torchvision requirement specs
#                                   (default: "torch==2.14.1 torchvision==0.29.1", a pair
#                                   whose wheels run on CPU and CUDA machines alike)
#   BRAINSEG_D2_DETECTRON2_SOURCE   Detectron2 clone, .tar.gz archive of one, or git+URL:
#                                   build it with compiled ops instead of the Python-only
#                                   fallback (needs a C++ compiler; CUDA toolkit for GPU ops)
#   MAX_JOBS                        parallel compile jobs for that build (default: all
#                                   cores + 2; lower it if the compiler runs out of memory)
#   BRAINSEG_D2_MIN_FREE_GB         free disk space the venv's folder needs before torch is
#                                   installed (default 9: the CUDA pair takes about 5.5 GB
#                                   installed, and pip unpacks its wheels beside that)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV="${BRAINSEG_D2_VENV:-.venv}"
TORCH_SPEC="${BRAINSEG_D2_TORCH:-torch==2.14.1 torchvision==0.29.1}"
D2_SOURCE="${BRAINSEG_D2_DETECTRON2_SOURCE:-}"

MIN_FREE_GB="${BRAINSEG_D2_MIN_FREE_GB:-9}"
PY="$VENV/bin/python"

stamp_key=$(cat pyproject.toml scripts/setup.sh scripts/provision_detectron2.py \
    | { cat; echo "$TORCH_SPEC|$D2_SOURCE"; } | sha256sum | cut -c1-16)
STAMP="$VENV/.brainseg-setup-$stamp_key"
if [ -f "$STAMP" ] && "$PY" -c 'import torch, torchvision, detectron2, brainseg_d2' 2>/dev/null; then
    echo "[setup] up to date ($VENV)"
    exit 0
fi

# A full disk stops pip half-way with a bare OSError and leaves a broken venv:
# check first, before anything is created, whenever torch still has to be installed.
if ! { [ -x "$PY" ] && "$PY" -c 'import torch' 2>/dev/null; }; then
    parent=$(dirname "$VENV")
    free_kb=$(df -Pk "$parent" 2>/dev/null | awk 'NR == 2 {print $4}')
    if [ -n "$free_kb" ] && [ "$free_kb" -lt $((MIN_FREE_GB * 1024 * 1024)) ]; then
        echo "error: $VENV needs about $MIN_FREE_GB GB free for torch and torchvision; $parent's disk has $((free_kb / 1024 / 1024)) GB (free some space, or set BRAINSEG_D2_MIN_FREE_GB)" >&2
        exit 1
    fi
fi

if [ ! -x "$PY" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "error: $PYTHON is older than Python 3.10" >&2; exit 1; }
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$VENV"/.brainseg-setup-*

export PIP_DISABLE_PIP_VERSION_CHECK=1
echo "[setup] installing $TORCH_SPEC"
# shellcheck disable=SC2086
"$PY" -m pip install -q $TORCH_SPEC
echo "[setup] provisioning Detectron2"
"$PY" scripts/provision_detectron2.py ${D2_SOURCE:+--source "$D2_SOURCE"}
echo "[setup] installing brainseg_d2 (editable) with test extras"
"$PY" -m pip install -q -e ".[test]"
"$PY" -m brainseg_d2.cli.env --short
touch "$STAMP"
echo "[setup] done"
