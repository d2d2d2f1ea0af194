"""Dataset registry: named datasets → train / test (/ val) splits of ``(PIL RGB image, int label)``.

>>> from sclft.data import load_dataset, build_transforms, TransformedDataset
>>> splits = load_dataset("digits", train_per_class=20, val_fraction=0.1, seed=0)
>>> train_tf, eval_tf = build_transforms({"input_size": (3, 64, 64)})
>>> train = TransformedDataset(splits.train, train_tf)

Names: see :func:`list_datasets`, plus ``imagefolder:PATH``, ``hf:<repo_id>`` and
``test_subset:N:NAME`` (docs/data.md).
"""

from __future__ import annotations

import logging

from . import cut_split, embedded, fashion_mnist, hub, imagefolder  # noqa: F401  (register the sources)
from ._registry import list_datasets, list_prefixes, register_dataset, resolve
from .base import (
    ArrayImageDataset,
    DatasetSplitError,
    DatasetSplits,
    DatasetUnavailableError,
    ImageDataset,
    LabelSubset,
    TransformedDataset,
    targets_of,
)
from .subsets import few_shot_indices, stratified_split_indices
from .transforms import build_transforms

__all__ = [
    "list_datasets",
    "list_prefixes",
    "load_dataset",
    "register_dataset",
    "build_transforms",
    "DatasetSplits",
    "TransformedDataset",
    "DatasetUnavailableError",
    "DatasetSplitError",
    "ImageDataset",
    "ArrayImageDataset",
    "LabelSubset",
    "targets_of",
]

log = logging.getLogger("sclft.data")


def load_dataset(
    name: str,
    data_dir: str | None = None,
    *,
    train_per_class: int | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    check: bool = True,
) -> DatasetSplits:
    """Load dataset ``name`` and apply the seeded subsetting options.

    * ``val_fraction``: when the dataset has no validation split, hold out this fraction of each
      training class (stratified, seeded) as ``val``; ignored with a warning when it has one.
    * ``train_per_class``: then keep ``min(N, available)`` training samples per class (balanced,
      seeded; nested across N for a fixed seed; a warning names classes with fewer than N).
    * ``check``: then refuse splits that cannot be trained and evaluated on (an empty split, a class
      with no image in train or test, labels out of range) with :class:`DatasetSplitError`, a
      ``ValueError`` naming the split and the class (:meth:`DatasetSplits.check`), so a run stops
      before any model is built.

    Unknown names raise ``ValueError``; data that cannot be reached raises
    :class:`DatasetUnavailableError` naming what is missing and the ``--data-dir`` alternative.
    """
    splits = resolve(name)(data_dir)
    if check:  # the base splits first: subsetting an empty split would fail less clearly
        splits.check()
    if val_fraction:
        if splits.val is not None:
            log.warning("%s has a validation split; val_fraction=%s is ignored", name, val_fraction)
        else:
            keep, held = stratified_split_indices(targets_of(splits.train), val_fraction, seed)
            splits.train, splits.val = LabelSubset(splits.train, keep), LabelSubset(splits.train, held)
            splits.options.update(val_fraction=val_fraction, seed=seed)
    if train_per_class is not None:
        keep = few_shot_indices(targets_of(splits.train), train_per_class, seed, splits.class_names)
        splits.train = LabelSubset(splits.train, keep)
        splits.options.update(train_per_class=train_per_class, seed=seed)
    if splits.skipped:
        log.warning("%s: %d unreadable image(s) skipped", name, len(splits.skipped))
    if check and splits.options:
        splits.check()
    return splits
