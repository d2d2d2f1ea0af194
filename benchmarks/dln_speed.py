"""Speed of compressed deep matrix completion: original vs compressed vs narrow, d side by side in one run.

For each d in ``--dims`` (one problem per d: rank r, 20 % observed), the ``sclft dln completion`` networks
(``sclft.dln.experiments.build_networks``) train by GD until the recovery error first reaches ``--target``
(or ``--steps`` / the ``--max-seconds`` budget per run). Reported per d: iterations and training seconds to
the target, seconds per iteration, and the ratios — compressed/original iterations, per-step and end-to-end
speed-up original/compressed, narrow/compressed iterations — plus the log-log slope of seconds per step
against d for each network (the lecture: O(L·d²) original vs O(L·d) compressed).

Writes ``suite.json`` (the arguments and the command), ``table.md``, ``summary.json`` and ``speed_d{d}.png``
to ``--out``; no machine paths. ``--dry-run``: tiny dims, a few steps, to check the pipeline on any device.

    python benchmarks/dln_speed.py --out benchmarks/results/dln/speed
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

from sclft.dln.completion import make_problem
from sclft.dln.experiments import CompletionConfig, build_networks, completion_ratios, run_network
from sclft.dln.network import DEVICES, DTYPES, Runtime
from sclft.dln.plots import plot_completion, save_figure, write_atomic, write_json

KINDS = ("original", "compressed", "narrow")


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (NaN with fewer than two finite points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and math.isfinite(y) and y > 0]
    if len(pts) < 2:
        return math.nan
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def fmt(x: float, spec: str = ".3g", unit: str = "") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, spec) + unit


def portable(path: str) -> str:
    """A results file names no machine path: an absolute ``--out`` is recorded by its last part only."""
    return Path(path).name if Path(path).is_absolute() else path


def cpu_name() -> str:
    """The CPU model as the kernel names it (no paths), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table(rows: list[dict], slopes: dict, args: argparse.Namespace, device: str, clock: str) -> list[str]:
    what = "CPU seconds of this process" if clock == "cpu_seconds" else "wall-clock seconds"
    lines = [
        f"# Compressed deep matrix completion — speed (target recovery error {args.target:g})",
        "",
        f"r = {args.rank}, r̂ = {args.rank_estimate} (compressed / narrow width {2 * args.rank_estimate}), "
        f"L = {args.depth}, {args.observed:.0%} observed, ε = {args.scale}, η = {args.lr}, γ = {args.gamma}; "
        f"{device}, {args.dtype}, {args.threads} thread(s). Times: {what}, training only "
        "(evaluation excluded).",
        "",
        "| d | network | parameters | iterations to target | seconds to target | ms / iteration | final error "
        "| ended by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for block in rows:
        for row in block["runs"]:
            lines.append(
                f"| {block['dim']} | {row['network']} | {row['parameters']} | "
                f"{fmt(row['iterations_to_target'], 'g')} | {fmt(row[f'{clock}_to_target'])} | "
                f"{fmt(1e3 * row[f'{clock}_per_iteration'])} | "
                f"{fmt(row['final_recovery_error'], '.2e')} | {row['ended_by']} |"
            )
    lines += [
        "",
        "| d | per-step speed-up original/compressed | end-to-end speed-up | iterations compressed/original "
        "| iterations narrow/compressed | time narrow/compressed |",
        "|---|---|---|---|---|---|",
    ]
    for block in rows:
        r = block["ratios"]
        lines.append(
            f"| {block['dim']} | {fmt(r.get('speedup_per_iteration_original_over_compressed', math.nan), unit='×')} | "
            f"{fmt(r.get('speedup_to_target_original_over_compressed', math.nan), unit='×')} | "
            f"{fmt(r.get('iterations_compressed_over_original', math.nan))} | "
            f"{fmt(r.get('iterations_narrow_over_compressed', math.nan))} | "
            f"{fmt(r.get('time_to_target_narrow_over_compressed', math.nan))} |"
        )
    lines += [
        "",
        "Seconds per step grow like d^k; fitted k over the dims above: "
        + ", ".join(f"{kind} {fmt(k, '.2f')}" for kind, k in slopes.items())
        + ".",
        "",
        "— : not reached (see ended by: steps = all --steps run, max_seconds = the budget ended it).",
        "",
    ]
    return lines


def add_problem_flags(parser: argparse.ArgumentParser, scale: float) -> None:
    """The completion problem and GD flags both DLN benchmarks take (dln_seeds.py runs at ``scale`` 1e-3)."""
    parser.add_argument("--networks", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--rank-estimate", type=int, default=10)
    parser.add_argument("--observed", type=float, default=0.2)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--scale", type=float, default=scale)
    parser.add_argument("--lr", type=float, default=0.15)
    parser.add_argument("--gamma", type=float, default=0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/dln/speed")
    parser.add_argument("--dims", type=int, nargs="+", default=[250, 500, 1000])
    add_problem_flags(parser, scale=0.01)
    parser.add_argument("--target", type=float, default=1e-4)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--max-seconds", type=float, default=None, help="budget per training run")
    parser.add_argument("--record-every", type=int, default=25)
    parser.add_argument("--device", choices=DEVICES, default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="dims 32 48, 60 steps: checks the pipeline only")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.dims, args.steps, args.rank, args.rank_estimate = [32, 48], 60, 2, 3
    torch.set_num_threads(args.threads)
    runtime = Runtime(device=args.device, dtype=args.dtype, max_seconds=args.max_seconds, progress=not args.no_progress)
    device = runtime.torch_device
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    # single-threaded CPU runs are timed by process CPU time: on a shared machine wall clock mostly measures the load
    clock = "cpu_seconds" if device.type == "cpu" else "seconds"
    out = Path(args.out)
    started = time.perf_counter()
    base = CompletionConfig(
        rank=args.rank,
        observed=args.observed,
        depth=args.depth,
        scale=args.scale,
        lr=args.lr,
        gamma=args.gamma,
        rank_estimate=args.rank_estimate,
        steps=args.steps,
        target_error=args.target,
        record_every=args.record_every,
        seed=args.seed,
        runtime=runtime,
    )
    blocks = []
    for dim in args.dims:
        config = replace(base, dim=dim)
        problem = make_problem(dim, args.rank, args.observed, args.seed)
        runs = [run_network(kind, net, problem, config) for kind, net in build_networks(problem, config, args.networks)]
        rows = [row for _, row in runs]
        blocks.append({"dim": dim, "runs": rows, "ratios": completion_ratios(rows, clock)})
        labels = [row["network"] for row in rows]
        save_figure(
            plot_completion([log for log, _ in runs], labels, f"d={dim}, ε={args.scale}", problem.fully_observed),
            out / f"speed_d{dim}.png",
            dpi=60,
        )
        print(f"d={dim}: " + "; ".join(row["stop_note"] for row in rows), flush=True)
    slopes = {
        kind: slope(
            [b["dim"] for b in blocks],
            [next(r[f"{clock}_per_iteration"] for r in b["runs"] if r["kind"] == kind) for b in blocks],
        )
        for kind in args.networks
    }
    given = list(argv if argv is not None else sys.argv[1:])
    given = [portable(a) if i and given[i - 1] == "--out" else a for i, a in enumerate(given)]
    suite = {
        "command": " ".join(["python benchmarks/dln_speed.py", *given]),
        "arguments": {**vars(args), "out": portable(args.out)},
    }
    write_json(suite, out / "suite.json")
    summary = {
        "suite": "dln_speed",
        "command": suite["command"],
        "device": str(device),
        "card": card,
        "dtype": args.dtype,
        "threads": args.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_seconds": time.perf_counter() - started,
        "per_step_scaling_exponent": slopes,
        "dims": blocks,
    }
    write_json(summary, out / "summary.json")
    lines = table(blocks, slopes, args, card, clock)
    write_atomic(out / "table.md", lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    print(f"total {summary['total_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
