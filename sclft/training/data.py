"""Loaders of a run: transformed splits, or cached frozen activations when the transform is deterministic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..cache import build_cache, frozen_cache_key
from ..config import TrainConfig
from ..data import DatasetSplits, TransformedDataset, build_transforms
from ..model import TransferModel


def make_loader(dataset: Dataset, batch_size: int, *, shuffle_gen: torch.Generator | None, num_workers: int,
                pin: bool) -> DataLoader:
    sampler = RandomSampler(dataset, generator=shuffle_gen) if shuffle_gen is not None else None
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers,
                      pin_memory=pin, drop_last=False)


@dataclass
class PreparedData:
    train: Dataset
    evals: dict[str, Dataset]  # split name -> dataset (test, val, train-eval)
    cached: bool


def prepare_datasets(model: TransferModel, splits: DatasetSplits, cfg: TrainConfig, device) -> PreparedData:
    """Transformed splits; with a deterministic transform and a frozen prefix, cached activations instead."""
    train_tf, eval_tf = build_transforms(model.backbone.data_config, cfg.image_size, cfg.augment)
    named = {"test": splits.test, **({"val": splits.val} if splits.val is not None else {})}
    use_cache = cfg.cache != "off" and model.strategy.has_frozen_prefix and not cfg.augment
    if not use_cache:
        evals = {k: TransformedDataset(v, eval_tf) for k, v in named.items()}
        evals["train"] = TransformedDataset(splits.train, eval_tf)
        return PreparedData(TransformedDataset(splits.train, train_tf), evals, False)
    storage = "auto" if cfg.cache == "auto" else cfg.cache
    cached = {}
    for split, base in {"train": splits.train, **named}.items():
        key = frozen_cache_key(model, splits.fingerprint(split), eval_tf)
        cached[split] = build_cache(model, TransformedDataset(base, eval_tf), key, device=device,
                                    batch_size=max(cfg.batch_size, 64), num_workers=cfg.num_workers,
                                    storage=storage, cache_dir=cfg.cache_dir, progress=cfg.progress)
    order = ["test", *(["val"] if "val" in cached else []), "train"]
    return PreparedData(cached["train"], {k: cached[k] for k in order}, True)
