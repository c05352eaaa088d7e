"""The environment report and the Detectron2 compatibility build."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainseg_d2.env import detectron2_install_kind

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
        [sys.executable, "-m", "brainseg_d2.env"], capture_output=True, text=True, check=True
    ).stdout
    version, kind, has_ops = detectron2_install_kind()
    line = next(ln for ln in out.splitlines() if ln.startswith("detectron2 "))
    assert version in line and kind in line
    assert ("+pyonly" in version) == (kind == "python-only fallback")
    ops_line = next(ln for ln in out.splitlines() if ln.startswith("detectron2 compiled ops"))
    assert ops_line.split()[-1] == ("yes" if has_ops else "no")
    for name in ("Python", "torch", "torchvision", "CUDA devices", "SimpleITK", "pycocotools"):
        assert any(ln.startswith(name) for ln in out.splitlines()), name


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
