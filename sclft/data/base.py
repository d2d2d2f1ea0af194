"""Core data types: image datasets yielding ``(PIL RGB image, int label)``, subsets, splits."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset, Subset

from ..errors import UnavailableError, UsageError
from ..preprocess import to_rgb, upright

__all__ = [
    "DatasetUnavailableError",
    "DatasetSplitError",
    "to_rgb",
    "ImageDataset",
    "ArrayImageDataset",
    "LabelSubset",
    "TransformedDataset",
    "DatasetSplits",
    "targets_of",
    "file_stamp",
]

log = logging.getLogger("sclft.data")


class DatasetUnavailableError(UnavailableError, RuntimeError):
    """The dataset cannot be loaded here (offline, not cached, no local copy)."""


class DatasetSplitError(UsageError):
    """The splits cannot be trained and evaluated on: an empty split, a class missing, labels out of range."""


class ImageDataset(Dataset):
    """Base class: subclasses implement ``_load(i) -> PIL.Image`` and ``describe(i) -> str``.

    ``targets`` holds all labels (read without decoding images). An image that fails to decode is
    logged by :meth:`describe`, appended once to the shared ``skipped`` list, and replaced by the
    next readable sample (image and label both from that sample), so a run never stops on one
    bad file. ``content_id`` identifies the underlying data for cache keys.
    """

    def __init__(self, targets: Sequence[int], skipped: list[str] | None = None, content_id: str = ""):
        self.targets = [int(t) for t in targets]
        self.skipped = skipped if skipped is not None else []
        self.content_id = content_id

    def _load(self, index: int) -> Image.Image:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        return f"#{index}"

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                return to_rgb(upright(self._load(i))), self.targets[i]
            except (OSError, ValueError, SyntaxError) as exc:  # PIL's decode failures
                where = self.describe(i)
                if where not in self.skipped:
                    self.skipped.append(where)
                    log.warning("skipping unreadable image %s (%s)", where, exc)
        raise RuntimeError("no readable image in the dataset")


class ArrayImageDataset(ImageDataset):
    """In-memory uint8 images, ``(N, H, W)`` greyscale or ``(N, H, W, 3)`` RGB."""

    def __init__(self, images: np.ndarray, targets: Sequence[int], content_id: str = ""):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(targets):
            raise UsageError(f"expected N uint8 images (N,H,W[,3]) and N labels, got {images.shape} {images.dtype}")
        super().__init__(targets, content_id=content_id)
        self.images = images

    def _load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class LabelSubset(Subset):
    """``torch.utils.data.Subset`` that also carries the subset's ``targets``."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]):
        super().__init__(dataset, [int(i) for i in indices])
        base_targets = targets_of(dataset)
        self.targets = [base_targets[i] for i in self.indices]


class TransformedDataset(Dataset):
    """Wrap a split: yields ``(transform(image), label)``; ``targets`` passes through."""

    def __init__(self, base: Dataset, transform: Callable[[Image.Image], Any]):
        self.base, self.transform = base, transform
        self.targets = targets_of(base)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int):
        image, label = self.base[index]
        return self.transform(image), label


def file_stamp(paths: Sequence[Path]) -> str:
    """Short hash of (path, size, mtime) of ``paths``: changes when any file is replaced."""
    lines = "\n".join(f"{p}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in paths)
    return hashlib.sha1(lines.encode()).hexdigest()[:16]


def targets_of(dataset: Dataset) -> list[int]:
    """Labels of a split without decoding images (``targets`` attribute, as in torchvision)."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} has no `targets`; wrap it in an sclft ImageDataset")
    return list(targets)


def _root_and_indices(dataset: Dataset) -> tuple[Dataset, np.ndarray]:
    """Follow nested subsets down to the base dataset; indices are into that base."""
    indices = np.arange(len(dataset))  # type: ignore[arg-type]
    while isinstance(dataset, Subset):
        indices = np.asarray(dataset.indices, dtype=np.int64)[indices]
        dataset = dataset.dataset
    return dataset, indices


@dataclass
class DatasetSplits:
    """Train / test (/ val) splits of one dataset; every split yields ``(PIL RGB image, int label)``.

    ``source`` is where the data came from (Hub id, local path); ``skipped`` lists the paths / ids
    of unreadable images that were dropped (filled at index time for image folders, and during
    decoding for lazily decoded sources); ``options`` records the subsetting applied.
    """

    name: str
    train: Dataset
    test: Dataset
    val: Dataset | None
    class_names: list[str]
    source: str = ""
    skipped: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check(self) -> DatasetSplits:
        """Refuse splits that cannot be trained and evaluated on, before any work starts.

        Raises :class:`DatasetSplitError` (a ``ValueError``) naming the split and the class by name
        when ``train``, ``test`` or a given ``val`` is empty, holds a label outside
        ``0..num_classes-1``, or lacks a class (an empty or all-unreadable class folder, a class
        missing from the test split): per-class NC1 and accuracy are computed on each of them.
        Returns ``self``.
        """
        where = f"dataset {self.name!r}" + (f" ({self.source})" if self.source and self.source not in self.name else "")
        if not self.class_names:
            raise DatasetSplitError(f"{where} has no classes")
        for split in ("train", "test", "val"):
            data = getattr(self, split)
            if data is None:
                continue
            targets = np.asarray(targets_of(data), dtype=np.int64)
            if targets.size == 0:
                hint = " (raise --val-fraction)" if split == "val" and "val_fraction" in self.options else ""
                raise DatasetSplitError(f"{where}: the {split} split is empty{hint}")
            bad = np.unique(targets[(targets < 0) | (targets >= self.num_classes)])
            if bad.size:
                raise DatasetSplitError(
                    f"{where}: the {split} split has label(s) {bad[:5].tolist()} outside 0..{self.num_classes - 1} "
                    f"({self.num_classes} classes)"
                )
            counts = np.bincount(targets, minlength=self.num_classes)
            missing = [self._describe_class(split, data, k) for k in np.flatnonzero(counts == 0)]
            if not missing:
                continue
            listed = "; ".join(missing[:5]) + (f"; and {len(missing) - 5} more" if len(missing) > 5 else "")
            from_fraction = split == "val" and "val_fraction" in self.options
            hint = " (raise --val-fraction, or use more images per class)" if from_fraction else ""
            raise DatasetSplitError(
                f"{where}: {len(missing)} class(es) have no readable image in the {split} split: {listed}{hint}"
            )
        return self

    def _describe_class(self, split: str, data: Dataset, k: int) -> str:
        """``'name'``, plus its folder and the unreadable files skipped there when the split is a folder."""
        text = repr(self.class_names[k])
        folder = getattr(_root_and_indices(data)[0], "folder", None)
        if folder is not None:
            path = Path(folder) / self.class_names[k]
            dropped = sum(path in Path(p).parents for p in self.skipped)
            text += f" (folder {path}" + (f", {dropped} unreadable file(s) skipped)" if dropped else ")")
        return text

    def fingerprint(self, split: str) -> str:
        """Stable key naming exactly which samples ``split`` holds (for feature caches)."""
        dataset = {"train": self.train, "test": self.test, "val": self.val}.get(split)
        if dataset is None:
            raise UsageError(f"{self.name} has no {split!r} split")
        base, indices = _root_and_indices(dataset)
        digest = hashlib.sha1(indices.astype("<i8").tobytes()).hexdigest()[:16]
        # how train/val were drawn does not change the test samples: keep their caches shared across seeds
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items())
                        if split != "test" or k not in ("train_per_class", "val_fraction", "seed"))
        content = getattr(base, "content_id", "")
        return f"{self.name}|{self.source}|{content}|{split}|{opts}|n={len(indices)}|idx={digest}"
