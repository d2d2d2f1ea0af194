"""Add the evidence of the newer layer picks to the committed selection report, without retraining (issue 27).

    python benchmarks/selection_scores.py --work runs/selscores --rules profile -- \\
        benchmarks/results/selection/selection.json selection_cpu selection_heldout selection_heldout_100 \\
        benchmarks/results/selection/suites/fashion100.yaml benchmarks/results/selection/suites/mnist5k.yaml \\
        benchmarks/results/selection/suites/mnist5k_lite12.yaml
    python benchmarks/selection_scores.py --work runs/selscores --rules tuned --seeds 0 --train-per-class 20 -- \\
        benchmarks/results/selection/selection.json selection_cpu selection_heldout
    sclft bench --suite selection_cpu --out benchmarks/results/selection \\
        --report benchmarks/results/selection/selection.json         # rescored: profile:logme, profile:ncti, trial:*
    python benchmarks/selection_scores.py --verdicts benchmarks/results/rank/summary.json \\
        benchmarks/results/selection/selection.json                  # PREREGISTRATION.md sections B and C

The committed sweeps' reports keep each seed's pretrained NC1 curve but not the per-block LogME / NCTI terms, nor any
trial evidence. This reruns the selection rules of the suites that made the cells (``sclft.bench.runner.execute_rule``:
the same subsets, candidates and options; ``profile`` with the pick ``logme``, so the probe also computes the
scores; ``tuned``, whose evidence is also ``trial``'s and ``trial:heldout_acc``'s) into ``--work``, checks that each
recomputed NC1 curve equals the report's to 1e-4 (the same images were probed; float32 features differ in the sixth
digit between machines), and stores the scores as ``scores_profile_seeds`` and the fits as ``trial_seeds`` in the
report, which ``sclft bench --report`` then rescores.
``--verdicts`` scores the diagnostic ``after:min`` (argmin of the sweeps' train-set NC1 after the full fine-tune,
``nc1_after``) and writes the verdicts of predictions 6–9 into the summary's ``layer_rules``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from sclft.bench.plan import expand_suite, rule_tasks
from sclft.bench.runner import execute_rule
from sclft.bench.suite import load_suite
from sclft.io import atomic_write_text


def gather(report: Path, suites: list[str], work: Path, rules: list[str], seeds: list[int] | None,
           sizes: list[int] | None = None) -> int:
    """Run ``rules`` for every cell of ``suites`` that the report holds (only ``seeds`` and training sizes ``sizes``
    when given); store their evidence in the report."""
    cells = {c["cell"]: c for c in json.loads(report.read_text())}
    added = 0
    for name in suites:
        suite = load_suite(name)
        group = suite.group("selection")
        options = {**group.options, **({"profile_pick": "logme"} if "profile" in rules else {})}
        suite = dataclasses.replace(suite, groups={"selection": dataclasses.replace(group, rules=tuple(rules),
                                                                                     options=options)})
        runs = [r for r in expand_suite(suite) if (seeds is None or r.seed in seeds)
                and (sizes is None or r.train_per_class in sizes)]
        out = work / suite.name
        for task in rule_tasks(suite, runs):
            execute_rule(suite, task, out, runs=runs)
        for path in sorted((out / "selection").rglob("*.json")):  # a data name with "/" nests a folder
            ev = json.loads(path.read_text())
            cell = cells.get(ev["cell"])
            if cell is None:
                continue
            seed = str(ev["seed"])
            if ev["rule"] == "profile":
                kept = cell["nc1_profile_seeds"][seed]
                if not all(math.isclose(kept[b], ev["nc1"][b], rel_tol=1e-4) for b in cell["blocks"]):
                    raise SystemExit(f"{ev['cell']} seed {seed}: the recomputed NC1 curve differs from the report's "
                                     "(not the same images?); nothing written")
                cell.setdefault("scores_profile_seeds", {})[seed] = {b: ev["scores"][b] for b in cell["blocks"]}
            else:
                cell.setdefault("trial_seeds", {})[seed] = {k: {b: ev[k][b] for b in cell["blocks"]}
                                                            for k in ("nc1", "heldout_accuracy", "nc1_fit")}
                cell["trial_seeds"][seed]["seconds"] = ev["seconds"]
            added += 1
    atomic_write_text(report, json.dumps(list(cells.values()), indent=2) + "\n")
    return added


def after_min(cell: dict) -> tuple[str, float]:
    """The block with the lowest train-set NC1 after the full fine-tune, and its regret (points)."""
    mean = {b: float(np.mean(v)) for b, v in cell["accuracy"].items()}
    pick = min(cell["blocks"], key=cell["nc1_after"].get)
    return pick, 100 * (mean[cell["best"]] - mean[pick])


def regrets(cells: list[dict], rule: str) -> dict[str, float]:
    """Cell → the rule's regret (points), where it was scored; ``after:min`` from the stored ``nc1_after``."""
    if rule == "after:min":
        return {c["cell"]: after_min(c)[1] for c in cells}
    return {c["cell"]: c["rules"][rule]["regret"] for c in cells
            if rule in c["rules"] and c["rules"][rule]["regret"] is not None}


RULES = ("profile:repeated_min", "fixed:first_repeated", "profile:logme", "profile:ncti", "trial",
         "trial:heldout_acc", "trial:train_nc1", "after:min")


def verdicts(cells: list[dict]) -> dict:
    """Predictions 6–9 of benchmarks/results/rank/PREREGISTRATION.md, each over the cells where both rules compared
    were scored (``lower(a, b)``: a's mean regret below b's there)."""
    reg = {rule: regrets(cells, rule) for rule in RULES}
    default = reg["profile:repeated_min"]
    stats = {rule: {"cells": len(r), "mean_regret": float(np.mean(list(r.values()))),
                    "max_regret": float(max(r.values())),
                    "default_mean_regret_on_these_cells": float(np.mean([default[k] for k in r]))}
             for rule, r in reg.items() if r}

    def lower(a: str, b: str) -> str | None:
        common = sorted(set(reg[a]) & set(reg[b]))
        if not common:
            return None
        return "holds" if np.mean([reg[a][k] for k in common]) < np.mean([reg[b][k] for k in common]) else "fails"

    def negate(verdict: str | None) -> str:
        return "not run" if verdict is None else "fails" if verdict == "holds" else "holds"

    logme = [(c, p) for c in cells if "profile:logme" in c["rules"] for p in c["rules"]["profile:logme"]["picks"]]
    deep = sum(p in c["blocks"][-2:] for c, p in logme)
    worse = [lower("profile:repeated_min", r) for r in ("profile:logme", "profile:ncti")]
    p6 = ("not run" if None in worse else
          "holds" if worse == ["holds", "holds"] and deep > len(logme) / 2 else "fails")
    return {"rules": stats,
            "after:min": {c["cell"]: dict(zip(("pick", "regret"), after_min(c))) for c in cells},
            "predictions": {
                "6_logme_ncti_worse_than_default_and_logme_deep": p6,
                "6_logme_picks_in_the_last_two_candidates": f"{deep} of {len(logme)} cell-seeds",
                "7_after_min_beats_default": lower("after:min", "profile:repeated_min") or "not run",
                "8_after_min_does_not_beat_first_repeated": negate(lower("after:min", "fixed:first_repeated")),
                "9_train_nc1_no_better_than_after_min": negate(lower("trial:train_nc1", "after:min"))}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="selection.json to extend (or to score, with --verdicts)")
    parser.add_argument("suites", nargs="*", help="the suites whose sweeps made the report's cells")
    parser.add_argument("--work", default=None, help="bench folder for the recomputed evidence")
    parser.add_argument("--rules", nargs="+", default=["profile"], choices=["profile", "tuned"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="only these seeds (default: all)")
    parser.add_argument("--train-per-class", type=int, nargs="+", default=None,
                        help="only the cells of these training sizes (default: all)")
    parser.add_argument("--verdicts", default=None, metavar="SUMMARY",
                        help="write the verdicts into SUMMARY's layer_rules (a summary.json)")
    args = parser.parse_args(argv)
    report = Path(args.report)
    if args.verdicts:
        summary_path = Path(args.verdicts)
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"benchmark": "rank"}
        summary["layer_rules"] = verdicts(json.loads(report.read_text()))
        atomic_write_text(summary_path, json.dumps(summary, indent=1, allow_nan=False) + "\n")
        print(json.dumps(summary["layer_rules"]["predictions"], indent=1))
        return 0
    if not args.work or not args.suites:
        parser.error("give --work and the suites (or --verdicts)")
    added = gather(report, args.suites, Path(args.work), args.rules, args.seeds, args.train_per_class)
    print(f"added {added} cell-seed evidence files to {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
