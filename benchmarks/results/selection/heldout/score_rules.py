"""Score every layer rule over the cells of several selection reports (Lite0's and the held-out backbones').

    python benchmarks/results/selection/heldout/score_rules.py --lite0-profiles \
        benchmarks/results/selection/heldout/lite0_profiles.json \
        benchmarks/results/selection/selection.json benchmarks/results/selection/heldout/selection.json

A report's own rule picks are used, except for cells with per-seed profile evidence in ``--lite0-profiles``
(``lite0_profiles.py``): there every ``fixed`` and ``profile`` pick of the installed sclft is recomputed per
seed, as ``sclft bench`` would (the committed Lite0 report predates ``repeated_min`` and ``first_repeated``).
Regret of a rule in a cell = best block's mean accuracy − mean over the seeds of the picked block's mean
accuracy, in points. Prints per-cell regrets and each rule's mean / max over all cells (markdown).
"""

from __future__ import annotations

import argparse
import json
import statistics

from sclft.selection import FIXED_PICKS, PROFILE_PICKS, profile_pick


def recomputed_picks(blocks: list[str], best: str, evidence: list[dict]) -> dict[str, list[str]]:
    picks: dict[str, list[str]] = {"oracle": [best]}
    for e in evidence:
        shares = {b: e["params_percent"][b] for b in blocks}
        curve = [(b, e["nc1"][b]) for b in blocks]
        for name, fn in FIXED_PICKS.items():
            picks.setdefault(f"fixed:{name}", []).append(fn(blocks, shares))
        for name in PROFILE_PICKS:
            picks.setdefault(f"profile:{name}", []).append(profile_pick(name, curve, shares))
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="selection.json files")
    parser.add_argument("--lite0-profiles", help="per-seed profile evidence (lite0_profiles.json)")
    args = parser.parse_args()
    evidence: dict[str, list[dict]] = {}
    for e in json.load(open(args.lite0_profiles)) if args.lite0_profiles else []:
        evidence.setdefault(e["cell"], []).append(e)
    cells = [c for p in args.reports for c in json.load(open(p)) if all(b in c["accuracy"] for b in c["blocks"])]
    regrets: dict[str, list[float]] = {}
    labels = []
    for c in cells:
        mean = {b: 100 * statistics.mean(v) for b, v in c["accuracy"].items()}
        sd = {b: 100 * statistics.stdev(v) for b, v in c["accuracy"].items()}
        best = max(mean, key=mean.get)
        if c["cell"] in evidence:
            picks = recomputed_picks(c["blocks"], best, evidence[c["cell"]])
        else:
            picks = {name: r["picks"] for name, r in c["rules"].items()}
        backbone, data, _, n = c["cell"].split("|")[:4]
        labels.append(f"{backbone.removeprefix('efficientnet_')} {data.split('_')[0]}-{n.removeprefix('n')}")
        print(f"\n{labels[-1]}: best {best} {mean[best]:.2f} ± {sd[best]:.2f}")
        for name, chosen in picks.items():
            regret = statistics.mean(mean[best] - mean[b] for b in chosen)
            regrets.setdefault(name, []).append(regret)
            print(f"  {name:24s} {' '.join(dict.fromkeys(chosen)):28s} regret {regret:5.2f}")
    print("\n| rule | mean | max | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 3) + "|")
    for name, r in regrets.items():
        cells_text = " | ".join(f"{x:.2f}" for x in r) if len(r) == len(labels) else "–"
        print(f"| `{name}` | {statistics.mean(r):.2f} | {max(r):.2f} | {cells_text} |")


if __name__ == "__main__":
    main()
