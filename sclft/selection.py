"""Choosing the block to tune from neural collapse on the downstream training data (DESIGN §2).

Two rules, both registered with :func:`register_rule` and selected by ``TrainConfig.layer_rule``:

* ``profile`` — no training. Probe the *pretrained* backbone once on (a class-balanced subset of) the
  downstream training split and read the layer-wise NC1 curve. The pick is made by one of the
  :data:`PROFILE_PICKS` functions of that curve (default :data:`DEFAULT_PROFILE_PICK`); the evidence
  holds every pick function's choice so a benchmark can score them all from one probe.
* ``trial`` — a short fine-tune of each candidate block (the run's block strategy, on cached
  frozen-prefix activations of a training subset), then the block whose penultimate (head-input)
  NC1 on *held-out* training samples is lowest.

``auto`` is :data:`DEFAULT_RULE` = ``profile``: on the offline suite (docs/bench.md) ``profile`` and
``trial`` had the same mean selection regret (3.8 points) and ``profile`` costs no training.
Options come from ``cfg.extra["selection"]`` (see :data:`DEFAULT_OPTIONS`).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import nc
from .backbones import Backbone
from .data import DatasetSplits, LabelSubset, TransformedDataset, build_transforms, targets_of
from .data.subsets import few_shot_indices, stratified_split_indices

Curve = Sequence[tuple[str, float]]  # (block, NC1) in network order
# rule name -> fn(backbone, splits, cfg, device) -> {"layer": name, "rule": name, ...evidence}
_RULES: dict[str, Callable[..., dict[str, Any]]] = {}
DEFAULT_RULE = "profile"
DEFAULT_OPTIONS: dict[str, Any] = {
    "candidates": None,  # list of block names; None = every candidate block but the last (see candidate_blocks)
    "profile_per_class": 100,  # samples per class probed by `profile`
    "profile_pick": None,  # a PROFILE_PICKS name; None = DEFAULT_PROFILE_PICK
    "trial_per_class": 50,  # training samples per class used by `trial` (fit + held-out)
    "trial_holdout": 0.3,  # fraction of them held out for the NC1 read-out
    "trial_epochs": 3,
}


def register_rule(name: str):
    def deco(fn):
        _RULES[name] = fn
        return fn

    return deco


def list_rules() -> list[str]:
    return sorted(_RULES)


def selection_options(cfg) -> dict[str, Any]:
    """:data:`DEFAULT_OPTIONS` updated with ``cfg.extra["selection"]`` (unknown keys are an error)."""
    given = dict((getattr(cfg, "extra", None) or {}).get("selection", {}))
    unknown = sorted(set(given) - set(DEFAULT_OPTIONS))
    if unknown:
        raise ValueError(f"unknown selection options {unknown}; valid: {', '.join(DEFAULT_OPTIONS)}")
    return {**DEFAULT_OPTIONS, **given}


def candidate_blocks(backbone: Backbone, options: dict[str, Any]) -> list[str]:
    """The given candidates, else every block but the last: the last block's pooled output *is* the
    penultimate feature, so SCL-FT's skip would only double it (and it is often the most collapsed
    block on the pretrained curve, which made ``profile:min`` pick it)."""
    names = options.get("candidates")
    return list(backbone.blocks)[:-1] if not names else [backbone.check_block(n) for n in names]


def select_layer(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """Apply ``cfg.layer_rule`` ("auto" → :data:`DEFAULT_RULE`); returns the chosen layer and its evidence."""
    rule = DEFAULT_RULE if cfg.layer_rule == "auto" else cfg.layer_rule
    if rule not in _RULES:
        raise ValueError(f"unknown layer rule {rule!r}; valid rules: auto, {', '.join(list_rules())}")
    tic = time.time()
    result = _RULES[rule](backbone, splits, cfg, device)
    result["seconds"] = time.time() - tic
    return result


def _balanced(splits: DatasetSplits, per_class: int, seed: int) -> LabelSubset:
    """Up to ``per_class`` training samples of each class (all of them when the split is smaller)."""
    targets = targets_of(splits.train)
    smallest = min(targets.count(c) for c in set(targets))
    return LabelSubset(splits.train, few_shot_indices(targets, min(per_class, smallest), seed))


# ------------------------------------------------------------------------------------------ profile
def _log_drops(curve: Curve) -> dict[str, float]:
    return {name: math.log(prev) - math.log(cur) for (_, prev), (name, cur) in zip(curve, curve[1:])}


def _pick_min(curve: Curve) -> str:
    """The most collapsed block: its output is the best-separated downstream representation the
    pretrained network offers; tuning it sharpens that, and SCL's skip hands it straight to the head,
    past the later blocks whose (pretraining-specific) features separate the new classes worse."""
    return min(curve, key=lambda item: item[1])[0]


def _pick_drop(curve: Curve) -> str:
    """The block that reduces log NC1 the most (does the most separation work on the new data)."""
    drops = _log_drops(curve)
    return max(drops, key=drops.get)


def _pick_rise(curve: Curve) -> str:
    """The first block after the NC1 minimum: where the pretrained features start to *un*-collapse."""
    names = [n for n, _ in curve]
    return names[min(names.index(_pick_min(curve)) + 1, len(names) - 1)]


# pick name -> fn(curve over candidate blocks) -> block
PROFILE_PICKS: dict[str, Callable[[Curve], str]] = {"min": _pick_min, "drop": _pick_drop, "rise": _pick_rise}
DEFAULT_PROFILE_PICK = "min"


@register_rule("profile")
def profile_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """No training: one probe pass of the pretrained backbone; pick from the NC1 curve (see module doc)."""
    from .probe import probe

    opts = selection_options(cfg)
    pick = opts["profile_pick"] or DEFAULT_PROFILE_PICK
    if pick not in PROFILE_PICKS:
        raise ValueError(f"unknown profile_pick {pick!r}; valid: {', '.join(PROFILE_PICKS)}")
    blocks = candidate_blocks(backbone, opts)
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    data = TransformedDataset(_balanced(splits, opts["profile_per_class"], cfg.seed), eval_tf)
    res = probe(backbone, data, blocks, batch_size=max(cfg.batch_size, 64), device=str(device),
                progress=cfg.progress, num_classes=splits.num_classes)
    curve = [(name, res[name]["nc1"]) for name in blocks]
    picks = {name: fn(curve) for name, fn in PROFILE_PICKS.items()}
    return {"layer": picks[pick], "rule": "profile", "pick": pick, "picks": picks, "nc1": dict(curve),
            "penultimate_nc1": res["penultimate"]["nc1"], "samples": res.num_samples}


# ------------------------------------------------------------------------------------------ trial
def _fit_tail(model, data, cfg, epochs: int, device) -> None:
    """A few epochs of the strategy's tail on cached frozen activations (AdamW, warm-up + cosine)."""
    from .train import build_optimizer, warmup_cosine

    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = build_optimizer(model, cfg)
    total = epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, max(1, total // 10)))
    model.train()
    for _ in range(epochs):
        for z, y in loader:
            loss = F.cross_entropy(model(z.to(device), from_frozen=True), y.to(device),
                                   label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()


@torch.no_grad()
def _heldout_metrics(model, data, num_classes: int, device) -> dict[str, float]:
    model.eval()
    feats, labels = [], []
    for z, y in DataLoader(data, batch_size=256):
        feats.append(model.features_from_frozen(z.to(device)).float().cpu())
        labels.append(y)
    h, y = torch.cat(feats), torch.cat(labels)
    accuracy = (model.head(h.to(device)).argmax(1).cpu() == y).float().mean().item()
    return {"nc1": nc.nc1(h, y, num_classes), "accuracy": accuracy}


@register_rule("trial")
def trial_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """Short fine-tune of each candidate block; the lowest held-out penultimate NC1 wins.

    Uses the run's strategy and options when it tunes a block (the default block strategy with its default
    options otherwise, see :func:`sclft.strategies.default_block_strategy`).
    The backbone's weights, modes and ``requires_grad`` flags are restored afterwards.
    """
    from .cache import build_cache
    from .model import TransferModel
    from .strategies import default_block_strategy, strategy_config

    opts = selection_options(cfg)
    config = strategy_config(cfg.strategy, **cfg.strategy_options)
    if not config.uses_layer:
        config = default_block_strategy()()
    subset = _balanced(splits, opts["trial_per_class"], cfg.seed)
    fit_idx, held_idx = stratified_split_indices(subset.targets, opts["trial_holdout"], cfg.seed)
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    parts = {"fit": TransformedDataset(LabelSubset(subset, fit_idx), eval_tf),
             "held": TransformedDataset(LabelSubset(subset, held_idx), eval_tf)}
    flags = [p.requires_grad for p in backbone.parameters()]
    was_training = backbone.training
    scores: dict[str, dict[str, float]] = {}
    for block in candidate_blocks(backbone, opts):
        saved = [copy.deepcopy(m.state_dict()) for m in backbone.block_modules(block)]
        torch.manual_seed(cfg.seed)
        model = TransferModel(backbone, config, splits.num_classes, block).to(device)
        cached = {k: build_cache(model, v, f"trial:{block}:{k}", device=device, batch_size=max(cfg.batch_size, 64),
                                 storage="memory", progress=False) for k, v in parts.items()}
        _fit_tail(model, cached["fit"], cfg, opts["trial_epochs"], device)
        scores[block] = _heldout_metrics(model, cached["held"], splits.num_classes, device)
        for module, state in zip(backbone.block_modules(block), saved):
            module.load_state_dict(state)
    for p, flag in zip(backbone.parameters(), flags):
        p.requires_grad_(flag)
    backbone.train(was_training)
    layer = min(scores, key=lambda b: scores[b]["nc1"])
    return {"layer": layer, "rule": "trial", "strategy": config.name, "nc1": {b: s["nc1"] for b, s in scores.items()},
            "heldout_accuracy": {b: s["accuracy"] for b, s in scores.items()},
            "fit_samples": len(parts["fit"]), "heldout_samples": len(parts["held"]), "epochs": opts["trial_epochs"]}
