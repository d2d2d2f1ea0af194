"""Score every layer rule over the cells of several selection reports (Lite0's and the held-out backbones').

    python benchmarks/results/selection/heldout/score_rules.py --fitted efficientnet_lite0 \
        --profiles benchmarks/results/selection/heldout/lite0_profiles.json \
        --profiles benchmarks/results/selection/heldout/heldout_profiles.json --one-se 1 \
        --summary benchmarks/results/selection/heldout/summary_all.json \
        benchmarks/results/selection/selection.json benchmarks/results/selection/heldout/selection.json \
        benchmarks/results/selection/heldout/digits100/selection.json \
        benchmarks/results/selection/heldout/fashion100/selection.json

A report's own rule picks are used, except for cells with per-seed profile evidence, in ``--profiles``
(``profiles.py``) or in the report itself (``nc1_profile_seeds``): there every ``fixed`` and ``profile`` pick
of the installed sclft is recomputed per seed, as ``sclft bench`` would (the committed Lite0 report predates
``repeated_min`` and ``first_repeated``).
Regret of a rule in a cell = best block's mean accuracy − mean over the seeds of the picked block's mean
accuracy, in points. Spread: the per-seed differences best block − pick (same seed, so same training subset)
give the regret's std; a regret is *decided* when it exceeds that std, *within spread* otherwise.
Prints per-cell regrets and each rule's mean / max over all cells, over the cells of the ``--fitted`` backbones
and over the others (markdown); ``--summary`` writes them as JSON in the layout of ``sclft bench``'s ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics

from sclft.selection import FIXED_PICKS, PROFILE_PICKS, profile_pick, repeated_blocks


def recomputed_picks(blocks: list[str], best: str, evidence: list[dict], one_se: float | None = None
                     ) -> dict[str, list[str]]:
    picks: dict[str, list[str]] = {"oracle": [best] * len(evidence)}
    if one_se is not None and len(evidence) > 1:
        picks["lead:one_se"] = [one_se_pick(blocks, evidence, one_se)] * len(evidence)
    for e in evidence:
        shares = {b: e["params_percent"][b] for b in blocks}
        curve = [(b, e["nc1"][b]) for b in blocks]
        for name, fn in FIXED_PICKS.items():
            picks.setdefault(f"fixed:{name}", []).append(fn(blocks, shares))
        for name in PROFILE_PICKS:
            picks.setdefault(f"profile:{name}", []).append(profile_pick(name, curve, shares, e.get("nc1_se")))
    return {name: chosen for name, chosen in picks.items() if None not in chosen}  # one_se needs every seed's SEs


def report_evidence(c: dict) -> list[dict] | None:
    """The report's own per-seed profile curves (``nc1_profile_seeds``, reports written since 2026-11-29)."""
    seeds, errors = c.get("nc1_profile_seeds") or {}, c.get("nc1_se_profile_seeds") or {}
    if len(seeds) != len(c["seeds"]):
        return None
    return [{"nc1": seeds[str(s)], "nc1_se": errors.get(str(s)), "params_percent": c["params_percent"]}
            for s in c["seeds"]]


def one_se_pick(blocks: list[str], evidence: list[dict], k: float) -> str:
    """``lead:one_se`` (addendum 4, not a library rule: it needs one probe per seed): among the repeated blocks
    (as ``repeated_min``), the earliest whose mean NC1 over the seeds' probes is at most the lowest mean NC1 plus
    ``k`` times the across-seed std of NC1 at that lowest block."""
    shares = evidence[0]["params_percent"]
    repeated = repeated_blocks(blocks, shares) or blocks
    mean = {b: statistics.mean(e["nc1"][b] for e in evidence) for b in repeated}
    low = min(repeated, key=mean.get)
    limit = mean[low] + k * statistics.stdev(e["nc1"][low] for e in evidence)
    return next(b for b in repeated if mean[b] <= limit)


def cell_label(cell: str) -> str:
    backbone, data, _, n = cell.split("|")[:4]
    data = data.rstrip("/").rsplit("/", 1)[-1].split("_")[0]  # imagefolder:/path/mnist5k -> mnist5k
    return f"{backbone.removeprefix('efficientnet_')} {data}-{n.removeprefix('n')}"


def score_cell(c: dict, evidence: list[dict] | None, one_se: float | None = None) -> dict[str, dict]:
    """Per rule: regret, its paired std over seeds, parameter share and cost of the rule in this cell."""
    acc = {b: [100 * a for a in v] for b, v in c["accuracy"].items()}
    mean = {b: statistics.mean(v) for b, v in acc.items()}
    best = max(mean, key=mean.get)
    if evidence:
        picks = recomputed_picks(c["blocks"], best, evidence, one_se)
        probe_seconds = c["rules"]["profile:min"]["seconds"]
    else:
        picks = {name: r["picks"] for name, r in c["rules"].items()}
    out = {}
    for name, chosen in picks.items():
        diffs = [acc[best][s] - acc[b][s] for s, b in enumerate(chosen)]
        regret = statistics.mean(mean[best] - mean[b] for b in chosen)
        if name in c["rules"]:
            seconds = c["rules"][name]["seconds"]
        else:  # a pick the report predates: a profile pick shares the cell's one probe, a fixed pick costs nothing
            seconds = {"profile": probe_seconds, "lead": len(chosen) * probe_seconds}.get(name.split(":")[0], 0.0)
        out[name] = {"picks": chosen, "regret": regret, "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                     "percent": statistics.mean(c["params_percent"][b] for b in chosen), "seconds": seconds,
                     "cost_percent": 100 * seconds / c["one_run_seconds"]}
    out["oracle"]["best"] = f"{best}: {mean[best]:.2f} ± {statistics.stdev(acc[best]):.2f}"
    return out


def summarize(scores: dict[str, dict[str, dict]], labels: list[str]) -> dict[str, dict]:
    rules: dict[str, dict] = {}
    for name in dict.fromkeys(n for label in labels for n in scores[label]):  # a lead: over the cells it has
        rows = [scores[label][name] for label in labels if name in scores[label]]
        if not rows:
            continue
        rules[name] = {"mean_regret": statistics.mean(r["regret"] for r in rows),
                       "max_regret": max(r["regret"] for r in rows),
                       "mean_percent": statistics.mean(r["percent"] for r in rows),
                       "seconds": statistics.mean(r["seconds"] for r in rows),
                       "cost_percent": statistics.mean(r["cost_percent"] for r in rows),
                       "cells_within_spread": sum(r["regret"] <= r["std"] for r in rows), "cells": len(rows)}
    return rules


def _regret_text(r: dict | None) -> str:
    return "–" if r is None else f"{r['regret']:.2f}{'*' if r['regret'] <= r['std'] else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="selection.json files")
    parser.add_argument("--profiles", "--lite0-profiles", action="append", default=[],
                        help="per-seed profile evidence written by profiles.py (repeatable)")
    parser.add_argument("--fitted", action="append", default=[],
                        help="a backbone (or BACKBONE|DATASET) the rules were designed on: its cells are left out "
                             "of the held-out summary")
    parser.add_argument("--one-se", type=float, metavar="K",
                        help="also score lead:one_se with this K, on the cells with per-seed profile evidence")
    parser.add_argument("--summary", help="write the summaries (all cells, held-out cells) and per-cell scores here")
    args = parser.parse_args()
    evidence: dict[str, list[dict]] = {}
    for path in args.profiles:
        for e in json.load(open(path)):
            evidence.setdefault(e["cell"], []).append(e)
    evidence = {cell: sorted(es, key=lambda e: e["seed"]) for cell, es in evidence.items()}
    cells = [c for p in args.reports for c in json.load(open(p)) if all(b in c["accuracy"] for b in c["blocks"])]
    scores = {cell_label(c["cell"]): score_cell(c, evidence.get(c["cell"]) or report_evidence(c), args.one_se) for c in cells}
    labels = list(scores)
    fitted_cell = lambda key: any(key.split("|")[0] == f or key.startswith(f + "|") for f in args.fitted)  # noqa: E731
    held_out = [cell_label(c["cell"]) for c in cells if not fitted_cell(c["cell"])]
    fitted = [label for label in labels if label not in held_out]
    for label, rules in scores.items():
        print(f"\n{label}: best {rules['oracle']['best']}")
        for name, r in rules.items():
            print(f"  {name:24s} {' '.join(dict.fromkeys(r['picks'])):28s} regret {r['regret']:5.2f} ± {r['std']:.2f}")
    summaries = {"all": summarize(scores, labels), "fitted": summarize(scores, fitted) if fitted else {},
                 "held_out": summarize(scores, held_out) if held_out else {}}
    print("\nregret in points (± std of the per-seed differences; * = within that spread)")
    print("\n| rule | cells | mean | max | fitted mean | fitted max | held-out mean | held-out max | "
          + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 8) + "|")
    for name, s in summaries["all"].items():
        fit, h = summaries["fitted"].get(name, {}), summaries["held_out"].get(name, {})
        cell_text = " | ".join(_regret_text(scores[label].get(name)) for label in labels)
        side = " | ".join(f"{x.get(k, float('nan')):.2f}" for x in (s, fit, h) for k in ("mean_regret", "max_regret"))
        print(f"| `{name}` | {s['cells']} | {side} | {cell_text} |")
    if args.summary:
        cells_out = {label: {name: {k: v for k, v in r.items() if k != "picks"} | {"picks": r["picks"]}
                             for name, r in rules.items()} for label, rules in scores.items()}
        with open(args.summary, "w") as f:
            json.dump({"cells": labels, "fitted_cells": fitted, "held_out_cells": held_out, "rules": summaries["all"],
                       "fitted_rules": summaries["fitted"], "held_out_rules": summaries["held_out"],
                       "per_cell": cells_out}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
