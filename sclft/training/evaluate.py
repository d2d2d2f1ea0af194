"""Evaluation during training: accuracy and NC1 over a loader, gathered across processes."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .. import nc


@torch.no_grad()
def evaluate(model, loader: Iterable, from_frozen: bool, accelerator, num_classes: int,
             with_nc1: bool = False) -> dict[str, float]:
    """Accuracy (and NC1 of the head-input features) over ``loader``."""
    model.eval()
    correct, count, feats, labels = 0, 0, [], []
    unwrapped = accelerator.unwrap_model(model)
    for x, y in loader:
        with accelerator.autocast():
            f = unwrapped.features_from_frozen(x) if from_frozen else unwrapped.forward_features(x)
            logits = unwrapped.head(f)
        pred, y = accelerator.gather_for_metrics((logits.argmax(1), y))
        correct += int((pred == y).sum())
        count += int(y.numel())
        if with_nc1:
            feats.append(accelerator.gather_for_metrics(f.float()).cpu())
            labels.append(y.cpu())
    out = {"accuracy": correct / max(count, 1)}
    if with_nc1:
        out["nc1"] = nc.nc1(torch.cat(feats), torch.cat(labels), num_classes)
    return out
