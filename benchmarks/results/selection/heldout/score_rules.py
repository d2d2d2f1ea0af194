"""Score every layer rule over the cells of several selection reports (Lite0's and the held-out backbones').

    python benchmarks/results/selection/heldout/score_rules.py \
        benchmarks/results/selection/selection.json benchmarks/results/selection/heldout/selection.json

Rules already in sclft are read from each report (their per-seed picks). ``repeated:min`` (fixed in
PREREGISTRATION.md before the held-out sweep) is scored here from the report's pretrained NC1 curve and block
shares: the lowest NC1 among candidates that have an equal-size neighbour. Prints per-cell regrets and each
rule's mean / max over all cells, in points.
"""

from __future__ import annotations

import json
import statistics
import sys


def repeated_min(blocks: list[str], nc1: dict[str, float], share: dict[str, float]) -> str:
    repeated = [b for i, b in enumerate(blocks)
                if any(0 <= j < len(blocks) and abs(share[blocks[j]] - share[b]) < 1e-9 for j in (i - 1, i + 1))]
    return min(repeated or blocks, key=lambda b: nc1[b])


def main(paths: list[str]) -> None:
    cells = [c for p in paths for c in json.load(open(p))
             if all(b in c["accuracy"] and b in c.get("nc1_profile", {}) for b in c["blocks"])]  # complete cells
    regrets: dict[str, list[float]] = {}
    for c in cells:
        mean = {b: 100 * statistics.mean(v) for b, v in c["accuracy"].items()}
        sd = {b: 100 * statistics.stdev(v) if len(v) > 1 else 0.0 for b, v in c["accuracy"].items()}
        best = max(mean, key=mean.get)
        picks = {name: r["picks"] for name, r in c["rules"].items()}
        picks["repeated:min"] = [repeated_min(c["blocks"], c["nc1_profile"], c["params_percent"])]
        print(f"\n{c['cell']}  best {best} {mean[best]:.2f} ± {sd[best]:.2f}")
        print("  " + "  ".join(f"{b.removeprefix('blocks.')}:{mean[b]:.2f}±{sd[b]:.2f}" for b in c["blocks"]))
        for name, chosen in picks.items():
            regret = statistics.mean(mean[best] - mean[b] for b in chosen)
            regrets.setdefault(name, []).append(regret)
            print(f"  {name:24s} {' '.join(dict.fromkeys(chosen)):28s} regret {regret:5.2f}")
    print(f"\n{'rule':24s} {'mean':>6s} {'max':>6s}  per cell")
    for name, r in regrets.items():
        print(f"{name:24s} {statistics.mean(r):6.2f} {max(r):6.2f}  " + " ".join(f"{x:.2f}" for x in r))


if __name__ == "__main__":
    main(sys.argv[1:])
