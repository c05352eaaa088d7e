"""Label conventions and targets."""

from __future__ import annotations

import numpy as np
import pytest

from brainseg_d2.labels import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_masks_from_tissue_matches_the_category_codes(name):
    target = TARGETS[name]
    tissue = np.random.default_rng(0).integers(0, 4, size=(3, 5, 6), dtype=np.uint8)
    masks = target.masks_from_tissue(tissue)
    assert masks.shape == (len(target.categories), 3, 5, 6) and masks.dtype == bool
    for mask, codes in zip(masks, target.categories.values()):
        np.testing.assert_array_equal(mask, np.isin(tissue, codes))
    assert target.masks_from_tissue(np.zeros((0, 4), np.int64)).shape == (len(masks), 0, 4)


def test_masks_from_tissue_rejects_unknown_codes():
    with pytest.raises(ValueError, match="tissue codes must be 0-4, got values 0..5"):
        TARGETS["regions"].masks_from_tissue(np.array([[0, 5]]))
