"""Smooth random fields for the MRI phantom and intensity augmentation.

A smooth field is drawn as white noise on a coarse grid and interpolated to the
full grid one axis at a time (a small matrix product per axis). That costs a
few milliseconds for a 1.5 mm brain volume, where a full-size Gaussian filter
of a wide kernel or ``scipy.ndimage.zoom`` costs tens.

Arrays are numpy, any number of dimensions; shapes are in array axis order.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def interpolation_matrix(n_out: int, n_in: int, order: int = 3) -> np.ndarray:
    """Weights ``W`` (float32, ``(n_out, n_in)``) so that ``W @ coarse`` resamples one axis.

    The first and last output samples sit on the first and last coarse nodes.

    Args:
        n_out: output length (>= 1).
        n_in: coarse length (>= 1).
        order: 1 for linear interpolation (exact at the nodes), 3 for the cubic
            B-spline (twice differentiable, smooths the nodes slightly).

    Returns:
        read-only row-stochastic matrix.
    """
    if order not in (1, 3):
        raise ValueError(f"order must be 1 or 3, got {order}")
    w = np.zeros((n_out, n_in), np.float64)
    if n_in == 1:
        w[:, 0] = 1.0
    else:
        t = np.linspace(0.0, n_in - 1.0, n_out) if n_out > 1 else np.zeros(1)
        base = np.floor(t).astype(int)
        frac = t - base
        rows = np.arange(n_out)
        if order == 1:
            taps = {0: 1.0 - frac, 1: frac}
        else:
            taps = {
                -1: (1.0 - frac) ** 3 / 6.0,
                0: (3.0 * frac**3 - 6.0 * frac**2 + 4.0) / 6.0,
                1: (-3.0 * frac**3 + 3.0 * frac**2 + 3.0 * frac + 1.0) / 6.0,
                2: frac**3 / 6.0,
            }
        for offset, weight in taps.items():
            # Clamped at the ends: the edge node is repeated.
            np.add.at(w, (rows, np.clip(base + offset, 0, n_in - 1)), weight)
    out = w.astype(np.float32)
    out.flags.writeable = False
    return out


def upsample(coarse: np.ndarray, shape: tuple[int, ...], order: int = 3) -> np.ndarray:
    """Interpolate ``coarse`` to ``shape`` separably (float32, same number of axes).

    Args:
        coarse: array with one axis per output axis.
        shape: output shape.
        order: see :func:`interpolation_matrix`.
    """
    if coarse.ndim != len(shape):
        raise ValueError(f"coarse has {coarse.ndim} axes but shape {shape} has {len(shape)}")
    out = np.asarray(coarse, np.float32)
    # Axis by axis from the last: each step is one (batched) matrix product.
    for axis in reversed(range(len(shape))):
        w = interpolation_matrix(shape[axis], out.shape[axis], order)
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], corr: float | tuple[float, ...]
) -> np.ndarray:
    """Zero-mean, unit-variance random field (float32, ``shape``).

    Args:
        rng: random generator.
        shape: output shape.
        corr: correlation length in voxels (one value, or one per axis): the
            spacing of the coarse grid of white noise.
    """
    corr = (corr,) * len(shape) if np.isscalar(corr) else tuple(corr)
    coarse_shape = tuple(max(2, int(np.ceil(n / max(c, 1.0))) + 2) for n, c in zip(shape, corr))
    field = upsample(rng.standard_normal(coarse_shape, dtype=np.float32), shape)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field
