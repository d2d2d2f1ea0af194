"""Optimizer and learning-rate schedule of a run, from timm (used by the trainer and by selection's trial rule).

* :func:`build_optimizer`: timm's ``create_optimizer_v2`` (``adamw`` → ``torch.optim.AdamW``, ``sgd`` → SGD with
  Nesterov momentum) over timm's ``param_groups_weight_decay`` groups (no weight decay on biases, norms and
  other 1-d parameters; frozen parameters left out). A strategy that gives some parameters another step
  (``Strategy.lr_scales()``) gets them in groups of their own with timm's ``lr_scale``.
* :class:`WarmupCosine`: timm's ``CosineLRScheduler`` stepped per update: linear warm-up over ``warmup_steps``
  updates (update ``j`` of them, counting from 1, uses ``j / warmup_steps`` of the peak lr), then a cosine
  decay that would reach 0 one update after the last; ``schedule="constant"``: the same warm-up, then the peak
  lr to the end (timm's ``StepLRScheduler`` with ``decay_rate=1``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler, StepLRScheduler

from .config import TrainConfig


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's weight-decay groups of the trainable parameters, split by the strategy's ``lr_scales()``."""
    strategy = getattr(model, "strategy", None)
    scales = strategy.lr_scales() if hasattr(strategy, "lr_scales") else {}
    groups = []
    for group in param_groups_weight_decay(model, weight_decay):
        by_scale: dict[float, list] = {}
        for p in group["params"]:
            by_scale.setdefault(float(scales.get(id(p), 1.0)), []).append(p)
        for scale, params in sorted(by_scale.items(), key=lambda kv: kv[0] != 1.0):
            groups.append({**group, "params": params, **({"lr_scale": scale} if scale != 1.0 else {})})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | None:
    """The run's optimizer over what trains (None when nothing does, e.g. zero_shot); an unvalidated ``cfg``
    gets its unset lr / weight decay from ``resolve_defaults`` (not written back)."""
    cfg = copy.copy(cfg).resolve_defaults()
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        return None
    for g in groups:  # timm applies lr_scale in its schedulers; the first update must see it too
        g["lr"] = cfg.lr * g.get("lr_scale", 1.0)
    strategy = getattr(model, "strategy", None)
    kwargs = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else dict(
        strategy.optimizer_options() if hasattr(strategy, "optimizer_options") else {})
    return create_optimizer_v2(groups, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)


class WarmupCosine:
    """timm's ``CosineLRScheduler`` per optimizer update, with the ``step()`` / ``get_last_lr()`` /
    ``state_dict()`` interface that Accelerate prepares and checkpoints (resume continues the schedule)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 schedule: str = "cosine"):
        self.optimizer = optimizer
        self.total_steps, self.warmup_steps = int(total_steps), int(warmup_steps)
        warmup = {"warmup_t": self.warmup_steps, "warmup_lr_init": 0.0, "warmup_prefix": True, "t_in_epochs": False}
        if schedule == "constant":
            self.timm = StepLRScheduler(optimizer, decay_t=max(1, self.total_steps), decay_rate=1.0, **warmup)
        else:
            t_initial = max(1, self.total_steps - self.warmup_steps + 1)
            # t_initial 1: the run is all warm-up (e.g. 1 epoch with warmup_epochs 1), on purpose; timm warns
            # that its cosine then has no effect, which is the schedule asked for, so that warning is not shown
            quiet = logging.getLogger("timm.scheduler.cosine_lr")
            level = quiet.level
            quiet.setLevel(logging.ERROR if t_initial == 1 else level)
            try:
                self.timm = CosineLRScheduler(optimizer, t_initial=t_initial, lr_min=0.0, **warmup)
            finally:
                quiet.setLevel(level)
        self.updates = 0
        self.timm.step_update(1)  # the lr of the first update

    def step(self) -> None:
        self.updates += 1
        self.timm.step_update(self.updates + 1)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, int]:
        return {"updates": self.updates, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.updates = int(state["updates"])
        self.timm.step_update(self.updates + 1)
