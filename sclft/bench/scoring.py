"""What the reports compute from finished runs: the paper table's rows, data-size curves, ablation rows and
the layer-selection scores (each rule's picks, regret and cost against the exhaustive sweep).

Pure functions of the runs (:class:`~sclft.bench.plan.Run`) and their ``metrics.json`` contents
(``metrics``: run id → dict) — no file access, so scores are testable without a bench folder.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..errors import UsageError
from ..selection import FIXED_PICKS, PROFILE_PICKS, profile_pick
from ..strategies import get_strategy_config, strategy_rank
from .plan import RuleTask, Run, selection_cells

Rows = list[tuple[Run, dict[str, Any]]]


def method_order(strategies: Iterable[str]) -> list[str]:
    """Strategies in the declared table order (``sclft.strategies._registry.TABLE_ORDER``)."""
    return sorted(set(strategies), key=lambda s: (strategy_rank(s), s))


def method_name(strategy: str) -> str:
    return get_strategy_config(strategy).display_name


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = (np.argsort(np.argsort(np.asarray(v))) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _rows(runs: Iterable[Run], metrics: dict[str, dict[str, Any]]) -> Rows:
    return [(r, metrics[r.id]) for r in runs if r.id in metrics]


def _sized_cells(rows: Rows) -> list[tuple[tuple[str, str, int | None], Rows]]:
    """``rows`` grouped by (backbone, dataset, training-set size), in first-seen order."""
    groups: dict[tuple[str, str, int | None], Rows] = {}
    for r, m in rows:
        groups.setdefault((r.backbone, r.dataset, r.train_per_class), []).append((r, m))
    return list(groups.items())


def table_rows(runs: list[Run], metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Tidy rows of the paper table: one per (backbone, dataset, training-set size, strategy), aggregated
    over seeds (never over sizes)."""
    rows = _rows([r for r in runs if "table" in r.groups and not r.variant], metrics)
    result = []
    for (backbone, dataset, size), here in _sized_cells(rows):
        for strategy in method_order(r.strategy for r, _ in here):
            ms = [m for r, m in here if r.strategy == strategy]
            acc, nc1 = [m["test_accuracy"] for m in ms], [m["nc1_train"] for m in ms]
            result.append({
                "backbone": backbone, "dataset": dataset, "method": method_name(strategy),
                "strategy": strategy, "seeds": len(ms), "train_per_class": size,
                "accuracy_mean": mean_std(acc)[0], "accuracy_std": mean_std(acc)[1],
                "nc1_mean": mean_std(nc1)[0], "nc1_std": mean_std(nc1)[1],
                "train_accuracy_mean": mean_std([m["train_accuracy"] for m in ms])[0],
                "params_percent": ms[0]["trainable_percent"], "trainable_params": ms[0]["trainable_params"],
                "layers": " ".join(sorted({str(m["layer"]) for m in ms if m.get("layer")})),
                "acc": acc, "nc1": nc1,
            })
    return result


def data_size_rows(runs: list[Run], metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (backbone, dataset, strategy, training-set size): test accuracies and train − test gaps over seeds."""
    rows = _rows([r for r in runs if "data_size" in r.groups], metrics)
    result = []
    for backbone, dataset in dict.fromkeys((r.backbone, r.dataset) for r, _ in rows):
        here = [(r, m) for r, m in rows if (r.backbone, r.dataset) == (backbone, dataset)]
        for strategy in method_order(r.strategy for r, _ in here):
            for n in sorted({r.train_per_class for r, _ in here if r.strategy == strategy}):
                ms = [m for r, m in here if r.strategy == strategy and r.train_per_class == n]
                test, train = [m["test_accuracy"] for m in ms], [m["train_accuracy"] for m in ms]
                result.append({"backbone": backbone, "dataset": dataset, "strategy": strategy, "train_per_class": n,
                               "test": test, "gap": [a - b for a, b in zip(train, test)]})
    return result


def ablation_rows(runs: list[Run], metrics: dict[str, dict[str, Any]]) -> list[tuple[tuple, list[dict[str, Any]]]]:
    """The ablation group per (backbone, dataset, training-set size): a row per (strategy, variant) over seeds."""
    rows = _rows([r for r in runs if "ablation" in r.groups], metrics)
    sections = []
    for cell, here in _sized_cells(rows):
        body = []
        for strategy in method_order(r.strategy for r, _ in here):
            for variant in dict.fromkeys(r.variant for r, _ in here if r.strategy == strategy):
                ms = [m for r, m in here if (r.strategy, r.variant) == (strategy, variant)]
                body.append({"strategy": strategy, "variant": variant, "seeds": len(ms),
                             "acc": [m["test_accuracy"] for m in ms], "nc1": [m["nc1_train"] for m in ms],
                             "params_percent": ms[0]["trainable_percent"],
                             "layers": " ".join(sorted({str(m["layer"]) for m in ms if m.get("layer")}))})
        sections.append((cell, body))
    return sections


# ------------------------------------------------------------------------------------ layer selection
def _cell_picks(blocks: list[str], best: str, evidence: dict[str, dict], shares: dict[str, float]) -> dict[str, str]:
    """Every rule's pick in one cell and seed: the oracle, the data-free baselines, each profile pick
    function (recomputed from the stored NC1 curve and, where kept, the per-block transferability scores, so new
    pick functions score old evidence) and the trial rule's three read-outs of its short fits."""
    picks = {"oracle": best, **{f"fixed:{k}": fn(blocks, shares) for k, fn in FIXED_PICKS.items()}}
    if "profile" in evidence and all(b in evidence["profile"]["nc1"] for b in blocks):
        curve = [(b, evidence["profile"]["nc1"][b]) for b in blocks]
        se = evidence["profile"].get("nc1_se")  # None in evidence from before the jackknife: no `one_se` pick
        scores = evidence["profile"].get("scores")  # None unless the probe computed them: no `logme` / `ncti` pick
        chosen = {f"profile:{k}": profile_pick(k, curve, shares, se, scores) for k in PROFILE_PICKS}
        picks.update({k: v for k, v in chosen.items() if v is not None})
    for rule in ("trial", "tuned"):  # `tuned` reads the same fits as `trial`, on the fit samples
        if rule in evidence:
            trial = evidence[rule]
            picks["trial"] = min(trial["nc1"], key=trial["nc1"].get)
            acc = trial["heldout_accuracy"]
            picks["trial:heldout_acc"] = max(acc, key=acc.get)
            if trial.get("nc1_fit"):
                picks["trial:train_nc1"] = min(trial["nc1_fit"], key=trial["nc1_fit"].get)
    return picks


def _rule_seconds(name: str, evidence: dict[str, dict], run_seconds: dict[str, float]) -> float:
    rule = name.split(":")[0]
    if rule == "trial" and "trial" not in evidence:
        rule = "tuned"
    if rule == "oracle":
        return float(sum(run_seconds.values()))
    return 0.0 if rule == "fixed" else float(evidence.get(rule, {}).get("seconds", float("nan")))


def _score_rules(per_seed: list[dict[str, Any]], best: str, mean: dict[str, float], share: dict[str, float],
                 run_seconds: dict[str, float], one_run: float) -> dict[str, dict[str, Any]]:
    """Per rule over the seeds of one cell (``per_seed``: each seed's ``evidence`` and ``picks``): its picks,
    regret (points), mean parameter share of the picks, seconds and cost as % of ``one_run`` (s, a sweep run)."""
    scores = {}
    for name in dict.fromkeys(n for v in per_seed for n in v["picks"]):
        chosen = [v["picks"][name] for v in per_seed if name in v["picks"]]
        seconds = [_rule_seconds(name, v["evidence"], run_seconds) for v in per_seed if name in v["picks"]]
        swept = [b for b in chosen if b in mean]
        scores[name] = {
            "picks": chosen,
            "regret": 100 * (mean[best] - float(np.mean([mean[b] for b in swept]))) if swept else None,
            "params_percent": float(np.mean([share[b] for b in swept])) if swept else None,
            "seconds": float(np.mean(seconds)),
            "cost_percent": 100 * float(np.mean(seconds)) / one_run if one_run else float("nan")}
    return scores


def selection_cells_data(rules: Iterable[str], runs: list[Run], metrics: dict[str, dict[str, Any]],
                         evidence: Callable[[RuleTask], dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Per sweep cell: per-block accuracy over seeds, NC1 evidence (``nc1_profile_seeds``: each seed's pretrained
    curve, ``nc1_se_profile_seeds`` its jackknife standard errors, so a new pick can be scored per seed later), and
    each rule's picks / regret / cost. ``evidence(task)``: a rule's stored result for one cell and seed, or None."""
    rules = list(rules)
    cells = []
    for key, cell in selection_cells(runs).items():
        found = _rows(cell, metrics)
        if not found:
            continue
        blocks = list(dict.fromkeys(r.config["layer"] for r, _ in found))
        seeds = sorted({r.seed for r, _ in found})
        acc = {b: [m["test_accuracy"] for r, m in found if r.config["layer"] == b] for b in blocks}
        mean = {b: float(np.mean(v)) for b, v in acc.items()}
        best = max(blocks, key=mean.get)
        share = {b: next(m["trainable_percent"] for r, m in found if r.config["layer"] == b) for b in blocks}
        run_seconds = {b: float(np.mean([m["seconds"] for r, m in found if r.config["layer"] == b])) for b in blocks}
        nc1_after = {b: float(np.mean([m["nc1_train"] for r, m in found if r.config["layer"] == b])) for b in blocks}
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            stored = {rule: evidence(RuleTask(key, seed, rule)) for rule in rules}
            stored = {rule: e for rule, e in stored.items() if e is not None}
            per_seed[seed] = {"evidence": stored, "picks": _cell_picks(blocks, best, stored, share)}
        one_run = float(np.mean(list(run_seconds.values())))
        scores = _score_rules(list(per_seed.values()), best, mean, share, run_seconds, one_run)
        profile_seeds = {s: v["evidence"]["profile"]["nc1"] for s, v in per_seed.items() if "profile" in v["evidence"]}
        se_seeds = {s: v["evidence"]["profile"]["nc1_se"] for s, v in per_seed.items()
                    if "nc1_se" in v["evidence"].get("profile", {})}
        score_seeds = {str(s): v["evidence"]["profile"]["scores"] for s, v in per_seed.items()
                       if v["evidence"].get("profile", {}).get("scores")}
        trial_seeds = {str(s): t for s, v in per_seed.items() if (t := _trial_evidence(v["evidence"]))}
        nc1_profile = {}
        for curve in profile_seeds.values():
            for b, x in curve.items():
                nc1_profile.setdefault(b, []).append(x)
        cells.append({"cell": key, "seeds": seeds, "blocks": blocks, "accuracy": acc, "best": best,
                      "params_percent": share, "run_seconds": run_seconds, "one_run_seconds": one_run,
                      "nc1_after": nc1_after, "nc1_profile": {b: float(np.mean(x)) for b, x in nc1_profile.items()},
                      "nc1_profile_seeds": {str(s): c for s, c in profile_seeds.items()},
                      "nc1_se_profile_seeds": {str(s): c for s, c in se_seeds.items()},
                      **({"scores_profile_seeds": score_seeds} if score_seeds else {}),
                      **({"trial_seeds": trial_seeds} if trial_seeds else {}), "rules": scores})
    return cells


def _trial_evidence(evidence: dict[str, dict]) -> dict[str, Any] | None:
    """What the report keeps of a seed's trial / tuned evidence (enough to recompute its three picks)."""
    trial = evidence.get("trial") or evidence.get("tuned")
    if not trial:
        return None
    return {k: trial[k] for k in ("nc1", "heldout_accuracy", "nc1_fit", "seconds") if k in trial}


def rescore_selection(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells of an earlier ``selection.json`` scored with this version's rules: in a cell that kept every seed's
    pretrained curve (``nc1_profile_seeds``), each ``fixed:*`` and ``profile:*`` pick is recomputed per seed,
    so picks added since the sweep score it without a rerun (with ``scores_profile_seeds``, the per-block LogME /
    NCTI terms, also ``profile:logme`` / ``profile:ncti``); ``trial`` picks are recomputed where the cell keeps each
    seed's trial evidence (``trial_seeds``) and carried over otherwise. Cells without per-seed curves are returned
    unchanged."""
    out = []
    for c in cells:
        curves, errors = c.get("nc1_profile_seeds") or {}, c.get("nc1_se_profile_seeds") or {}
        if sorted(curves) != sorted(map(str, c["seeds"])):
            out.append(c)
            continue
        mean = {b: float(np.mean(v)) for b, v in c["accuracy"].items()}
        probe = next((r["seconds"] for n, r in c["rules"].items() if n.startswith("profile:")), float("nan"))
        per_seed = []
        for s in map(str, c["seeds"]):
            evidence = {"profile": {"nc1": curves[s], "nc1_se": errors.get(s), "seconds": probe,
                                    "scores": (c.get("scores_profile_seeds") or {}).get(s)}}
            if s in (c.get("trial_seeds") or {}):
                evidence["trial"] = c["trial_seeds"][s]
            per_seed.append({"evidence": evidence, "picks": _cell_picks(c["blocks"], c["best"], evidence,
                                                                        c["params_percent"])})
        scores = _score_rules(per_seed, c["best"], mean, c["params_percent"], c["run_seconds"], c["one_run_seconds"])
        kept = {n: r for n, r in c["rules"].items() if n not in scores and n.split(":")[0] not in ("fixed", "profile")
                and not (n.startswith("trial") and c.get("trial_seeds"))}
        out.append({**c, "rules": {**scores, **kept}})
    return out


def summarize_rules(cells: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule over the cells: mean / max regret (points), mean % parameters, mean seconds and % of one run."""
    names = list(dict.fromkeys(n for c in cells for n in c["rules"]))
    summary = {}
    for n in names:
        rows = [c["rules"][n] for c in cells if n in c["rules"] and c["rules"][n]["regret"] is not None]
        if rows:
            summary[n] = {"mean_regret": float(np.mean([r["regret"] for r in rows])),
                          "max_regret": float(max(r["regret"] for r in rows)),
                          "mean_percent": float(np.mean([r["params_percent"] for r in rows])),
                          "seconds": float(np.mean([r["seconds"] for r in rows])),
                          "cost_percent": float(np.mean([r["cost_percent"] for r in rows])), "cells": len(rows)}
    return summary


# ------------------------------------------------------------------------------------ paired comparison
def _paired(diffs: list[float]) -> dict[str, Any]:
    """Mean, sd and paired t of per-seed differences; ``verdict`` at two-sided 5 % (Student t, n − 1 d.f.):
    ``holds`` (t above the critical value), ``fails`` (below minus it) or ``undecided``."""
    from scipy.stats import t as student_t  # scipy loads only for the paired t-test (slow import)

    d = np.asarray(diffs, dtype=float)
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    t = mean / (sd / np.sqrt(len(d))) if len(d) > 1 and sd > 0 else float("nan")
    crit = float(student_t.ppf(0.975, len(d) - 1)) if len(d) > 1 else float("nan")
    verdict = "holds" if t > crit else "fails" if t < -crit else "undecided"
    return {"n": len(d), "mean": mean, "sd": sd, "t": float(t), "t_critical": crit, "verdict": verdict}


def _overall(verdicts: list[str]) -> str:
    """A claim over cells: holds if it holds somewhere and fails nowhere, fails in the mirror case, else undecided."""
    if "holds" in verdicts and "fails" not in verdicts:
        return "holds"
    if "fails" in verdicts and "holds" not in verdicts:
        return "fails"
    return "undecided"


def _untuned(variant: str, tune: tuple[str, ...]) -> str:
    """A variant label without its ``tune`` fields (``lr=0.001,r=8`` → ``r=8``)."""
    return ",".join(p for p in variant.split(",") if p and p.partition("=")[0] not in tune)


def _choose(here: Rows, tune: tuple[str, ...]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (strategy, variant without ``tune`` fields): the variant with the highest mean validation accuracy
    over its seeds (ties: the first in the suite's order), with every candidate's mean."""
    means: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r, m in here:
        if m.get("val_accuracy") is None:
            raise UsageError(f"the ablation group tunes {', '.join(tune)} on validation accuracy, but run {r.id} has "
                             "none: give the runs a validation split (val_fraction, e.g. in the dataset's overrides)")
        group = means.setdefault((r.strategy, _untuned(r.variant, tune)), {})
        group.setdefault(r.variant, []).append(m["val_accuracy"])
    chosen = {}
    for key, by_variant in means.items():
        val = {v: float(np.mean(a)) for v, a in by_variant.items()}
        best = max(val, key=lambda v: (round(val[v], 9), -list(val).index(v)))
        chosen[key] = {"variant": best, "val_accuracy": val[best], "candidates": val}
    return chosen


def paired_rows(runs: list[Run], metrics: dict[str, dict[str, Any]], baseline: str,
                tune: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ablation group as a paired comparison of every other strategy with ``baseline``, by seed, per
    (backbone, dataset, training-set size): each variant's accuracies, trainable %, s/epoch (run seconds / epochs,
    the final evaluation included) and the per-seed accuracy differences (``accuracy``: the claim "better
    accuracy", per variant), and — with several variants — the per-seed range of accuracy over the variants
    (``rank_range``: the claim "less sensitive", the baseline's range minus the method's). Verdicts by
    :func:`_paired`; ``claims`` combines each claim over the cells (:func:`_overall`).

    ``tune`` (variant fields, e.g. ``("lr",)``): per cell, strategy and variant without those fields, each
    strategy is compared at its own value chosen on the mean validation accuracy over the seeds
    (:func:`_choose`, ``chosen`` in each variant's entry); test accuracy decides only after that choice. A cell
    with a run missing (failed, not trained) is listed in ``incomplete`` instead of compared."""
    ablation = [r for r in runs if "ablation" in r.groups]
    found = dict(_sized_cells(_rows(ablation, metrics)))
    cells, claims, incomplete = [], {}, []
    for backbone, dataset, size in dict.fromkeys((r.backbone, r.dataset, r.train_per_class) for r in ablation):
        here = found.get((backbone, dataset, size), [])
        missing = [r.id for r in ablation if (r.backbone, r.dataset, r.train_per_class) == (backbone, dataset, size)
                   and r.id not in metrics]
        if tune and missing:  # a choice among partly missing candidates would be biased: the cell is listed
            incomplete.append({"backbone": backbone, "dataset": dataset, "train_per_class": size,
                               "missing": len(missing), "runs": len(missing) + len(here)})
            continue
        if not here:
            continue
        chosen = _choose(here, tune) if tune else {}
        if tune:
            here = [(r, m) for r, m in here if chosen[(r.strategy, _untuned(r.variant, tune))]["variant"] == r.variant]
        label = {r.id: _untuned(r.variant, tune) for r, _ in here}
        acc = {(r.strategy, label[r.id], r.seed): m["test_accuracy"] for r, m in here}
        variants = list(dict.fromkeys(label[r.id] for r, _ in here))
        methods = [s for s in method_order(r.strategy for r, _ in here) if s != baseline]
        for method in methods:
            shared = [v for v in variants if any(k[:2] == (method, v) for k in acc) and
                      any(k[:2] == (baseline, v) for k in acc)]
            per_variant = []
            for v in shared:
                seeds = sorted(s for (st, vv, s) in acc if (st, vv) == (method, v) and (baseline, v, s) in acc)
                stats = {}
                for st in (baseline, method):
                    ms = [m for r, m in here if (r.strategy, label[r.id]) == (st, v) and r.seed in seeds]
                    stats[st] = {"accuracy": [acc[(st, v, s)] for s in seeds],
                                 "params_percent": ms[0]["trainable_percent"],
                                 "seconds_per_epoch": float(np.mean([m["seconds"] / max(m["epochs"], 1) for m in ms]))}
                    if tune:
                        stats[st]["chosen"] = chosen[(st, v)]
                diff = _paired([acc[(method, v, s)] - acc[(baseline, v, s)] for s in seeds])
                per_variant.append({"variant": v, "seeds": seeds, "methods": stats, "accuracy": diff})
                claims.setdefault(f"{method}:accuracy:{v or 'defaults'}", []).append(diff["verdict"])
            cell = {"backbone": backbone, "dataset": dataset, "train_per_class": size, "baseline": baseline,
                    "method": method, "variants": per_variant, "tuned": list(tune)}
            if len(shared) > 1:
                seeds = sorted(set.intersection(*(set(p["seeds"]) for p in per_variant)))

                def spread(st: str, s: int, acc: dict = acc, shared: list = shared) -> float:
                    values = [acc[(st, v, s)] for v in shared]
                    return max(values) - min(values)

                cell["rank_range"] = {**_paired([spread(baseline, s) - spread(method, s) for s in seeds]),
                                      baseline: [spread(baseline, s) for s in seeds],
                                      method: [spread(method, s) for s in seeds]}
                claims.setdefault(f"{method}:rank_range", []).append(cell["rank_range"]["verdict"])
            cells.append(cell)
    return {"baseline": baseline, "cells": cells, "incomplete": incomplete,
            "claims": {k: {"cells": v, "overall": _overall(v)} for k, v in claims.items()}}
