"""Phantom generation speed, and its intensities against real BraTS scans.

Speed (always): seconds per case of ``generate_case`` at ``--spacing``
(default 1.5 mm) on one core (BLAS, OpenMP and SimpleITK held to one thread;
wall and process CPU time, which moves less with other load on the machine),
for the current generator and for the v1 generator, whose source is read from
git history (``--baseline-rev``) into a temporary module, timed in the same
run, case by case interleaved. Template loading (once per process and
spacing) is done before timing.

Intensities (``--real DIR``, a folder of BraTS cases, 2018-2021 or 2023+
names): for every case, sequence and tissue, the median intensity after the
converter's normalisation (``preprocess_volume`` with ``--normalization``, by
default the converter's: ``zscore`` maps the brain's mean -3 and +3.5 SD to 0
and 1, ``percentile`` its 0.5 and 99.5 percentiles). Tumour regions come from ``seg``.
Normal tissue of a real scan comes from an atlas-initialised Gaussian
mixture: the MNI152 tissue fractions (the phantom's template) are affinely
registered to the case's T1 and serve as voxel priors of a 3-class EM on
(T1, T2, FLAIR) over tumour-free brain, the classic Bayesian segmentation.
The phantom's normal tissue comes from the same EM, with its true tissue map
(smoothed like a registered atlas) as priors. Both exclude the brain's
outer 2 mm and voxels within 3 mm of the tumour. The table gives, per
sequence and tissue, the real medians and the spread of the phantom's
per-case medians over ``--phantom-cases`` cases, and whether each real value
lies inside the phantom's 5-95 % band. Real scans are read, never copied.

Run: ``python bench/phantom.py [--cases 10] [--spacing 1.5] [--real DIR]
[--normalization zscore|percentile]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, before numpy loads its BLAS

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from scipy import ndimage  # noqa: E402

from brainseg_d2.data import phantom, phantom_template  # noqa: E402
from brainseg_d2.data.convert import ConvertOptions  # noqa: E402
from brainseg_d2.data.preprocess import PreprocessOptions, preprocess_volume  # noqa: E402
from brainseg_d2.data.sources import find_brats_cases  # noqa: E402
from brainseg_d2.labels import CONVENTIONS, TISSUE_ED, TISSUE_ET, TISSUE_NCR, raw_to_tissue  # noqa: E402
from brainseg_d2.structures import NORMALIZATIONS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEQUENCES = phantom.MODALITIES
TISSUES = ("csf", "gm", "wm", "ed", "et", "ncr")


def load_v1(rev: str):
    """The phantom module as of git revision ``rev``, imported from a temporary file."""
    source = subprocess.run(
        ["git", "show", f"{rev}:brainseg_d2/data/phantom.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = Path(tempfile.mkdtemp(prefix="phantom_v1_"))
    path = folder / "phantom_v1.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("phantom_v1", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def time_generation(args) -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    generators = {"v2": phantom.generate_case}
    if args.baseline_rev:
        generators["v1"] = load_v1(args.baseline_rev).generate_case
    for gen in generators.values():  # templates, caches
        gen(0, spacing=args.spacing)
    wall: dict[str, list[float]] = {k: [] for k in generators}
    cpu: dict[str, list[float]] = {k: [] for k in generators}
    for i in range(args.cases):
        for name, gen in generators.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            gen((args.seed, i), spacing=args.spacing)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"load average before: {args.load}, after: {os.getloadavg()[0]:.2f}")
    print(f"{args.cases} cases at {args.spacing:g} mm, one thread, seconds per case:")
    for name in generators:
        for label, t in (("wall", wall[name]), ("cpu", cpu[name])):
            print(
                f"  {name} {label:4s}: median {statistics.median(t):.3f}  "
                f"mean {statistics.mean(t):.3f}  min {min(t):.3f}  max {max(t):.3f}"
            )
    if "v1" in wall:
        for label, t in (("wall", wall), ("cpu", cpu)):
            ratio = statistics.median(t["v2"]) / statistics.median(t["v1"])
            print(f"  v2 / v1 ({label} medians): {ratio:.2f}")


def normalise(images: dict[str, sitk.Image], normalization: str) -> dict[str, np.ndarray]:
    """Each sequence scaled as the converter does (float, before 8-bit rounding), 0-1."""
    out = {}
    for name in SEQUENCES:
        options = PreprocessOptions(channels=(name,), normalization=normalization)
        low, high = preprocess_volume(images, options).intensity[name]
        array = sitk.GetArrayFromImage(images[name]).astype(np.float32)
        out[name] = np.clip((array - low) / (high - low), 0.0, 1.0)
    return out


def tissue_medians(norm, anatomy, tumour, brain) -> dict[str, dict[str, float]]:
    """sequence -> tissue -> median normalised intensity (NaN where a tissue is absent)."""
    inner = ndimage.binary_erosion(brain, iterations=2)
    far = inner & ~ndimage.binary_dilation(tumour > 0, iterations=3)
    masks = {
        "csf": far & (anatomy == 1),
        "gm": far & (anatomy == 2),
        "wm": far & (anatomy == 3),
        "ed": tumour == TISSUE_ED,
        "et": tumour == TISSUE_ET,
        "ncr": tumour == TISSUE_NCR,
    }
    return {
        s: {t: float(np.median(norm[s][m])) if m.sum() > 20 else np.nan for t, m in masks.items()}
        for s in SEQUENCES
    }


def _atlas_priors(t1: sitk.Image) -> np.ndarray:
    """MNI152 CSF/GM/WM fractions affinely registered to ``t1``: float32 (3, z, y, x)."""
    tpl = phantom_template.load_template(1.0)
    moving_array = np.tensordot(np.array([0.3, 0.6, 0.9], np.float32), tpl.fractions, axes=1)
    moving = sitk.GetImageFromArray(moving_array)
    moving.CopyInformation(tpl.reference)
    fixed = sitk.Cast(t1, sitk.sitkFloat32)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.05, seed=1)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-4, 200, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2])
    reg.SetSmoothingSigmasPerLevel([2, 1])
    initial = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    priors = []
    for k in range(3):
        image = sitk.GetImageFromArray(np.ascontiguousarray(tpl.fractions[k]))
        image.CopyInformation(tpl.reference)
        priors.append(sitk.GetArrayFromImage(sitk.Resample(image, t1, transform, sitk.sitkLinear)))
    return np.stack(priors)


def real_anatomy(norm, priors, mask, iterations: int = 10) -> np.ndarray:
    """CSF/GM/WM (1/2/3) by an EM Gaussian mixture on (T1, T2, FLAIR) with atlas priors."""
    x = np.stack([norm[s][mask] for s in ("t1", "t2", "flair")], 1).astype(np.float64)
    prior = np.stack([p[mask] for p in priors], 1).astype(np.float64) + 0.05
    prior /= prior.sum(1, keepdims=True)
    post = prior.copy()
    for _ in range(iterations):
        weights = post.sum(0)
        mu = (post.T @ x) / weights[:, None]
        like = np.empty_like(post)
        for k in range(3):
            d = x - mu[k]
            cov = (post[:, k, None] * d).T @ d / weights[k] + 1e-4 * np.eye(3)
            inv = np.linalg.inv(cov)
            maha = np.einsum("ni,ij,nj->n", d, inv, d)
            like[:, k] = np.exp(-0.5 * maha) / np.sqrt(np.linalg.det(cov))
        post = prior * like
        post /= np.maximum(post.sum(1, keepdims=True), 1e-300)
    out = np.zeros(mask.shape, np.uint8)
    out[mask] = np.argmax(post, 1) + 1
    return out


def measure_real(folder: Path, normalization: str) -> dict[str, dict[str, dict[str, float]]]:
    results = {}
    for case in find_brats_cases(folder):
        images = {c: sitk.ReadImage(p) for c, p in case.channels.items()}
        raw = sitk.GetArrayFromImage(sitk.ReadImage(case.mask)).astype(np.int64)
        tumour = raw_to_tissue(raw, CONVENTIONS[case.label_convention])
        norm = normalise(images, normalization)
        brain = np.zeros(tumour.shape, bool)
        for image in images.values():
            brain |= sitk.GetArrayViewFromImage(image) != 0
        normal = ndimage.binary_erosion(brain, iterations=2) & ~ndimage.binary_dilation(
            tumour > 0, iterations=3
        )
        anatomy = real_anatomy(norm, _atlas_priors(images["t1"]), normal)
        results[case.case_id] = tissue_medians(norm, anatomy, tumour, brain)
        print(f"  measured {case.case_id}", flush=True)
    return results


def measure_phantom(
    n: int, spacing: float, seed: int, normalization: str
) -> list[dict[str, dict[str, float]]]:
    out = []
    for i in range(n):
        case = phantom.generate_case((seed, i), spacing=spacing, p_empty=0.0)
        seg = sitk.GetArrayFromImage(case.seg)
        tumour = raw_to_tissue(seg.astype(np.int64), CONVENTIONS["brats2021"])
        brain = sitk.GetArrayFromImage(case.anatomy) > 0
        norm = normalise(case.images, normalization)
        # The same EM as for real scans; priors: the true tissue map, smoothed
        # like a registered atlas.
        truth = sitk.GetArrayFromImage(case.anatomy)
        # ~4 mm: about the misfit of an affine atlas registration.
        sigma = 4.0 / spacing
        priors = [
            ndimage.gaussian_filter((truth == k).astype(np.float32), sigma) for k in (1, 2, 3)
        ]
        normal = ndimage.binary_erosion(brain, iterations=2) & ~ndimage.binary_dilation(
            tumour > 0, iterations=3
        )
        anatomy = real_anatomy(norm, priors, normal)
        out.append(tissue_medians(norm, anatomy, tumour, brain))
    return out


def compare(real, synthetic) -> None:
    print("\nmedian normalised intensity (0-1) per tissue: real cases | phantom per-case medians")
    print(
        f"{'seq':6s} {'tissue':6s} {'real':>16s} | {'min':>5s} {'5%':>5s} {'50%':>5s} "
        f"{'95%':>5s} {'max':>5s}  in 5-95%"
    )
    inside = in_range = total = 0
    for s in SEQUENCES:
        for t in TISSUES:
            r = [c[s][t] for c in real.values() if not np.isnan(c[s][t])]
            p = np.array([c[s][t] for c in synthetic if not np.isnan(c[s][t])])
            lo, mid, hi = np.percentile(p, [5, 50, 95])
            inside += sum(lo <= v <= hi for v in r)
            in_range += sum(p.min() <= v <= p.max() for v in r)
            total += len(r)
            real_text = " ".join(f"{v:.2f}" for v in r)
            print(
                f"{s:6s} {t:6s} {real_text:>16s} | {p.min():5.2f} {lo:5.2f} {mid:5.2f} {hi:5.2f} "
                f"{p.max():5.2f}  {all(lo <= v <= hi for v in r)}"
            )
    print(f"real values inside the phantom's 5-95 % band: {inside} of {total}")
    print(f"real values inside the phantom's range: {in_range} of {total}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10, help="cases to time")
    parser.add_argument("--spacing", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--baseline-rev",
        default="8dfbe25",
        help="git revision holding the v1 generator ('' to skip it)",
    )
    parser.add_argument("--real", type=Path, help="folder of real BraTS cases to compare with")
    parser.add_argument("--phantom-cases", type=int, default=40)
    parser.add_argument("--phantom-spacing", type=float, default=2.0)
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        default=ConvertOptions().normalization,
        help="intensity scale of the comparison (default: the converter's)",
    )
    args = parser.parse_args()
    args.load = f"{os.getloadavg()[0]:.2f}"
    if not args.no_timing:
        time_generation(args)
    if args.real:
        print(f"\nreal cases under {args.real}:")
        print(f"normalisation: {args.normalization}")
        real = measure_real(args.real, args.normalization)
        synthetic = measure_phantom(
            args.phantom_cases, args.phantom_spacing, args.seed, args.normalization
        )
        compare(real, synthetic)


if __name__ == "__main__":
    sys.exit(main())
