"""Choosing the block to tune from neural collapse on the downstream training data (DESIGN §2).

Rules are registered with :func:`sclft.picks.register_rule` and selected by ``TrainConfig.layer_rule``. Every rule
chooses among the *candidate* blocks: the given ones, else every block but the last, minus those whose
trainable share (block + linear head, :func:`block_share`) exceeds ``TrainConfig.max_params`` percent.
Each returns its ``ranking`` (candidates best first, with their evidence; ``sclft probe --rank``).

* ``profile`` — no training. Probe the *pretrained* backbone once on (a class-balanced subset of) the
  downstream training split and read the layer-wise NC1 curve, with each block's jackknife standard error
  (``profile_jackknife`` groups, :class:`sclft.nc.NCAccumulator`). The pick is made by one of the
  :data:`PROFILE_PICKS` functions of that curve (default :data:`DEFAULT_PROFILE_PICK`); the evidence
  holds every pick function's choice so a benchmark can score them all from one probe.
* ``fixed`` — no data: the middle candidate, the one at 2/3 depth, the last, or the first block of the
  deepest run of equal-size candidates (:data:`FIXED_PICKS`); the baselines a data-driven rule has to beat.
* ``trial`` — a short fine-tune of each candidate block (the run's block strategy, on cached
  frozen-prefix activations of a training subset), then the block whose penultimate (head-input)
  NC1 on *held-out* training samples is lowest.
* ``tuned`` — collapse after tuning: the same short fits, then the block whose head input is most collapsed on the
  samples it was fitted on (``nc1_fit``, kept in ``trial``'s evidence too).

The profile picks ``logme`` and ``ncti`` read LogME / NCTI of each candidate's pretrained output
(:mod:`sclft.transfer_scores`), computed by the same probe pass only when one of them is the pick.

``auto`` is :data:`DEFAULT_RULE` = ``profile`` with pick ``repeated_min`` (no training), chosen on the selection
benchmark by a decision rule fixed before its held-out cells ran; each rule's regret there is in
benchmarks/results/selection/ (``summary.json``, README). ``fixed:first_repeated`` scores better on those
EfficientNets but picks the first block of a network whose blocks all have one size (ViT), and ``one_se`` has a
higher maximum regret, so neither is the default.
Options: ``cfg.selection`` (:class:`sclft.config.SelectionConfig`; ``extra: {selection: {...}}`` in YAML). The pick
functions and the rule registry are torch-free, in :mod:`sclft.picks` (re-exported here).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import nc
from .backbones import Backbone
from .cache import build_cache
from .config import SelectionConfig
from .data import DatasetSplits, LabelSubset, TransformedDataset, build_transforms, targets_of
from .data.subsets import few_shot_indices, stratified_split_indices
from .errors import UsageError
from .model import TransferModel
from .optim import WarmupCosine, build_optimizer
from .picks import (  # noqa: F401  (the pure picks and the rule registry, re-exported)
    _RULES,
    DEFAULT_PROFILE_PICK,
    DEFAULT_RULE,
    FIXED_PICKS,
    ONE_SE_K,
    PROFILE_PICKS,
    SCORE_PICKS,
    Curve,
    Errors,
    get_rule,
    list_rules,
    profile_pick,
    register_rule,
    repeated_blocks,
)
from .probing import probe
from .strategies import default_block_strategy, strategy_config
from .transfer_scores import LAYER_SCORES

log = logging.getLogger("sclft.selection")


def block_share(backbone: Backbone, block: str, num_classes: int) -> float:
    """Percent of the model's parameters that Layer-FT / SCL-FT (``fuse=add``) train at ``block``: the
    block plus a linear head on the penultimate feature (works on meta-device backbones)."""
    head = backbone.num_features * num_classes + num_classes
    total = sum(p.numel() for p in backbone.parameters()) + head
    return 100.0 * (sum(p.numel() for p in backbone.block_parameters(block)) + head) / total


def candidate_blocks(backbone: Backbone, candidates: Sequence[str] | None = None, max_params: float | None = None,
                     num_classes: int = 10) -> list[str]:
    """The given candidates, else every block but the last (its pooled output *is* the penultimate
    feature, so SCL-FT's skip would only double it); then only those whose :func:`block_share` is at
    most ``max_params`` percent (``None``: no budget); when none is, the smallest ones (with a warning)."""
    blocks = list(backbone.blocks)[:-1] if candidates is None else [backbone.check_block(n) for n in candidates]
    if max_params is None:
        return blocks
    shares = {b: block_share(backbone, b, num_classes) for b in blocks}
    kept = [b for b in blocks if shares[b] <= max_params]
    if not kept:  # e.g. a ViT-B block is 8.1 %: the smallest blocks, rather than no choice at all
        kept = [b for b in blocks if shares[b] == min(shares.values())]
        log.warning("no candidate block trains at most max_params=%s%% of the parameters; choosing among the "
                    "smallest (%s: %.2f%%); raise --max-params to widen the choice", max_params, kept[0],
                    shares[kept[0]])
    return kept


def _candidates(backbone: Backbone, opts: SelectionConfig, cfg, num_classes: int) -> list[str]:
    return candidate_blocks(backbone, opts.candidates, cfg.max_params, num_classes)


def _shares(backbone: Backbone, blocks: Sequence[str], num_classes: int) -> dict[str, float]:
    return {b: block_share(backbone, b, num_classes) for b in blocks}


def _ranking(scores: dict[str, float], **evidence: dict[str, Any]) -> list[dict[str, Any]]:
    """Candidates by decreasing score, each with its evidence (``evidence[name][block]``); a block the pick
    excludes (score -inf) ranks last with ``score`` None, so the ranking stays valid JSON."""
    order = sorted(scores, key=lambda b: -scores[b])
    return [{"block": b, "score": scores[b] if math.isfinite(scores[b]) else None,
             **{k: v.get(b) for k, v in evidence.items()}} for b in order]


def select_layer(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """Apply ``cfg.layer_rule`` ("auto" → :data:`DEFAULT_RULE`); returns the chosen layer and its evidence."""
    rule = get_rule(cfg.layer_rule)
    tic = time.time()
    result = rule(backbone, splits, cfg, device)
    result["seconds"] = time.time() - tic
    result.setdefault("max_params", cfg.max_params)
    return result


def _balanced(splits: DatasetSplits, per_class: int, seed: int) -> LabelSubset:
    """Up to ``per_class`` training samples of each class (all of them when the split is smaller)."""
    targets = targets_of(splits.train)
    smallest = min(targets.count(c) for c in set(targets))
    return LabelSubset(splits.train, few_shot_indices(targets, min(per_class, smallest), seed))


# ------------------------------------------------------------------------------------------ fixed
def fixed_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """A data-free baseline over the candidates (``fixed_pick``: one of :data:`FIXED_PICKS`)."""
    opts = cfg.selection
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    shares = _shares(backbone, blocks, splits.num_classes)
    picks = {name: fn(blocks, shares) for name, fn in FIXED_PICKS.items()}
    layer = picks[opts.fixed_pick]
    return {"layer": layer, "rule": "fixed", "pick": opts.fixed_pick, "picks": picks, "params_percent": shares,
            "ranking": _ranking({b: float(b == layer) for b in blocks}, params_percent=shares)}


# ------------------------------------------------------------------------------------------ profile
def profile_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """No training: one probe pass of the pretrained backbone; pick from the NC1 curve (see module doc)."""
    opts = cfg.selection
    pick = opts.profile_pick or DEFAULT_PROFILE_PICK
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    subset = _balanced(splits, opts.profile_per_class, cfg.seed)
    per_class = min(Counter(subset.targets).values())
    if per_class < 2:  # NC1 reads the spread within each class: with one image per class it is 0 at every block
        raise UsageError(f"the profile rule needs at least 2 training images of every class; the smallest class "
                         f"of {splits.name} has {per_class}: train on more images per class (--train-per-class), "
                         f"or name the block (--layer NAME) or a data-free rule (--layer-rule fixed)")
    if opts.profile_jackknife > per_class:  # said aloud when the groups were asked for (not the default)
        given = "profile_jackknife" in (cfg.extra or {}).get("selection", {})
        (log.warning if given else log.info)("profile_jackknife=%d groups, but the probe has %d samples per class: "
                                             "the standard errors use %d groups", opts.profile_jackknife, per_class,
                                             per_class)
    data = TransformedDataset(subset, eval_tf)
    with_scores = pick in SCORE_PICKS  # LogME / NCTI per block: only when the pick reads them (a few s on a ViT)
    res = probe(backbone, data, blocks, batch_size=max(cfg.batch_size, 64), device=str(device),
                progress=cfg.progress, num_classes=splits.num_classes, jackknife=opts.profile_jackknife,
                scores=with_scores)
    curve = [(name, res[name]["nc1"]) for name in blocks]
    se = {name: res[name]["nc1_se"] if math.isfinite(res[name]["nc1_se"]) else None for name in blocks}  # JSON-safe
    scores = {name: {k: res[name][k] if math.isfinite(res[name][k]) else None for k in LAYER_SCORES}
              for name in blocks} if with_scores else None
    shares = _shares(backbone, blocks, splits.num_classes)
    picks = {name: profile_pick(name, curve, shares, se, scores) for name in PROFILE_PICKS}
    picks = {name: block for name, block in picks.items() if block is not None}  # logme / ncti: only with scores
    return {"layer": picks[pick], "rule": "profile", "pick": pick, "picks": picks, "nc1": dict(curve), "nc1_se": se,
            **({"scores": scores} if scores else {}),
            "params_percent": shares, "penultimate_nc1": res["penultimate"]["nc1"], "samples": res.num_samples,
            "ranking": _ranking(PROFILE_PICKS[pick](curve, shares, se, scores), nc1=dict(curve), nc1_se=se,
                                params_percent=shares)}


# ------------------------------------------------------------------------------------------ trial
def _fit_tail(model, data, cfg, epochs: int, device) -> None:
    """A few epochs of the strategy's tail on cached frozen activations (AdamW, warm-up + cosine)."""
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = build_optimizer(model, cfg)
    total = epochs * len(loader)
    scheduler = WarmupCosine(optimizer, total, max(1, total // 10))
    model.train()
    for _ in range(epochs):
        for z, y in loader:
            loss = F.cross_entropy(model(z.to(device), from_frozen=True), y.to(device),
                                   label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()


@contextlib.contextmanager
def _restored(backbone: Backbone, block: str | None = None):
    """Restore, however the body ends: the weights of ``block`` (its modules' state dicts), or without a block
    the ``requires_grad`` flags and train/eval mode of the whole backbone."""
    if block is not None:
        modules = backbone.block_modules(block)
        saved = [copy.deepcopy(m.state_dict()) for m in modules]
        try:
            yield
        finally:
            for module, state in zip(modules, saved):
                module.load_state_dict(state)
        return
    flags, was_training = [p.requires_grad for p in backbone.parameters()], backbone.training
    try:
        yield
    finally:
        for p, flag in zip(backbone.parameters(), flags):
            p.requires_grad_(flag)
        backbone.train(was_training)


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


def trial_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu", signal: str = "nc1") -> dict[str, Any]:
    """Short fine-tune of each candidate block; the lowest held-out penultimate NC1 wins.

    Uses the run's strategy and options when it tunes a block (the default block strategy with its default
    options otherwise, see :func:`sclft.strategies.default_block_strategy`).
    The backbone's weights, modes and ``requires_grad`` flags are restored afterwards. The evidence also holds each
    block's NC1 on the *fit* samples after its fit (``nc1_fit``, one more pass over the cached activations), the
    signal of :func:`tuned_rule`; ``signal`` names the evidence the pick minimises.
    """
    opts = cfg.selection
    config = strategy_config(cfg.strategy, **cfg.strategy_options)
    if not config.uses_layer:
        config = default_block_strategy()()
    subset = _balanced(splits, opts.trial_per_class, cfg.seed)
    fit_idx, held_idx = stratified_split_indices(subset.targets, opts.trial_holdout, cfg.seed)
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    parts = {"fit": TransformedDataset(LabelSubset(subset, fit_idx), eval_tf),
             "held": TransformedDataset(LabelSubset(subset, held_idx), eval_tf)}
    scores: dict[str, dict[str, float]] = {}
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    with _restored(backbone):
        for block in blocks:
            with _restored(backbone, block):
                torch.manual_seed(cfg.seed)
                model = TransferModel(backbone, config, splits.num_classes, block).to(device)
                cached = {k: build_cache(model, v, f"trial:{block}:{k}", device=device,
                                         batch_size=max(cfg.batch_size, 64), storage="memory", progress=False)
                          for k, v in parts.items()}
                _fit_tail(model, cached["fit"], cfg, opts.trial_epochs, device)
                scores[block] = _heldout_metrics(model, cached["held"], splits.num_classes, device)
                scores[block]["nc1_fit"] = _heldout_metrics(model, cached["fit"], splits.num_classes, device)["nc1"]
    evidence = {key: {b: s[key] for b, s in scores.items()} for key in ("nc1", "accuracy", "nc1_fit")}
    layer = min(scores, key=lambda b: scores[b][signal])
    nc1, acc, fit = evidence["nc1"], evidence["accuracy"], evidence["nc1_fit"]
    shares = _shares(backbone, blocks, splits.num_classes)
    return {"layer": layer, "rule": "trial", "strategy": config.name, "nc1": nc1, "heldout_accuracy": acc,
            "nc1_fit": fit, "params_percent": shares,
            "ranking": _ranking({b: -math.log(v) for b, v in evidence[signal].items()}, nc1=nc1, nc1_fit=fit,
                                heldout_accuracy=acc, params_percent=shares),
            "fit_samples": len(parts["fit"]), "heldout_samples": len(parts["held"]), "epochs": opts.trial_epochs}


def tuned_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """Collapse after tuning: the ``trial`` rule's short fits, read on the tuned blocks' *training* features — the
    block whose head input is most collapsed (lowest NC1) on the samples it was just fitted on."""
    return {**trial_rule(backbone, splits, cfg, device, signal="nc1_fit"), "rule": "tuned"}
