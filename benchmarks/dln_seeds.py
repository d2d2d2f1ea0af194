"""The lecture's completion claims over paired seeds, decided by the rule preregistered in
``benchmarks/results/dln/seeds/PREREGISTRATION.md`` (written before the run).

For each d in ``--dims`` and seed in ``--seeds`` (one problem and one init per seed, shared by the networks),
original, compressed (``--basis``, γ) and narrow (width 2r̂) train by GD to recovery error ``--target``
(``sclft.dln.experiments``). Per (d, seed): iterations, CPU seconds to the target, and the paired ratios
compressed/original and narrow/compressed iterations. Per d, :func:`verdicts` applies the rule:

* "compressed needs about as many iterations as the original": ``holds`` if every seed's ratio is in
  [1 − tol, 1 + tol]; ``more`` / ``fewer`` if every ratio is above 1 + tol / below 1 − tol; else ``undecided``.
* "narrow needs more iterations than compressed": ``holds`` if every seed's narrow/compressed ratio is > 1,
  ``fails`` if every one is < 1, else ``undecided``.

A seed where a network missed the target (budget or ``--steps``) makes the comparisons it enters ``undecided``,
unless the network that missed is the one the claim says is slower and the other reached the target. ``--extra-basis``
adds a compressed run with another basis per seed (reported, not decided). Writes ``suite.json``, ``runs.json``
(the runs and the per-dimension verdicts; after every run, so a cut run keeps what it measured) and ``table.md``;
no machine paths.

    python benchmarks/dln_seeds.py --out benchmarks/results/dln/seeds --dims 250 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from sclft.dln.completion import BASES, make_problem
from sclft.dln.experiments import CompletionConfig, build_networks, run_network
from sclft.dln.network import Runtime
from sclft.dln.plots import write_atomic, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script, also when loaded by its path
from dln_speed import add_problem_flags, cpu_name, portable  # noqa: E402


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b else math.nan


def _paired(runs: list[dict], slow: str, fast: str) -> list[float]:
    """Per seed ``iterations(slow) / iterations(fast)``; +inf where only ``slow`` missed the target."""
    out = []
    for run in runs:
        a, b = run["rows"].get(slow), run["rows"].get(fast)
        if a is None or b is None:
            continue
        ia, ib = a["iterations_to_target"], b["iterations_to_target"]
        out.append(math.inf if not math.isfinite(ia) and math.isfinite(ib) else _ratio(ia, ib))
    return out


def verdicts(runs: list[dict], tol: float) -> dict:
    """The preregistered decision for one d (see the module docstring)."""
    about = _paired(runs, "compressed", "original")
    finite = [r for r in about if math.isfinite(r)]
    if not about:
        same = "not run"
    elif len(finite) < len(about):
        same = "undecided"
    elif all(1 - tol <= r <= 1 + tol for r in finite):
        same = "holds"
    elif all(r > 1 + tol for r in finite):
        same = "more"
    elif all(r < 1 - tol for r in finite):
        same = "fewer"
    else:
        same = "undecided"
    slower = _paired(runs, "narrow", "compressed")
    if not slower or any(math.isnan(r) for r in slower):
        narrow = "not run" if not slower else "undecided"
    elif all(r > 1 for r in slower):
        narrow = "holds"
    elif all(r < 1 for r in slower):
        narrow = "fails"
    else:
        narrow = "undecided"
    spread = {
        name: {"min": min(vals), "max": max(vals), "mean": sum(vals) / len(vals)} if vals else None
        for name, vals in (("compressed_over_original", finite), ("narrow_over_compressed",
                                                                  [r for r in slower if math.isfinite(r)]))
    }
    return {
        "seeds": [run["seed"] for run in runs],
        "iterations_compressed_over_original": about,
        "iterations_narrow_over_compressed": slower,
        "spread": spread,
        "about_as_many_iterations": same,
        "narrow_needs_more_iterations": narrow,
        "tolerance": tol,
    }


def fmt(x: float, spec: str = ".3g") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, spec)


def table(summary: dict) -> list[str]:
    a = summary["arguments"]
    lines = [
        f"# Completion claims over paired seeds (target recovery error {a['target']:g})",
        "",
        f"r = {a['rank']}, r̂ = {a['rank_estimate']} (compressed / narrow width {2 * a['rank_estimate']}), "
        f"L = {a['depth']}, {a['observed']:.0%} observed, ε = {a['scale']}, η = {a['lr']}, γ = {a['gamma']}, "
        f"basis {a['basis']}; {summary['card']}, {a['dtype']}, 1 thread; CPU seconds of this process. Decision "
        "rule: benchmarks/results/dln/seeds/PREREGISTRATION.md.",
        "",
        "| d | seed | network | iterations to target | CPU s to target | ms / iteration | final error | ended by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for block in summary["dims"]:
        for run in block["runs"]:
            for row in run["rows"].values():
                lines.append(
                    f"| {block['dim']} | {run['seed']} | {row['network']} ({row['kind']}) | "
                    f"{fmt(row['iterations_to_target'], 'g')} | {fmt(row['cpu_seconds_to_target'])} | "
                    f"{fmt(1e3 * row['cpu_seconds_per_iteration'])} | {fmt(row['final_recovery_error'], '.2e')} | "
                    f"{row['ended_by']} |"
                )
    lines += [
        "",
        "| d | seeds | compressed/original iterations (per seed) | verdict: about as many | "
        "narrow/compressed iterations (per seed) | verdict: narrow needs more |",
        "|---|---|---|---|---|---|",
    ]
    for block in summary["dims"]:
        v = block["verdicts"]
        lines.append(
            f"| {block['dim']} | {len(v['seeds'])} | "
            f"{', '.join(fmt(r) for r in v['iterations_compressed_over_original'])} | "
            f"**{v['about_as_many_iterations']}** | "
            f"{', '.join(fmt(r) for r in v['iterations_narrow_over_compressed'])} | "
            f"**{v['narrow_needs_more_iterations']}** |"
        )
    lines += ["", f"Tolerance of \"about as many\": ±{a['tolerance']:.0%}. — : target not reached.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/dln/seeds")
    parser.add_argument("--dims", type=int, nargs="+", default=[250])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    add_problem_flags(parser, scale=1e-3)
    parser.add_argument("--basis", choices=BASES, default="each_side")
    parser.add_argument("--extra-basis", choices=BASES, default=None, help="one more compressed run per seed")
    parser.add_argument("--target", type=float, default=1e-4)
    parser.add_argument("--tolerance", type=float, default=0.1, help="of 'about as many iterations'")
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--max-seconds", type=float, default=None, help="wall-clock budget per training run")
    parser.add_argument("--record-every", type=int, default=25)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="dims 32, seeds 0 1, 60 steps: the pipeline only")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite --out's table.md from its runs.json (a run that was cut keeps the runs "
                             "it finished; their verdicts are over those seeds)")
    args = parser.parse_args(argv)
    if args.report:
        import json

        summary = json.loads((Path(args.out) / "runs.json").read_text())
        done = {b["dim"]: [r["seed"] for r in b["runs"] if len(r["rows"]) == len(summary["arguments"]["networks"])
                           + bool(summary["arguments"].get("extra_basis"))] for b in summary["dims"]}
        lines = table(summary) + [f"Report of a cut run (`--report`): seeds with every network finished: {done}; "
                                  f"planned: {summary['arguments']['seeds']}.", ""]
        write_atomic(Path(args.out) / "table.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
        print("\n".join(lines))
        return 0
    if args.dry_run:
        args.dims, args.seeds, args.steps, args.rank, args.rank_estimate = [32], [0, 1], 60, 2, 3
    torch.set_num_threads(1)
    runtime = Runtime(device="cpu", dtype=args.dtype, max_seconds=args.max_seconds, progress=not args.no_progress)
    out = Path(args.out)
    given = list(argv if argv is not None else sys.argv[1:])
    given = [portable(a) if i and given[i - 1] == "--out" else a for i, a in enumerate(given)]
    command = " ".join(["python benchmarks/dln_seeds.py", *given])
    arguments = {**vars(args), "out": portable(args.out)}
    write_json({"command": command, "arguments": arguments}, out / "suite.json")
    summary = {
        "suite": "dln_seeds", "command": command, "arguments": arguments, "card": cpu_name(), "dtype": args.dtype,
        "torch": torch.__version__, "python": platform.python_version(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "dims": [],
    }
    started = time.perf_counter()
    for dim in args.dims:
        block = {"dim": dim, "runs": []}
        summary["dims"].append(block)
        for seed in args.seeds:
            config = CompletionConfig(
                dim=dim, rank=args.rank, observed=args.observed, depth=args.depth, scale=args.scale, lr=args.lr,
                gamma=args.gamma, rank_estimate=args.rank_estimate, steps=args.steps, target_error=args.target,
                record_every=args.record_every, seed=seed, basis=args.basis, runtime=runtime,
            )
            problem = make_problem(dim, args.rank, args.observed, seed)
            run = {"seed": seed, "rows": {}}
            block["runs"].append(run)
            jobs = list(build_networks(problem, config, args.networks))
            if args.extra_basis:
                (kind, net), = build_networks(problem, replace(config, basis=args.extra_basis), ["compressed"])
                net.name = f"{net.name} ({args.extra_basis} basis)"
                jobs.append((f"compressed_{args.extra_basis}", net))
            for kind, net in jobs:
                _, row = run_network(kind, net, problem, config)
                row["kind"] = kind
                run["rows"][kind] = row
                block["verdicts"] = verdicts(block["runs"], args.tolerance)
                summary["total_seconds"] = time.perf_counter() - started
                write_json(summary, out / "runs.json")
                print(f"d={dim} seed={seed}: {row['stop_note']}", flush=True)
    lines = table(summary)
    write_atomic(out / "table.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
