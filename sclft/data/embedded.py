"""``digits``: scikit-learn's embedded 8×8 handwritten digits (1,797 images, 10 classes), offline.

There is no official split, so a fixed stratified 75 / 25 train / test split (``random_state=0``)
is part of the dataset's definition: the test set is the same whatever ``seed`` a run uses.
Images stay at their native 8×8 (grey levels 0..16 scaled to 0..255); the transforms upsample.
"""

from __future__ import annotations

import numpy as np

from ._registry import register_dataset
from .base import ArrayImageDataset, DatasetSplits

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@register_dataset("digits")
def load_digits(data_dir: str | None = None) -> DatasetSplits:
    """Load ``sklearn.datasets.load_digits`` as 8×8 greyscale images (``data_dir`` is unused)."""
    from sklearn.datasets import load_digits as sk_load_digits  # scikit-learn loads only for this dataset (slow)
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    split_id = f"test_fraction={TEST_FRACTION},split_seed={SPLIT_SEED}"
    return DatasetSplits(
        name="digits",
        train=ArrayImageDataset(images[train_idx], labels[train_idx], content_id=split_id),
        test=ArrayImageDataset(images[test_idx], labels[test_idx], content_id=split_id),
        val=None,
        class_names=[str(int(c)) for c in bunch.target_names],
        source="sklearn.datasets.load_digits",
    )
