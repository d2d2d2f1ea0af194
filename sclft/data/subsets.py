"""Seeded, label-aware subsetting: few-shot training sets and stratified validation splits."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import UsageError

__all__ = ["per_class_permutations", "few_shot_indices", "stratified_split_indices"]

log = logging.getLogger("sclft.data")


def per_class_permutations(targets: Sequence[int], seed: int, stream: int) -> dict[int, np.ndarray]:
    """For each class (ascending), its sample indices in a seeded random order.

    The order depends only on ``(targets, seed, stream)``, so taking the first ``n`` of each class
    gives nested subsets: the 5-per-class set is contained in the 10-per-class set of the same seed.
    """
    y = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng([seed, stream])
    return {int(c): rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}


def few_shot_indices(
    targets: Sequence[int],
    per_class: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    option: str = "train_per_class",
    split: str = "train",
) -> np.ndarray:
    """``min(per_class, available)`` samples of each class, seeded; sorted indices.

    A class with fewer than ``per_class`` samples keeps all of them, with a warning naming the
    class (by ``class_names[c]`` when given), the ``split`` and the ``option`` that asked for more.
    """
    if per_class < 1:
        raise UsageError(f"{option} must be >= 1, got {per_class}")
    chosen = []
    for c, order in per_class_permutations(targets, seed, stream=1).items():
        if len(order) < per_class:
            name = repr(class_names[c]) if class_names is not None and 0 <= c < len(class_names) else str(c)
            log.warning("class %s has only %d images in the %s split (< %s=%d); using all",
                        name, len(order), split, option, per_class)
        chosen.append(order[:per_class])
    return np.sort(np.concatenate(chosen))


def stratified_split_indices(targets: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into ``(keep, held_out)`` with ``round(fraction * n_c)`` held out per class.

    Every class with at least two samples keeps one or more for training.
    """
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"val_fraction must be in (0, 1), got {fraction}")
    keep, held = [], []
    for order in per_class_permutations(targets, seed, stream=0).values():
        n_held = min(int(round(fraction * len(order))), max(len(order) - 1, 0))
        held.append(order[:n_held])
        keep.append(order[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))
