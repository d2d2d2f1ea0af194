"""Evaluating a trained run directory on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import nc
from .data import TransformedDataset, build_transforms, load_dataset
from .devices import resolve_device
from .run_folder import check_run, load, read_train_config


@torch.inference_mode()
def evaluate_run(
    run_dir: str | Path,
    data: str | None = None,
    split: str = "test",
    data_dir: str | None = None,
    image_size: int | None = None,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Accuracy and head-input NC1 of the model in ``run_dir`` (data / image size default to the run's)."""
    run_dir = check_run(run_dir)
    run = read_train_config(run_dir)
    data = data or run.get("data")
    if not data:
        raise ValueError("pass --data: the run directory does not record its dataset")
    model = load(run_dir)
    splits = load_dataset(data, data_dir or run.get("data_dir"))
    if splits.num_classes != model.num_classes:
        raise ValueError(f"{data} has {splits.num_classes} classes but the model was trained for {model.num_classes}")
    dataset = getattr(splits, split)
    if dataset is None:
        raise ValueError(f"{splits.name} has no {split!r} split")
    _, eval_tf = build_transforms(model.backbone.data_config, image_size or run.get("image_size"))
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(TransformedDataset(dataset, eval_tf), batch_size=batch_size, num_workers=num_workers)
    feats, labels, correct = [], [], 0
    for x, y in tqdm(loader, desc=f"eval {split}", disable=not progress, leave=False):
        f = model.forward_features(x.to(device))
        correct += int((model.head(f).argmax(1).cpu() == y).sum())
        feats.append(f.float().cpu())
        labels.append(y)
    y = torch.cat(labels)
    return {
        "run": str(run_dir),
        "dataset": data,
        "split": split,
        "num_samples": int(len(y)),
        "accuracy": correct / len(y),
        "nc1": nc.nc1(torch.cat(feats), y, model.num_classes),
    }

