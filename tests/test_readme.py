"""The README's Python example runs as written (its output folder moved to a temp dir)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
WORK_LINE = 'work = Path("output/api_example")'


def _python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("### The same from Python", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under 'The same from Python'"
    return match.group(1)


def test_readme_python_example_runs_the_whole_chain(tmp_path):
    code = _python_example()
    assert code.count(WORK_LINE) == 1, f"README example no longer sets {WORK_LINE!r}"
    script = tmp_path / "example.py"
    script.write_text(code.replace(WORK_LINE, f"work = Path({str(tmp_path / 'work')!r})"))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "['mydata_train', 'mydata_val']" in run.stdout
    for name in ("WT", "TC", "ET", "necrotic", "edema"):  # ET is the enhancing class
        line = rf"^{name}: Dice \d\.\d{{3}}, (\d\.\d{{3}}|nan) over the n = \d cases"
        assert re.search(line, run.stdout, re.M), (name, run.stdout[-2000:])
    work = tmp_path / "work"
    for case in ("Heldout_00000", "Heldout_00001"):
        pred = sitk.ReadImage(str(work / "preds" / f"{case}.nii.gz"))
        flair = sitk.ReadImage(str(work / "heldout" / case / f"{case}_flair.nii.gz"))
        assert pred.GetSize() == flair.GetSize()
        assert pred.GetSpacing() == flair.GetSpacing()
        assert pred.GetDirection() == flair.GetDirection()
        assert set(sitk.GetArrayViewFromImage(pred).ravel().tolist()) <= {0, 1, 2, 4}
    assert (work / "train" / "model_final.pth").is_file()
    assert {p.name for p in (work / "scores").iterdir()} >= {
        "cases.csv", "lesions.csv", "summary.json", "report.html"
    }
