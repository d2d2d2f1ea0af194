"""Choosing the block to tune from neural collapse on the downstream training data (DESIGN §2).

Rules are registered with :func:`register_rule` and selected by ``TrainConfig.layer_rule``. Every rule
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

``auto`` is :data:`DEFAULT_RULE` = ``profile`` with pick ``repeated_min`` (no training), chosen on the selection
benchmark by a decision rule fixed before its held-out cells ran; each rule's regret there is in
benchmarks/results/selection/ (``summary.json``, README). ``fixed:first_repeated`` scores better on those
EfficientNets but picks the first block of a network whose blocks all have one size (ViT), and ``one_se`` has a
higher maximum regret, so neither is the default.
Options come from ``cfg.extra["selection"]`` (see :data:`DEFAULT_OPTIONS`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from . import nc
from .backbones import Backbone
from .data import DatasetSplits, LabelSubset, TransformedDataset, build_transforms, targets_of
from .data.subsets import few_shot_indices, stratified_split_indices

log = logging.getLogger("sclft.selection")
Curve = Sequence[tuple[str, float]]  # (block, NC1) in network order
Errors = Optional[Mapping[str, float]]  # block -> standard error of its NC1 (the probe's jackknife), if known
# rule name -> fn(backbone, splits, cfg, device) -> {"layer": name, "rule": name, ...evidence}
_RULES: dict[str, Callable[..., dict[str, Any]]] = {}
DEFAULT_RULE = "profile"
DEFAULT_MAX_PARAMS = 8.0  # percent of the model's parameters a block strategy may tune (TrainConfig.max_params)
DEFAULT_OPTIONS: dict[str, Any] = {
    "candidates": None,  # list of block names; None = every candidate block but the last (see candidate_blocks)
    "profile_per_class": 100,  # samples per class probed by `profile`
    "profile_pick": None,  # a PROFILE_PICKS name; None = DEFAULT_PROFILE_PICK
    "profile_jackknife": 10,  # groups of the jackknife standard error of each block's NC1 (pick `one_se`)
    "fixed_pick": "middle",  # a FIXED_PICKS name (rule `fixed`)
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


def block_share(backbone: Backbone, block: str, num_classes: int) -> float:
    """Percent of the model's parameters that Layer-FT / SCL-FT (``fuse=add``) train at ``block``: the
    block plus a linear head on the penultimate feature (works on meta-device backbones)."""
    head = backbone.num_features * num_classes + num_classes
    total = sum(p.numel() for p in backbone.parameters()) + head
    return 100.0 * (sum(p.numel() for p in backbone.block_parameters(block)) + head) / total


def candidate_blocks(backbone: Backbone, options: dict[str, Any], max_params: float | None = None,
                     num_classes: int = 10) -> list[str]:
    """The given candidates, else every block but the last (its pooled output *is* the penultimate
    feature, so SCL-FT's skip would only double it); then only those whose :func:`block_share` is at
    most ``max_params`` percent (``None``: no budget); when none is, the smallest ones (with a warning)."""
    names = options.get("candidates")
    blocks = list(backbone.blocks)[:-1] if not names else [backbone.check_block(n) for n in names]
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


def _candidates(backbone: Backbone, opts: dict[str, Any], cfg, num_classes: int) -> list[str]:
    return candidate_blocks(backbone, opts, getattr(cfg, "max_params", DEFAULT_MAX_PARAMS), num_classes)


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
    rule = DEFAULT_RULE if cfg.layer_rule == "auto" else cfg.layer_rule
    if rule not in _RULES:
        raise ValueError(f"unknown layer rule {rule!r}; valid rules: auto, {', '.join(list_rules())}")
    tic = time.time()
    result = _RULES[rule](backbone, splits, cfg, device)
    result["seconds"] = time.time() - tic
    result.setdefault("max_params", getattr(cfg, "max_params", DEFAULT_MAX_PARAMS))
    return result


def _balanced(splits: DatasetSplits, per_class: int, seed: int) -> LabelSubset:
    """Up to ``per_class`` training samples of each class (all of them when the split is smaller)."""
    targets = targets_of(splits.train)
    smallest = min(targets.count(c) for c in set(targets))
    return LabelSubset(splits.train, few_shot_indices(targets, min(per_class, smallest), seed))


# ------------------------------------------------------------------------------------------ fixed
def _fixed_index(fraction: float) -> Callable[[Sequence[str], dict[str, float]], str]:
    return lambda names, shares: names[int(round(fraction * (len(names) - 1)))]


def _equal_size_runs(names: Sequence[str], shares: dict[str, float]) -> list[list[str]]:
    """The candidates cut into runs of consecutive blocks with the same trainable share."""
    runs: list[list[str]] = []
    for n in names:
        if runs and math.isclose(shares[runs[-1][-1]], shares[n]):
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def repeated_blocks(names: Sequence[str], shares: dict[str, float]) -> list[str]:
    """The candidates with an equal-size neighbour (runs of two or more), in network order."""
    return [n for run in _equal_size_runs(names, shares) if len(run) > 1 for n in run]


def _first_repeated(names: Sequence[str], shares: dict[str, float]) -> str:
    """First block of the deepest run of two or more equal-size candidates (a CNN stage's first
    identity-shortcut block after its opener); no such run: the last candidate. Sizes only, no data: on a
    network whose blocks all have one size (ViT) this is the first block."""
    repeated = [r for r in _equal_size_runs(names, shares) if len(r) > 1]
    return repeated[-1][0] if repeated else names[-1]


# pick name -> fn(candidate blocks in network order, {block: % params}) -> block; no data, no training
FIXED_PICKS: dict[str, Callable[[Sequence[str], dict[str, float]], str]] = {
    "middle": lambda names, shares: names[(len(names) - 1) // 2], "two_thirds": _fixed_index(2 / 3),
    "last": _fixed_index(1.0), "first_repeated": _first_repeated}


@register_rule("fixed")
def fixed_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """A data-free baseline over the candidates (``fixed_pick``: one of :data:`FIXED_PICKS`)."""
    opts = selection_options(cfg)
    if opts["fixed_pick"] not in FIXED_PICKS:
        raise ValueError(f"unknown fixed_pick {opts['fixed_pick']!r}; valid: {', '.join(FIXED_PICKS)}")
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    shares = _shares(backbone, blocks, splits.num_classes)
    picks = {name: fn(blocks, shares) for name, fn in FIXED_PICKS.items()}
    layer = picks[opts["fixed_pick"]]
    return {"layer": layer, "rule": "fixed", "pick": opts["fixed_pick"], "picks": picks, "params_percent": shares,
            "ranking": _ranking({b: float(b == layer) for b in blocks}, params_percent=shares)}


# ------------------------------------------------------------------------------------------ profile
def _log_drops(curve: Curve) -> dict[str, float]:
    return {name: math.log(prev) - math.log(cur) for (_, prev), (name, cur) in zip(curve, curve[1:])}


def _score_min(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """The most collapsed block: its output is the best-separated downstream representation the
    pretrained network offers (within the candidates); tuning it sharpens that, and SCL's skip hands
    it straight to the head."""
    return {name: -math.log(v) for name, v in curve}


def _score_drop(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """The block that reduces log NC1 the most (does the most separation work on the new data)."""
    return {curve[0][0]: -math.inf, **_log_drops(curve)}


def _score_rise(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """The first block after the NC1 minimum: where the pretrained features start to *un*-collapse."""
    names = [n for n, _ in curve]
    target = min(names.index(min(curve, key=lambda item: item[1])[0]) + 1, len(names) - 1)
    return {n: -abs(i - target) for i, n in enumerate(names)}


def _score_half(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """The first block whose output has covered half of the curve's fall in log NC1 (first candidate →
    minimum): the knee of the collapse, before the flat tail where blocks add parameters but little
    separation."""
    logs = [math.log(v) for _, v in curve]
    half = logs[0] - 0.5 * (logs[0] - min(logs))
    target = next(i for i, v in enumerate(logs) if v <= half)
    return {n: -abs(i - target) for i, (n, _) in enumerate(curve)}


def _score_gain_per_param(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """Fall in log NC1 from the first candidate to the block's output, per percent of parameters tuned."""
    first = math.log(curve[0][1])
    return {n: (first - math.log(v)) / shares[n] for n, v in curve}


def _score_repeated_min(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """The most collapsed block among those that *repeat* inside their stage: a candidate with an equal-size
    neighbour (timm EfficientNet / ResNet stages open with a block that changes width or resolution, then
    repeat an identity-shortcut block; every ViT block repeats). Tuning a repeated block adjusts a residual
    on top of features the frozen suffix already reads. Sizes alone cannot tell the one repeat of a two-block
    stage (Lite0 blocks.1.1, 2.1) from an opener; it is left out too. No repeated candidate: plain ``min``."""
    repeated = set(repeated_blocks([n for n, _ in curve], shares))
    return {n: -math.log(v) if n in repeated or not repeated else -math.inf for n, v in curve}


ONE_SE_K = 1.0  # standard errors of slack in `one_se` (the conventional one-standard-error rule)


def _score_one_se(curve: Curve, shares: dict[str, float], se: Errors = None) -> dict[str, float]:
    """Among the repeated blocks (as ``repeated_min``), the earliest whose NC1 is at most the lowest NC1 plus
    :data:`ONE_SE_K` standard errors of NC1 at that lowest block: the one-standard-error rule of model selection,
    the earliest block not measurably less collapsed than the most collapsed one. ``se``: the probe's jackknife
    SE per block (an unknown SE, None or NaN, counts as 0, giving ``repeated_min``'s pick); without ``se``, no pick
    (``{}``)."""
    if se is None:
        return {}
    names, nc1 = [n for n, _ in curve], dict(curve)
    repeated = set(repeated_blocks(names, shares)) or set(names)
    low = min((n for n in names if n in repeated), key=nc1.get)
    slack = se.get(low)
    limit = nc1[low] + ONE_SE_K * (slack if slack is not None and math.isfinite(slack) else 0.0)
    return {n: (-i if nc1[n] <= limit else -len(names) - i) if n in repeated else -math.inf
            for i, n in enumerate(names)}


# pick name -> fn(NC1 curve over the candidates, {block: % params}, {block: SE of NC1} or None) -> {block: score};
# highest score wins; {} = the pick needs evidence it was not given
PROFILE_PICKS: dict[str, Callable[[Curve, dict[str, float], Errors], dict[str, float]]] = {
    "min": _score_min, "drop": _score_drop, "rise": _score_rise, "half": _score_half,
    "gain_per_param": _score_gain_per_param, "repeated_min": _score_repeated_min, "one_se": _score_one_se}
DEFAULT_PROFILE_PICK = "repeated_min"


def profile_pick(pick: str, curve: Curve, shares: dict[str, float] | None = None, se: Errors = None) -> str | None:
    """The block :data:`PROFILE_PICKS` ``pick`` chooses on ``curve`` (ties: the earlier block); None when the pick
    needs the standard errors ``se`` (``one_se``) and they are not given (evidence from before they existed)."""
    scores = PROFILE_PICKS[pick](curve, shares or {n: 1.0 for n, _ in curve}, se)
    return max((n for n, _ in curve), key=lambda n: scores[n]) if scores else None


@register_rule("profile")
def profile_rule(backbone: Backbone, splits: DatasetSplits, cfg, device="cpu") -> dict[str, Any]:
    """No training: one probe pass of the pretrained backbone; pick from the NC1 curve (see module doc)."""
    from .probe import probe

    opts = selection_options(cfg)
    pick = opts["profile_pick"] or DEFAULT_PROFILE_PICK
    if pick not in PROFILE_PICKS:
        raise ValueError(f"unknown profile_pick {pick!r}; valid: {', '.join(PROFILE_PICKS)}")
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    _, eval_tf = build_transforms(backbone.data_config, cfg.image_size, augment=False)
    data = TransformedDataset(_balanced(splits, opts["profile_per_class"], cfg.seed), eval_tf)
    res = probe(backbone, data, blocks, batch_size=max(cfg.batch_size, 64), device=str(device),
                progress=cfg.progress, num_classes=splits.num_classes, jackknife=opts["profile_jackknife"])
    curve = [(name, res[name]["nc1"]) for name in blocks]
    se = {name: res[name]["nc1_se"] if math.isfinite(res[name]["nc1_se"]) else None for name in blocks}  # JSON-safe
    shares = _shares(backbone, blocks, splits.num_classes)
    picks = {name: profile_pick(name, curve, shares, se) for name in PROFILE_PICKS}
    return {"layer": picks[pick], "rule": "profile", "pick": pick, "picks": picks, "nc1": dict(curve), "nc1_se": se,
            "params_percent": shares, "penultimate_nc1": res["penultimate"]["nc1"], "samples": res.num_samples,
            "ranking": _ranking(PROFILE_PICKS[pick](curve, shares, se), nc1=dict(curve), nc1_se=se,
                                params_percent=shares)}


# ------------------------------------------------------------------------------------------ trial
def _fit_tail(model, data, cfg, epochs: int, device) -> None:
    """A few epochs of the strategy's tail on cached frozen activations (AdamW, warm-up + cosine)."""
    from .optim import WarmupCosine, build_optimizer

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
    blocks = _candidates(backbone, opts, cfg, splits.num_classes)
    for block in blocks:
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
    nc1, acc = {b: s["nc1"] for b, s in scores.items()}, {b: s["accuracy"] for b, s in scores.items()}
    shares = _shares(backbone, blocks, splits.num_classes)
    return {"layer": layer, "rule": "trial", "strategy": config.name, "nc1": nc1, "heldout_accuracy": acc,
            "params_percent": shares,
            "ranking": _ranking({b: -math.log(v) for b, v in nc1.items()}, nc1=nc1, heldout_accuracy=acc,
                                params_percent=shares),
            "fit_samples": len(parts["fit"]), "heldout_samples": len(parts["held"]), "epochs": opts["trial_epochs"]}
