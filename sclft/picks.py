"""Layer-selection picks and rule names: pure functions of the candidates' sizes and NC1 curve (no torch, no data).

:mod:`sclft.selection` runs the rules (it probes or fine-tunes the backbone, then applies a pick); what is here
is what :class:`sclft.config.SelectionConfig` validates against, and what a benchmark rescoring stored evidence
calls. Three registries, each raising on a duplicate name:

* :data:`FIXED_PICKS` — ``fn(candidate blocks in network order, {block: % params}) -> block``
  (:func:`register_fixed_pick`); the ``fixed`` rule's ``fixed_pick``.
* :data:`PROFILE_PICKS` — ``fn(NC1 curve, {block: % params}, {block: SE of NC1} or None, {block: LogME / NCTI
  terms} or None) -> {block: score}`` (:func:`register_profile_pick`); the ``profile`` rule's ``profile_pick``.
* rules — ``fn(backbone, splits, cfg, device) -> {"layer": ..., "rule": ..., evidence}``, registered as the
  function or as ``"module:function"`` imported on first use (:func:`register_rule`), so the names are known
  without importing torch; ``TrainConfig.layer_rule`` names one.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .errors import UsageError
from .transfer_scores import ncti_from_rows

Curve = Sequence[tuple[str, float]]  # (block, NC1) in network order
Errors = Mapping[str, float] | None  # block -> standard error of its NC1 (the probe's jackknife), if known
FixedPick = Callable[[Sequence[str], dict[str, float]], str]
# block -> its transferability scores, if known (sclft.transfer_scores.layer_scores: logme, ncti_seli / _ncc / _vc)
Scores = Mapping[str, Mapping[str, float | None]] | None
ProfilePick = Callable[[Curve, dict[str, float], Errors, Scores], dict[str, float]]

DEFAULT_RULE = "profile"  # what layer_rule "auto" runs
DEFAULT_PROFILE_PICK = "repeated_min"  # profile_pick None
DEFAULT_FIXED_PICK = "middle"
# rule name -> fn(backbone, splits, cfg, device), or "module:function" (imported by get_rule)
_RULES: dict[str, Callable[..., dict[str, Any]] | str] = {
    "profile": "sclft.selection:profile_rule", "fixed": "sclft.selection:fixed_rule",
    "trial": "sclft.selection:trial_rule", "tuned": "sclft.selection:tuned_rule"}


def _add(registry: dict, kind: str, name: str, value: Any) -> None:
    if not isinstance(name, str) or not name or name in registry:
        raise UsageError(f"{kind} name {name!r} is empty or already registered")
    registry[name] = value


def register_rule(name: str, target: str | None = None):
    """Register a selection rule: ``register_rule("name", "module:function")``, or as a decorator of the function."""
    if target is not None:
        _add(_RULES, "layer rule", name, target)
        return target

    def deco(fn):
        _add(_RULES, "layer rule", name, fn)
        return fn

    return deco


def list_rules() -> list[str]:
    return sorted(_RULES)


def get_rule(name: str) -> Callable[..., dict[str, Any]]:
    """The function of rule ``name`` ("auto": :data:`DEFAULT_RULE`), importing its module on first use."""
    name = DEFAULT_RULE if name == "auto" else name
    if name not in _RULES:
        raise UsageError(f"unknown layer rule {name!r}; valid rules: auto, {', '.join(list_rules())}")
    rule = _RULES[name]
    if isinstance(rule, str):
        module, _, attr = rule.partition(":")
        rule = _RULES[name] = getattr(importlib.import_module(module), attr)
    return rule


def register_fixed_pick(name: str):
    """Decorator: a :data:`FIXED_PICKS` function under ``name``."""

    def deco(fn: FixedPick) -> FixedPick:
        _add(FIXED_PICKS, "fixed pick", name, fn)
        return fn

    return deco


def register_profile_pick(name: str):
    """Decorator: a :data:`PROFILE_PICKS` function under ``name``."""

    def deco(fn: ProfilePick) -> ProfilePick:
        _add(PROFILE_PICKS, "profile pick", name, fn)
        return fn

    return deco


# ------------------------------------------------------------------------------------------ fixed
def _fixed_index(fraction: float) -> FixedPick:
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


def _middle(names: Sequence[str], shares: dict[str, float]) -> str:
    return names[(len(names) - 1) // 2]


# pick name -> fn(candidate blocks in network order, {block: % params}) -> block; no data, no training
FIXED_PICKS: dict[str, FixedPick] = {
    "middle": _middle, "two_thirds": _fixed_index(2 / 3), "last": _fixed_index(1.0), "first_repeated": _first_repeated}


# ------------------------------------------------------------------------------------------ profile
def _log_drops(curve: Curve) -> dict[str, float]:
    return {name: math.log(prev) - math.log(cur) for (_, prev), (name, cur) in zip(curve, curve[1:])}


def _score_min(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The most collapsed block: its output is the best-separated downstream representation the
    pretrained network offers (within the candidates); tuning it sharpens that, and SCL's skip hands
    it straight to the head."""
    return {name: -math.log(v) for name, v in curve}


def _score_drop(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The block that reduces log NC1 the most (does the most separation work on the new data)."""
    return {curve[0][0]: -math.inf, **_log_drops(curve)}


def _score_rise(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The first block after the NC1 minimum: where the pretrained features start to *un*-collapse."""
    names = [n for n, _ in curve]
    target = min(names.index(min(curve, key=lambda item: item[1])[0]) + 1, len(names) - 1)
    return {n: -abs(i - target) for i, n in enumerate(names)}


def _score_half(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The first block whose output has covered half of the curve's fall in log NC1 (first candidate →
    minimum): the knee of the collapse, before the flat tail where blocks add parameters but little
    separation."""
    logs = [math.log(v) for _, v in curve]
    half = logs[0] - 0.5 * (logs[0] - min(logs))
    target = next(i for i, v in enumerate(logs) if v <= half)
    return {n: -abs(i - target) for i, (n, _) in enumerate(curve)}


def _score_gain_per_param(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """Fall in log NC1 from the first candidate to the block's output, per percent of parameters tuned."""
    first = math.log(curve[0][1])
    return {n: (first - math.log(v)) / shares[n] for n, v in curve}


def _score_repeated_min(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The most collapsed block among those that *repeat* inside their stage: a candidate with an equal-size
    neighbour (timm EfficientNet / ResNet stages open with a block that changes width or resolution, then
    repeat an identity-shortcut block; every ViT block repeats). Tuning a repeated block adjusts a residual
    on top of features the frozen suffix already reads. Sizes alone cannot tell the one repeat of a two-block
    stage (Lite0 blocks.1.1, 2.1) from an opener; it is left out too. No repeated candidate: plain ``min``."""
    repeated = set(repeated_blocks([n for n, _ in curve], shares))
    return {n: -math.log(v) if n in repeated or not repeated else -math.inf for n, v in curve}


ONE_SE_K = 1.0  # standard errors of slack in `one_se` (the conventional one-standard-error rule)


def _score_one_se(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
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


def _finite(value: float | None) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _score_logme(curve: Curve, shares: dict[str, float], se: Errors = None,
                 scores: Scores = None) -> dict[str, float]:
    """The block whose pretrained output has the highest LogME (You et al., ICML 2021): the evidence of a Bayesian
    linear head on it (:func:`sclft.transfer_scores.logme`). Without ``scores``, no pick (``{}``)."""
    if not scores or not all(n in scores for n, _ in curve):
        return {}
    return {n: scores[n]["logme"] if _finite(scores[n].get("logme")) else -math.inf for n, _ in curve}


def _score_ncti(curve: Curve, shares: dict[str, float], se: Errors = None,
                scores: Scores = None) -> dict[str, float]:
    """The block with the highest NCTI (Wang et al., ICCV 2023) among the candidates: its three collapse terms
    min–max normalised across the candidate blocks (:func:`sclft.transfer_scores.ncti`). Without ``scores``, no
    pick (``{}``)."""
    if not scores or not all(n in scores for n, _ in curve):
        return {}
    combined = ncti_from_rows({n: {k: (v if _finite(v) else math.nan) for k, v in scores[n].items()}
                               for n, _ in curve})
    return {n: v if math.isfinite(v) else -math.inf for n, v in combined.items()}


# pick name -> fn(NC1 curve over the candidates, {block: % params}, {block: SE of NC1} or None,
# {block: transferability scores} or None) -> {block: score}; highest score wins; {} = the pick needs evidence it
# was not given
PROFILE_PICKS: dict[str, ProfilePick] = {
    "min": _score_min, "drop": _score_drop, "rise": _score_rise, "half": _score_half,
    "gain_per_param": _score_gain_per_param, "repeated_min": _score_repeated_min, "one_se": _score_one_se,
    "logme": _score_logme, "ncti": _score_ncti}
SCORE_PICKS = frozenset({"logme", "ncti"})  # the picks that read the probe's transferability scores


def profile_pick(pick: str, curve: Curve, shares: dict[str, float] | None = None, se: Errors = None,
                 scores: Scores = None) -> str | None:
    """The block :data:`PROFILE_PICKS` ``pick`` chooses on ``curve`` (ties: the earlier block); None when the pick
    needs evidence that is not given: the standard errors ``se`` (``one_se``) or the per-block transferability
    ``scores`` (:data:`SCORE_PICKS`; evidence from before they existed)."""
    values = PROFILE_PICKS[pick](curve, shares or {n: 1.0 for n, _ in curve}, se, scores)
    return max((n for n, _ in curve), key=lambda n: values[n]) if values else None
