"""Optimizer and learning-rate schedule of a run (used by the trainer and by selection's trial rule)."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on weights only: norms, biases and other 1-d parameters are not decayed (timm's
    ``param_groups_weight_decay``; frozen parameters are left out)."""
    from timm.optim import param_groups_weight_decay

    groups = [g for g in param_groups_weight_decay(model, cfg.weight_decay) if g["params"]]
    if not groups:
        return None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
