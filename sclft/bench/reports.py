"""Reports of a suite: the paper table, data-size curves, layer-selection regret, ablations."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write, atomic_write_json, atomic_write_text
from ..strategies import get_strategy_config, strategy_rank
from .runner import _find, _probe_runs, _roots, _selection_file
from .suite import RUNS_SUBDIR, Run, _selection_cells, expand_suite


def _metrics(out: Path | list[Path], runs: Iterable[Run]) -> list[tuple[Run, dict[str, Any]]]:
    from ..train import METRICS_FILE

    found = []
    for r in runs:
        path = _find(out, f"{RUNS_SUBDIR}/{r.id}/{METRICS_FILE}")
        if path is not None:
            found.append((r, json.loads(path.read_text())))
    return found


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, std = _mean_std([v * scale for v in values])
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def _method_order(strategies: Iterable[str]) -> list[str]:
    return sorted(set(strategies), key=lambda s: (strategy_rank(s), s))


def _method_name(strategy: str) -> str:
    return get_strategy_config(strategy).display_name


def _cells(rows: list[tuple[Run, dict]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r.backbone, r.dataset) for r, _ in rows))


def _sized_cells(rows: list[tuple[Run, dict]]) -> list[tuple[tuple[str, str, int | None], list[tuple[Run, dict]]]]:
    """``rows`` grouped by (backbone, dataset, training-set size), in first-seen order."""
    groups: dict[tuple[str, str, int | None], list[tuple[Run, dict]]] = {}
    for r, m in rows:
        groups.setdefault((r.backbone, r.dataset, r.train_per_class), []).append((r, m))
    return list(groups.items())


def table_rows(suite: dict[str, Any], out: Path, runs: list[Run]) -> list[dict[str, Any]]:
    """Tidy rows of the paper table: one per (backbone, dataset, training-set size, strategy), aggregated
    over seeds (never over sizes)."""
    rows = _metrics(out, [r for r in runs if "table" in r.groups and not r.variant])
    result = []
    for (backbone, dataset, size), here in _sized_cells(rows):
        for strategy in _method_order(r.strategy for r, _ in here):
            ms = [m for r, m in here if r.strategy == strategy]
            acc, nc1 = [m["test_accuracy"] for m in ms], [m["nc1_train"] for m in ms]
            result.append({
                "backbone": backbone, "dataset": dataset, "method": _method_name(strategy),
                "strategy": strategy, "seeds": len(ms), "train_per_class": size,
                "accuracy_mean": _mean_std(acc)[0], "accuracy_std": _mean_std(acc)[1],
                "nc1_mean": _mean_std(nc1)[0], "nc1_std": _mean_std(nc1)[1],
                "train_accuracy_mean": _mean_std([m["train_accuracy"] for m in ms])[0],
                "params_percent": ms[0]["trainable_percent"], "trainable_params": ms[0]["trainable_params"],
                "layers": " ".join(sorted({str(m["layer"]) for m in ms if m.get("layer")})),
                "acc": acc, "nc1": nc1,
            })
    return result


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def render_table(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(Markdown, CSV) of the paper table: a column per backbone/dataset (and training-set size, where a
    suite has several); blocks accuracy, NC1, % params."""
    cols = list(dict.fromkeys((r["backbone"], r["dataset"], r["train_per_class"]) for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in sorted(rows, key=lambda r: strategy_rank(r["strategy"]))))
    index = {(r["backbone"], r["dataset"], r["train_per_class"], r["method"]): r for r in rows}
    sized = len({n for _, _, n in cols}) > 1
    blocks = [("Transfer accuracy (%, test)", lambda r: _pm(r["acc"], 100.0)),
              ("NC1 of the penultimate feature (train data)", lambda r: _pm(r["nc1"], 1.0, 3)),
              ("Parameters fine-tuned (%)", lambda r: f"{r['params_percent']:.2f}")]
    header = ["Method", *[f"{b} / {d}" + (f" · {n or 'all'}/class" if sized else "") for b, d, n in cols]]
    parts = ["Mean ± std over seeds; NC1 = tr(Σ_W Σ_B⁺) of the head-input feature on the training data."]
    for title, fmt in blocks:
        body = [[m, *[fmt(index[(*c, m)]) if (*c, m) in index else "–" for c in cols]] for m in methods]
        parts += [f"\n### {title}\n", _markdown(header, body)]
    picked = [f"{r['backbone']} / {r['dataset']}" + (f" · {r['train_per_class'] or 'all'}/class" if sized else "")
              + f" {r['method']}: {r['layers']}" for r in rows if get_strategy_config(r["strategy"]).uses_layer]
    if picked:
        parts += ["\nTuned blocks: " + "; ".join(picked) + "."]
    buf = io.StringIO()
    fields = ["backbone", "dataset", "method", "strategy", "seeds", "train_per_class", "accuracy_mean", "accuracy_std",
              "nc1_mean", "nc1_std", "train_accuracy_mean", "params_percent", "trainable_params", "layers"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return "\n".join(parts) + "\n", buf.getvalue()


def _figure(n: int):
    from ..plotting import subplots

    fig, axes = subplots(1, n, figsize=(6 * n, 4.2), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))


def plot_nc1_layers(out: Path, runs: list[Run]) -> Path | None:
    """Layer-wise NC1 (log) after each strategy: one panel per backbone × dataset, one line per strategy."""
    csvs = {r.id: _find(out, f"{RUNS_SUBDIR}/{r.id}/nc1_layers.csv") for r in runs if r.id in _probe_runs(runs)}
    probed = [r for r in runs if csvs.get(r.id) is not None]
    cells = list(dict.fromkeys((r.backbone, r.dataset) for r in probed))
    if not cells:
        return None
    fig, axes = _figure(len(cells))
    for ax, (backbone, dataset) in zip(axes, cells):
        names: list[str] = []
        for r in sorted((r for r in probed if (r.backbone, r.dataset) == (backbone, dataset)),
                        key=lambda r: strategy_rank(r.strategy)):
            with open(csvs[r.id]) as fh:
                rows = list(csv.DictReader(fh))
            names = [row["layer"] for row in rows]
            ax.plot(range(len(rows)), [float(row["nc1"]) for row in rows], marker="o", ms=3,
                    label=_method_name(r.strategy))
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names, rotation=70, ha="right", fontsize=7)
        ax.set_ylabel("NC1 (train data)")
        ax.set_title(f"{backbone} / {dataset}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path = _roots(out)[0] / "nc1_layers.png"
    _save(fig, path)
    return path


def data_size_rows(out: Path, runs: list[Run]) -> list[dict[str, Any]]:
    rows = _metrics(out, [r for r in runs if "data_size" in r.groups])
    result = []
    for backbone, dataset in _cells(rows):
        here = [(r, m) for r, m in rows if (r.backbone, r.dataset) == (backbone, dataset)]
        for strategy in _method_order(r.strategy for r, _ in here):
            for n in sorted({r.train_per_class for r, _ in here if r.strategy == strategy}):
                ms = [m for r, m in here if r.strategy == strategy and r.train_per_class == n]
                test, train = [m["test_accuracy"] for m in ms], [m["train_accuracy"] for m in ms]
                result.append({"backbone": backbone, "dataset": dataset, "strategy": strategy, "train_per_class": n,
                               "test": test, "gap": [a - b for a, b in zip(train, test)]})
    return result


def plot_data_size(rows: list[dict[str, Any]], path: Path) -> Path | None:
    cells = list(dict.fromkeys((r["backbone"], r["dataset"]) for r in rows))
    if not cells:
        return None
    fig, axes = _figure(len(cells))
    for ax, cell in zip(axes, cells):
        here = [r for r in rows if (r["backbone"], r["dataset"]) == cell]
        for strategy in _method_order(r["strategy"] for r in here):
            pts = [r for r in here if r["strategy"] == strategy]
            stats = [_mean_std(r["test"]) for r in pts]
            ax.errorbar([r["train_per_class"] for r in pts], [100 * m for m, _ in stats],
                        yerr=[100 * s for _, s in stats], marker="o", capsize=3, label=_method_name(strategy))
        ax.set_xscale("log")
        ax.set_xlabel("training examples per class")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(" / ".join(cell))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return path


def render_data_size(rows: list[dict[str, Any]]) -> str:
    sizes = sorted({r["train_per_class"] for r in rows})
    parts = ["Test accuracy (%) and generalisation gap (train − test accuracy, points) vs training examples "
             "per class."]
    for cell in dict.fromkeys((r["backbone"], r["dataset"]) for r in rows):
        here = {(r["strategy"], r["train_per_class"]): r for r in rows if (r["backbone"], r["dataset"]) == cell}
        strategies = _method_order(s for s, _ in here)
        for title, key in (("test accuracy", "test"), ("train − test gap", "gap")):
            body = [[_method_name(s), *[_pm(here[(s, n)][key], 100.0, 1) if (s, n) in here else "–"
                                                for n in sizes]] for s in strategies]
            parts += [f"\n### {' / '.join(cell)}: {title}\n", _markdown(["Method", *[f"n={n}" for n in sizes]], body)]
    return "\n".join(parts) + "\n"


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = (np.argsort(np.argsort(np.asarray(v))) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _cell_picks(blocks: list[str], best: str, evidence: dict[str, dict], shares: dict[str, float]) -> dict[str, str]:
    """Every rule's pick in one cell and seed: the oracle, the data-free baselines, each profile pick
    function (recomputed from the stored NC1 curve and, where kept, the per-block transferability scores, so new
    pick functions score old evidence) and the trial rule's three read-outs of its short fits."""
    from ..selection import FIXED_PICKS, PROFILE_PICKS, profile_pick

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


def selection_cells_data(suite: dict[str, Any], out: Path | list[Path], runs: list[Run]) -> list[dict[str, Any]]:
    """Per sweep cell: per-block accuracy over seeds, NC1 evidence (``nc1_profile_seeds``: each seed's pretrained
    curve, ``nc1_se_profile_seeds`` its jackknife standard errors, so a new pick can be scored per seed later), and
    each rule's picks / regret / cost."""
    rules = suite.get("groups", {}).get("selection", {}).get("rules", [])
    cells = []
    for key, cell in _selection_cells(suite, runs).items():
        found = _metrics(out, cell)
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
            evidence = {}
            for rule in rules:
                path = _find(out, _selection_file(key, seed, rule))
                if path is not None:
                    evidence[rule] = json.loads(path.read_text())
            per_seed[seed] = {"evidence": evidence, "picks": _cell_picks(blocks, best, evidence, share)}
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


def selection_report(cells: list[dict[str, Any]]) -> str:
    """Markdown: per cell the accuracy of every block (mean ± std over seeds) and each rule's pick,
    regret, parameter share and cost; then the summary over cells."""
    parts = ["Exhaustive sweep of the candidate blocks (SCL-FT unless the cell says otherwise); accuracy = test "
             "accuracy, mean ± std over seeds. regret = best block's mean − the picked block's mean (points; a "
             "rule applied per seed scores the mean over its per-seed picks). `oracle` = the sweep itself, "
             "`fixed:*` = data-free baselines over the candidates, `profile:*` = pick functions of one probe of "
             "the pretrained NC1 curve, `trial` = short fine-tune of every candidate (lowest held-out NC1; "
             "`trial:heldout_acc` its held-out accuracy). cost = rule seconds, and % of one sweep run of the cell."]
    for c in cells:
        picked = {b: [n for n, r in c["rules"].items() if b in r["picks"] and n != "oracle"] for b in c["blocks"]}
        body = [[b, f"{c['params_percent'][b]:.2f}", f"{c['nc1_profile'].get(b, float('nan')):.3g}",
                 _pm(c["accuracy"][b], 100.0), f"{c['nc1_after'][b]:.3g}", f"{c['run_seconds'][b]:.0f}",
                 ", ".join(picked[b]) + (" **best**" if b == c["best"] else "")] for b in c["blocks"]]
        header = ["block", "% params", "pretrained NC1", "test acc (%)", "NC1 after FT (train)", "run (s)",
                  "picked by"]
        parts += [f"\n## {c['cell'].replace('|', ' · ').rstrip(' · ')} (seeds {', '.join(map(str, c['seeds']))})\n",
                  _markdown(header, body), ""]
        rows = [[n, " ".join(dict.fromkeys(r["picks"])), "–" if r["regret"] is None else f"{r['regret']:.2f}",
                 "–" if r["params_percent"] is None else f"{r['params_percent']:.2f}", f"{r['seconds']:.1f}",
                 f"{r['cost_percent']:.1f}"] for n, r in c["rules"].items()]
        parts += [_markdown(["rule", "pick", "regret (points)", "% params", "cost (s)", "cost (% of a run)"], rows)]
        accs = [float(np.mean(c["accuracy"][b])) for b in c["blocks"]]
        corr = [f"NC1 after FT {_spearman([c['nc1_after'][b] for b in c['blocks']], accs):+.2f}"]
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            corr.append(f"pretrained NC1 {_spearman([c['nc1_profile'][b] for b in c['blocks']], accs):+.2f}")
        parts += ["\nSpearman correlation with mean test accuracy across blocks (negative = lower NC1, higher "
                  "accuracy): " + ", ".join(corr) + "."]
    summary = summarize_rules(cells)
    if summary:
        from ..selection import DEFAULT_PROFILE_PICK, DEFAULT_RULE

        auto = f"{DEFAULT_RULE}:{DEFAULT_PROFILE_PICK}"
        body = [[n + (" (`--layer auto`)" if n == auto else ""), f"{v['mean_regret']:.2f}", f"{v['max_regret']:.2f}",
                 f"{v['mean_percent']:.2f}", f"{v['seconds']:.1f}", f"{v['cost_percent']:.1f}", str(v["cells"])]
                for n, v in summary.items()]
        parts += ["\n## Summary over cells\n", _markdown(["rule", "mean regret", "max regret", "mean % params",
                                                           "cost (s)", "cost (% of a run)", "cells"], body)]
    return "\n".join(parts) + "\n"


def plot_selection(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Per cell: test accuracy (mean ± std over seeds) and NC1 (pretrained; after fine-tuning) vs block depth."""
    if not cells:
        return None
    fig, axes = _figure(len(cells))
    for ax, c in zip(axes, cells):
        x = range(len(c["blocks"]))
        stats = [_mean_std(c["accuracy"][b]) for b in c["blocks"]]
        ax.errorbar(x, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o", capsize=3,
                    color="C0", label="test accuracy")
        ax.set_ylabel("test accuracy (%)", color="C0")
        ax.set_xticks(list(x), c["blocks"], rotation=70, ha="right", fontsize=7)
        ax.set_title(" · ".join(p for p in c["cell"].split("|") if p), fontsize=9)
        ax.grid(True, alpha=0.3)
        twin = ax.twinx()
        if all(b in c["nc1_profile"] for b in c["blocks"]):
            twin.plot(x, [c["nc1_profile"][b] for b in c["blocks"]], "s--", color="C1", ms=3, label="NC1 pretrained")
        twin.plot(x, [c["nc1_after"][b] for b in c["blocks"]], "^:", color="C2", ms=3, label="NC1 after FT")
        twin.set_yscale("log")
        twin.set_ylabel("NC1 (train data)")
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    _save(fig, path)
    return path


def ablation_report(out: Path, runs: list[Run]) -> str:
    """The ablation group's variants: one table per backbone / dataset / training-set size, a row per
    (strategy, variant), aggregated over seeds."""
    rows = _metrics(out, [r for r in runs if "ablation" in r.groups])
    parts = ["Strategy-option variants (mean ± std over seeds)."]
    for (backbone, dataset, size), here in _sized_cells(rows):
        body = []
        for strategy in _method_order(r.strategy for r, _ in here):
            for variant in dict.fromkeys(r.variant for r, _ in here if r.strategy == strategy):
                ms = [m for r, m in here if (r.strategy, r.variant) == (strategy, variant)]
                body.append([f"{_method_name(strategy)} {variant or '(defaults)'}", str(len(ms)),
                             _pm([m["test_accuracy"] for m in ms], 100.0), _pm([m["nc1_train"] for m in ms], 1.0, 3),
                             f"{ms[0]['trainable_percent']:.2f}",
                             " ".join(sorted({str(m["layer"]) for m in ms if m.get("layer")})) or "–"])
        parts += [f"\n### {backbone} / {dataset} · {size or 'all'}/class\n",
                  _markdown(["variant", "seeds", "test acc (%)", "NC1 (train)", "% params", "blocks"], body)]
    return "\n".join(parts) + "\n"


def _stored_cells(path: Path) -> list[dict[str, Any]]:
    keys = {"cell", "seeds", "blocks", "accuracy", "best", "params_percent", "run_seconds", "rules"}
    try:
        cells = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--report {path}: not a selection.json ({e})") from None
    if not isinstance(cells, list) or not all(isinstance(c, dict) and keys <= set(c) for c in cells):
        raise ValueError(f"--report {path}: not a selection.json (the list of selection cells `sclft bench` "
                         f"writes, each with {', '.join(sorted(keys))}); a bench folder is passed as a folder")
    return cells


def build_reports(suite: dict[str, Any], out: str | Path, sources: Iterable[str | Path] = ()) -> list[Path]:
    """(Re)build every report in ``out`` from the finished runs under ``out`` and ``sources`` (other bench
    folders, e.g. the shards of a job array; the first folder holding a run wins); returns the written paths.
    A ``selection.json`` among ``sources`` adds its cells (those not found among the runs), rescored with
    this version's rules (:func:`rescore_selection`)."""
    out = Path(out)
    sources = [Path(p) for p in sources]
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        raise ValueError(f"--report: no such bench folder or selection.json: {', '.join(missing)}")
    stored = [c for p in sources if p.is_file() for c in _stored_cells(p)]  # earlier selection.json files
    roots = [out, *(p for p in sources if not p.is_file())]
    runs = expand_suite(suite)
    written: list[Path] = []
    rows = table_rows(suite, roots, runs)
    if rows:
        md, text = render_table(rows)
        written += [atomic_write_text(out / "table.md", f"# {suite['name']} suite\n\n" + md),
                    atomic_write_text(out / "table.csv", text)]
    written += [p for p in [plot_nc1_layers(roots, runs)] if p]
    sizes = data_size_rows(roots, runs)
    if sizes:
        written += [p for p in [plot_data_size(sizes, out / "data_size.png"),
                                atomic_write_text(out / "data_size.md", render_data_size(sizes))] if p]
    cells = selection_cells_data(suite, roots, runs)
    done = {c["cell"] for c in cells}
    cells += [c for c in rescore_selection(stored) if c["cell"] not in done]
    if cells:
        written += [atomic_write_text(out / "selection.md", "# Layer selection\n\n" + selection_report(cells)),
                    atomic_write_json(out / "selection.json", cells),
                    atomic_write_json(out / "summary.json", {"suite": suite["name"], "rules": summarize_rules(cells)})]
        written += [p for p in [plot_selection(cells, out / "selection.png")] if p]
    if any("ablation" in r.groups for r in runs):
        written.append(atomic_write_text(out / "ablation.md", "# Ablation\n\n" + ablation_report(roots, runs)))
    return written
