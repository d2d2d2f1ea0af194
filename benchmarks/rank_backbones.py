"""The backbone claim (issue 27): do scores computed before training order the candidates by transfer accuracy?

    sclft bench --suite benchmarks/results/rank/suite.yaml --out runs/rank_digits          # the accuracies
    python benchmarks/rank_backbones.py --out benchmarks/results/rank \\
        benchmarks/results/rank/suite.yaml=runs/rank_digits \\
        [benchmarks/results/rank/suite_fashion.yaml=runs/rank_fashion]

For every suite (``SUITE=RUNS``: the suite file and the bench folder its runs trained in) and every seed, one
``sclft.rank`` call scores the suite's candidates — its pretrained backbones and their random-weight twins (entries
with ``pretrained: false``) — on the seed's training subset (the images the runs trained on); the scores are kept in
``RUNS/rank_scores/`` so a rerun only recomputes the statistics. Then, per cell, target (each strategy's test
accuracy) and score: Kendall τ and weighted τ over the pretrained candidates of the mean-over-seeds score against
the mean-over-seeds accuracy, each seed's τ, the regret of the top-scored candidate, and for the controls the
number of (pretrained, random) pairs each score orders wrongly; finally the verdicts of PREREGISTRATION.md.
Writes ``OUT/rank.md`` and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from sclft.bench import Suite, expand_suite, find_runs, load_suite
from sclft.bench.suite import Dataset
from sclft.io import atomic_write_text
from sclft.ranking import SCORES, Candidate, misordered_controls, rank, transfer_correlation
from sclft.run_folder import read_run
from sclft.transfer_scores import ncti_from_rows

SCORE_NAMES = tuple(SCORES)  # nc1, separation, logme, ncti


def _candidates(suite: Suite) -> dict[str, Candidate]:
    """Suite backbone label → the candidate it trains (name, image size, pretrained)."""
    return {b.label: Candidate(b.name, b.overrides.get("image_size"), b.overrides.get("pretrained", True))
            for b in suite.backbones}


def _scores(suite: Suite, runs_dir: Path, dataset: Dataset, tpc: int, seed: int) -> dict[str, dict[str, float]]:
    """Suite label → its score row for one seed (computed once, then read from ``RUNS/rank_scores``)."""
    path = runs_dir / "rank_scores" / f"{dataset.label}-n{tpc}-s{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    cands = _candidates(suite)
    res = rank(list(cands.values()), dataset.ref, train_per_class=tpc, seed=seed, data_dir=dataset.data_dir)
    by_label = {c.label: label for label, c in cands.items()}
    rows = {by_label[r["candidate"]]: r for r in res.rows}
    pretrained = [lab for lab, c in cands.items() if c.pretrained]
    only = ncti_from_rows({lab: rows[lab] for lab in pretrained})  # NCTI over the pretrained candidates alone
    for lab in pretrained:
        rows[lab]["ncti_pretrained"] = only[lab]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(rows, indent=1) + "\n")
    return rows


def _accuracies(suite: Suite, runs_dir: Path) -> dict[tuple[str, str, int | None, str, int], float]:
    """(dataset label, strategy, train per class, backbone label, seed) → test accuracy of the finished runs."""
    runs = expand_suite(suite)
    found = find_runs(runs_dir, runs).found
    return {(r.dataset, r.strategy, r.train_per_class, r.backbone, r.seed):
            read_run(found[r.id].path).metrics["test_accuracy"] for r in runs if r.id in found}


def _verdict(mean: float, per_seed: list[float], threshold: float = 0.0) -> str:
    """holds: mean > threshold and every seed too; undecided: the seeds straddle it; fails otherwise."""
    above = [v > threshold for v in per_seed if math.isfinite(v)]
    if mean > threshold and all(above):
        return "holds"
    return "undecided" if any(above) else "fails"


def cell_statistics(scores: dict[int, dict[str, dict]], acc: dict[int, dict[str, float]], pretrained: list[str],
                    controls: list[str]) -> dict[str, Any]:
    """Per score: τ / weighted τ / top / regret of the mean-over-seeds score against the mean accuracy over the
    pretrained candidates, each seed's τ and regret, and (``controls`` given) each seed's misordered pairs."""
    seeds = sorted(acc)
    mean_acc = {c: float(np.mean([acc[s][c] for s in seeds])) for c in pretrained}
    out: dict[str, Any] = {}
    for score in SCORE_NAMES:
        key = "ncti_pretrained" if score == "ncti" else score
        higher = SCORES[score]
        mean_score = {c: float(np.mean([scores[s][c][key] for s in seeds])) for c in pretrained}
        stats = transfer_correlation(mean_score, mean_acc, higher)
        per_seed = [transfer_correlation({c: scores[s][c][key] for c in pretrained},
                                         {c: acc[s][c] for c in pretrained}, higher) for s in seeds]
        stats.update(regret=100 * stats["regret"], seed_kendall_tau=[p["kendall_tau"] for p in per_seed],
                     seed_weighted_tau=[p["weighted_tau"] for p in per_seed],
                     seed_regret=[100 * p["regret"] for p in per_seed])
        if controls:
            stats["misordered_controls"] = [misordered_controls({c: scores[s][c][score] for c in pretrained + controls},
                                                                pretrained, controls, higher) for s in seeds]
        out[score] = stats
    return out


def analyse(pairs: list[tuple[Suite, Path]]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for suite, runs_dir in pairs:
        cands = _candidates(suite)
        pretrained = [lab for lab, c in cands.items() if c.pretrained]
        controls = [lab for lab, c in cands.items() if not c.pretrained]
        accs = _accuracies(suite, runs_dir)
        for dataset in suite.datasets:
            dlabel = dataset.label
            for group in suite.groups.values():
                for tpc in group.train_per_class:
                    seeds = list(group.seeds)
                    scores = {s: _scores(suite, runs_dir, dataset, tpc, s) for s in seeds}
                    strategies = sorted({k[1] for k in accs if k[0] == dlabel and k[2] == tpc})
                    cell: dict[str, Any] = {"dataset": dlabel, "train_per_class": tpc, "seeds": seeds,
                                            "candidates": pretrained, "controls": controls, "targets": {},
                                            "accuracy": {}, "scores": {}}
                    for strategy in strategies:
                        have = [c for c in pretrained + controls
                                if all((dlabel, strategy, tpc, c, s) in accs for s in seeds)]
                        acc = {s: {c: accs[(dlabel, strategy, tpc, c, s)] for c in have} for s in seeds}
                        cell["accuracy"][strategy] = {c: [acc[s][c] for s in seeds] for c in have}
                        if all(c in have for c in pretrained):  # controls are scored against the linear probe only
                            cell["targets"][strategy] = cell_statistics(
                                scores, acc, pretrained, controls if strategy == "linear_probe" else [])
                    cell["scores"] = {c: {k: [scores[s][c][k] for s in seeds] for k in
                                          ("nc1", "separation", "logme", "ncti", "probe_seconds")}
                                      for c in pretrained + controls}
                    cells[f"{dlabel}|n{tpc}"] = cell
    return {"cells": cells, "predictions": predictions(cells)}


def predictions(cells: dict[str, Any]) -> dict[str, Any]:
    """The verdicts of PREREGISTRATION.md section A over the cells that have the targets each one needs."""
    def over(name: str, per_cell: dict[str, str]) -> dict[str, Any]:
        if not per_cell:
            return {"verdict": "not run", "cells": {}}
        values = set(per_cell.values())
        verdict = "holds" if values == {"holds"} else "fails" if "fails" in values else "undecided"
        return {"verdict": verdict, "cells": per_cell}

    out: dict[str, Any] = {}
    for target, name in (("linear_probe", "1_nc1_orders_linear_probe"), ("scl_ft", "1_nc1_orders_scl_ft")):
        out[name] = over(name, {k: _verdict(c["targets"][target]["nc1"]["kendall_tau"],
                                            c["targets"][target]["nc1"]["seed_kendall_tau"])
                                for k, c in cells.items() if target in c["targets"]})
    def at_least(target: str, a: str, b: str, tau: str) -> dict[str, str]:
        """Per cell with ``target``: does score ``a``'s τ (``kendall_tau`` or ``weighted_tau``) reach ``b``'s?"""
        verdicts = {}
        for k, c in cells.items():
            if target in c["targets"]:
                t = c["targets"][target]
                diff = [x - y for x, y in zip(t[a][f"seed_{tau}"], t[b][f"seed_{tau}"])]
                verdicts[k] = _verdict(t[a][tau] - t[b][tau] + 1e-12, [d + 1e-12 for d in diff])  # ties count
        return verdicts

    out["2_logme_tau_at_least_nc1_linear_probe"] = over("2", at_least("linear_probe", "logme", "nc1", "kendall_tau"))
    p3 = at_least("scl_ft", "ncti", "logme", "weighted_tau")
    n_hold = sum(v == "holds" for v in p3.values())
    out["3_ncti_weighted_tau_at_least_logme_scl_ft_majority"] = {
        "verdict": ("not run" if not p3 else "holds" if n_hold > len(p3) / 2 else
                    "fails" if sum(v == "fails" for v in p3.values()) >= len(p3) / 2 else "undecided"), "cells": p3}
    out["4_top_nc1_regret_at_most_1_point_linear_probe"] = over("4", {
        k: "holds" if c["targets"]["linear_probe"]["nc1"]["regret"] <= 1.0 else "fails"
        for k, c in cells.items() if "linear_probe" in c["targets"]})
    perfect = {s: all(all(n == 0 for n in c["targets"]["linear_probe"][s].get("misordered_controls", [1]))
                      for c in cells.values() if "linear_probe" in c["targets"]) for s in SCORE_NAMES}
    scored = any("linear_probe" in c["targets"] for c in cells.values())
    out["5_no_score_ranks_every_control_last"] = {
        "verdict": "not run" if not scored else "fails" if any(perfect.values()) else "holds",
        "scores_ranking_every_control_last": [s for s, v in perfect.items() if v and scored]}
    return out


def _pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    v = np.asarray(values, dtype=float) * scale
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def render(result: dict[str, Any]) -> str:
    parts = ["# Backbone claim: scores before training against transfer accuracy\n",
             "Generated by `benchmarks/rank_backbones.py` (README.md has the commands). Accuracy = test accuracy, "
             "mean ± std over seeds; scores = mean over the seeds' training subsets (NC1, D lower = better; LogME, "
             "NCTI higher = better; NCTI here normalised over all candidates of the cell, controls included). "
             "τ = Kendall τ-b over the pretrained candidates (mean score vs mean accuracy), per-seed τ in brackets; "
             "wτ = weighted τ; regret in points."]
    for key, c in result["cells"].items():
        strategies = list(c["accuracy"])
        head = ["candidate", *[f"{s} acc (%)" for s in strategies], "NC1", "D", "LogME", "NCTI", "probe s"]
        rows = []
        for cand in c["candidates"] + c["controls"]:
            sc = c["scores"][cand]
            rows.append([cand, *[_pm(c["accuracy"][s][cand], 100) if cand in c["accuracy"][s] else "–"
                                 for s in strategies],
                         f"{np.mean(sc['nc1']):.3g}", f"{np.mean(sc['separation']):.3g}", f"{np.mean(sc['logme']):.4f}",
                         f"{np.nanmean(sc['ncti']):.3f}", f"{np.mean(sc['probe_seconds']):.1f}"])
        parts += [f"\n## {_cell_name(key)} (seeds {', '.join(map(str, c['seeds']))})\n", _table(head, rows)]
        for target, stats in c["targets"].items():
            body = [[s, f"{v['kendall_tau']:+.2f} [" + ", ".join(f"{t:+.2f}" for t in v["seed_kendall_tau"]) + "]",
                     f"{v['weighted_tau']:+.2f}", v["top"], f"{v['regret']:.2f}",
                     " ".join(map(str, v.get("misordered_controls", []))) or "–"] for s, v in stats.items()]
            parts += [f"\n{target}:\n", _table(["score", "τ [per seed]", "wτ", "top-scored", "regret",
                                                "misordered control pairs per seed (of 81)"], body)]
    parts.append("\n## Predictions (PREREGISTRATION.md, section A)\n")
    parts.append(_table(["prediction", "verdict", "per cell"],
                        [[k, v["verdict"], ", ".join(f"{_cell_name(c)}: {x}" for c, x in v.get("cells", {}).items())
                          or ", ".join(v.get("scores_ranking_every_control_last", [])) or "–"]
                         for k, v in result["predictions"].items()]))
    return "\n".join(parts) + "\n"


def _cell_name(key: str) -> str:
    return key.replace("|", " · ")  # a "|" would split a markdown table cell


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", metavar="SUITE=RUNS", help="suite file and the bench folder of its runs")
    parser.add_argument("--out", required=True, help="folder for rank.md and summary.json")
    args = parser.parse_args(argv)
    pairs = []
    for p in args.pairs:
        suite, sep, runs = p.partition("=")
        if not sep:
            parser.error(f"{p!r}: expected SUITE=RUNS")
        pairs.append((load_suite(suite), Path(runs)))
    result = analyse(pairs)
    out = Path(args.out)
    atomic_write_text(out / "rank.md", render(result))
    summary = {"benchmark": "rank", "suites": [s.name for s, _ in pairs], **result}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out / 'rank.md'} and {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
