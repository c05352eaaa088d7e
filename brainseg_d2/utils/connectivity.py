"""Neighbourhoods of connected components, shared by the metrics and the post-processing.

Both count components the same way (4/8 in 2D, 6/18/26 in 3D), so the one
definition lives here rather than in either of them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def neighbourhood_structure(ndim: int, neighbours: int | None = None) -> np.ndarray:
    """Structuring element for a neighbourhood given by its number of neighbours.

    Args:
        ndim: number of array axes (2 or 3 in practice; any >= 1 works).
        neighbours: neighbourhood size: 4 or 8 in 2D; 6 (faces), 18 (faces and
            edges) or 26 (full) in 3D; in general any count reachable by
            :func:`scipy.ndimage.generate_binary_structure`. ``None`` means the full
            neighbourhood (8 in 2D, 26 in 3D).

    Returns:
        bool array of shape ``(3,) * ndim``.

    Raises:
        ValueError: if ``neighbours`` is not a valid neighbourhood for ``ndim``.
    """
    if neighbours is None:
        return ndimage.generate_binary_structure(ndim, ndim)
    allowed = {}
    for rank in range(1, ndim + 1):
        struct = ndimage.generate_binary_structure(ndim, rank)
        allowed[int(struct.sum()) - 1] = struct
    if neighbours not in allowed:
        raise ValueError(
            f"connectivity {neighbours!r} is not a neighbourhood of a {ndim}D array; "
            f"choose one of {sorted(allowed)}"
        )
    return allowed[neighbours]
