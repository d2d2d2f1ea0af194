"""Evaluating a model: accuracy and head-input NC1 over a loader (the trainer's evaluation too), and a trained
run directory on a dataset split."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from . import nc
from .data import TransformedDataset, build_transforms, load_dataset
from .devices import resolve_device
from .errors import UsageError
from .progress import progress_bar
from .run_folder import check_run, load, read_train_config

log = logging.getLogger("sclft.eval")


@torch.no_grad()
def evaluate(model, loader: Iterable, from_frozen: bool = False, accelerator=None, num_classes: int | None = None,
             with_nc1: bool = False, device: torch.device | None = None, desc: str | None = None) -> dict[str, float]:
    """Accuracy (and NC1 of the head-input features) of a :class:`~sclft.model.TransferModel` over ``loader``.

    With an Accelerate ``accelerator``: under its autocast, the batches (on its device) gathered across its
    processes; without one, batches are moved to ``device``. ``desc``: a progress bar of that title.
    """
    model.eval()
    correct, count, feats, labels = 0, 0, [], []
    unwrapped = accelerator.unwrap_model(model) if accelerator else model
    autocast = accelerator.autocast if accelerator else contextlib.nullcontext
    for x, y in progress_bar(loader, desc=desc, progress=desc is not None):
        x = x.to(device) if device is not None else x
        with autocast():
            f = unwrapped.features_from_frozen(x) if from_frozen else unwrapped.forward_features(x)
            logits = unwrapped.head(f)
        pred, y = logits.argmax(1), y.to(logits.device)
        if accelerator:
            pred, y = accelerator.gather_for_metrics((pred, y))
        correct += int((pred == y).sum())
        count += int(y.numel())
        if with_nc1:
            feats.append((accelerator.gather_for_metrics(f.float()) if accelerator else f.float()).cpu())
            labels.append(y.cpu())
    out = {"accuracy": correct / max(count, 1)}
    if with_nc1:
        try:
            out["nc1"] = nc.nc1(torch.cat(feats), torch.cat(labels), num_classes)
        except nc.NC1Undefined as exc:  # a model's outcome, not the user's input: recorded as NaN, the run kept
            log.warning("NC1 is NaN: %s — the head input no longer separates the classes (accuracy %.4f; a "
                        "diverged run? try a lower --lr)", exc, out["accuracy"])
            out["nc1"] = float("nan")
    return out


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
    backbone_weights: str | None = None,
) -> dict[str, Any]:
    """Accuracy and head-input NC1 of the model in ``run_dir`` (data / image size default to the run's;
    ``backbone_weights``: the weights file a run trained with ``--checkpoint`` used, :func:`sclft.run_folder.load`'s
    ``checkpoint``)."""
    run_dir = check_run(run_dir)
    run = read_train_config(run_dir)
    data = data or run.get("data")
    if not data:
        raise UsageError("pass --data: the run directory does not record its dataset")
    model = load(run_dir, checkpoint=backbone_weights)
    splits = load_dataset(data, data_dir or run.get("data_dir"))
    if splits.num_classes != model.num_classes:
        raise UsageError(f"{data} has {splits.num_classes} classes but the model was trained for {model.num_classes}")
    dataset = getattr(splits, split)
    if dataset is None:
        raise UsageError(f"{splits.name} has no {split!r} split")
    _, eval_tf = build_transforms(model.backbone.data_config, image_size or run.get("image_size"))
    device = resolve_device(device)
    model.to(device).eval()
    loader = DataLoader(TransformedDataset(dataset, eval_tf), batch_size=batch_size, num_workers=num_workers)
    result = evaluate(model, loader, num_classes=model.num_classes, with_nc1=True, device=device,
                      desc=f"eval {split}" if progress else None)
    return {"run": str(run_dir), "dataset": data, "split": split, "num_samples": len(loader.dataset), **result}

