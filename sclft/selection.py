"""Choosing the block to tune from neural collapse on the downstream training data (DESIGN §2)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .backbones import Backbone
from .data import DatasetSplits, LabelSubset, TransformedDataset, build_transforms, targets_of
from .data.subsets import few_shot_indices

# rule name -> fn(backbone, splits, cfg, device) -> {"layer": name, "rule": name, ...evidence}
_RULES: dict[str, Callable[..., dict[str, Any]]] = {}
DEFAULT_RULE = "profile"
PROFILE_SAMPLES_PER_CLASS = 100


def register_rule(name: str):
    def deco(fn):
        _RULES[name] = fn
        return fn

    return deco


def list_rules() -> list[str]:
    return sorted(_RULES)


def select_layer(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """Apply ``cfg.layer_rule`` ("auto" → the default rule); returns the chosen layer and its evidence."""
    rule = DEFAULT_RULE if cfg.layer_rule == "auto" else cfg.layer_rule
    if rule not in _RULES:
        raise ValueError(f"unknown layer rule {rule!r}; valid rules: {', '.join(list_rules())}")
    return _RULES[rule](backbone, splits, cfg, device)


def _probe_subset(backbone: Backbone, splits: DatasetSplits, cfg, per_class: int):
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    targets = targets_of(splits.train)
    if len(targets) <= per_class * splits.num_classes:
        return TransformedDataset(splits.train, eval_tf)
    return TransformedDataset(LabelSubset(splits.train, few_shot_indices(targets, per_class, cfg.seed)), eval_tf)


@register_rule("profile")
def profile_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """No training: the block whose output most reduces downstream NC1 (largest drop in log NC1)."""
    from .probe import probe

    data = _probe_subset(backbone, splits, cfg, PROFILE_SAMPLES_PER_CLASS)
    res = probe(backbone, data, batch_size=max(cfg.batch_size, 64), device=str(device), progress=cfg.progress,
                num_classes=splits.num_classes)
    curve = [(r["layer"], r["nc1"]) for r in res.rows if r["layer"] != "penultimate"]
    drops = {name: math.log(prev) - math.log(cur) for (_, prev), (name, cur) in zip(curve, curve[1:])}
    layer = max(drops, key=drops.get)
    return {"layer": layer, "rule": "profile", "nc1": dict(curve), "score": drops}
