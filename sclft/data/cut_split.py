"""``test_subset:N:NAME``: dataset ``NAME`` with its test split cut to ``N`` images per class.

Lets a CPU benchmark evaluate every epoch on a fixed, smaller test set (class-balanced, fixed
seed 0, whatever the run's seed); the fingerprint keeps feature caches of the full and the cut
test split apart.
"""

from __future__ import annotations

from ..errors import UsageError
from ._registry import register_dataset, resolve
from .base import DatasetSplits, LabelSubset, targets_of
from .subsets import few_shot_indices

__all__ = ["load_test_subset"]


@register_dataset("test_subset", prefix=True, usage="test_subset:N:NAME")
def load_test_subset(argument: str, data_dir: str | None = None) -> DatasetSplits:
    """Dataset ``NAME`` (any registered name) with ``N`` test images per class."""
    count, sep, name = argument.partition(":")
    if not sep or not count.isdigit() or int(count) < 1:
        raise UsageError(f"expected test_subset:N:NAME with N >= 1, got test_subset:{argument}")
    splits = resolve(name)(data_dir)
    keep = few_shot_indices(targets_of(splits.test), int(count), 0, splits.class_names, "test_per_class", "test")
    splits.test = LabelSubset(splits.test, keep)
    splits.options["test_per_class"] = int(count)
    return splits
