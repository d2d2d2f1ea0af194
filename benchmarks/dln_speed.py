"""Speed of compressed deep matrix completion, as ratios measured in one run.

1. Original d-wide DLN vs compressed network: iterations and training wall-clock until the recovery
   error (unobserved entries) first reaches ``--target``, for d ∈ {200, 400, 800}, r = 5, L = 3, 20 %
   observed.
2. Narrow network of width 2r̂ vs compressed network at several r̂ (same problem, d = ``--narrow-dim``).

Writes ``speed.json``, ``speed.md`` and PNG figures to ``--out``. Runs single-threaded by default
(``--threads``) so that timings are not distorted by other work on the machine.

    python benchmarks/dln_speed.py --out benchmarks/results/dln
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from sclft.dln.completion import compressed_network, make_problem, narrow_network, original_network, train_completion
from sclft.dln.plots import plot_completion, save_figure, write_atomic, write_json


def measure(network, problem, args) -> tuple[dict, object]:
    log = train_completion(network, problem, args.lr, args.max_steps, record_every=args.record_every, stop_below=args.target)
    hit = log.first_step_below(args.target)
    return {
        "network": network.name,
        "parameters": network.num_parameters,
        "iterations": hit[0] if hit else math.nan,
        "seconds": hit[1] if hit else math.nan,
        "final_error": log.metrics[-1],
        "seconds_per_iteration": log.seconds[-1] / max(log.steps[-1], 1),
    }, log


def ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/dln")
    parser.add_argument("--dims", type=int, nargs="+", default=[200, 400, 800])
    parser.add_argument("--rank", type=int, default=5)
    parser.add_argument("--rank-estimate", type=int, default=10, help="r̂ of part 1")
    parser.add_argument("--narrow-dim", type=int, default=400)
    parser.add_argument("--narrow-ranks", type=int, nargs="+", default=[5, 8, 10], help="r̂ values of part 2")
    parser.add_argument("--observed", type=float, default=0.2)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=0.15)
    parser.add_argument("--gamma", type=float, default=0.3)
    parser.add_argument("--target", type=float, default=1e-4)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--record-every", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    started = time.perf_counter()

    width_rows, width_logs = [], {}
    for rank_estimate in args.narrow_ranks:
        problem = make_problem(args.narrow_dim, args.rank, args.observed, args.seed)
        comp, comp_log = measure(compressed_network(problem, args.depth, args.scale, rank_estimate, args.gamma, args.seed), problem, args)
        narrow, narrow_log = measure(narrow_network(problem, args.depth, args.scale, 2 * rank_estimate, args.seed), problem, args)
        width_logs[rank_estimate] = (comp_log, narrow_log)
        width_rows.append({
            "rank_estimate": rank_estimate, "compressed": comp, "narrow": narrow,
            "iteration_ratio_narrow_over_compressed": ratio(narrow["iterations"], comp["iterations"]),
            "time_ratio_narrow_over_compressed": ratio(narrow["seconds"], comp["seconds"]),
        })
        print(width_rows[-1], flush=True)

    dim_rows, dim_logs = [], {}
    for dim in args.dims:
        problem = make_problem(dim, args.rank, args.observed, args.seed)
        comp, comp_log = measure(compressed_network(problem, args.depth, args.scale, args.rank_estimate, args.gamma, args.seed), problem, args)
        orig, orig_log = measure(original_network(problem, args.depth, args.scale, args.seed), problem, args)
        dim_logs[dim] = (orig_log, comp_log)
        dim_rows.append({
            "dim": dim, "original": orig, "compressed": comp,
            "speedup_wall_clock": ratio(orig["seconds"], comp["seconds"]),
            "iteration_ratio_compressed_over_original": ratio(comp["iterations"], orig["iterations"]),
            "speedup_per_iteration": ratio(orig["seconds_per_iteration"], comp["seconds_per_iteration"]),
        })
        print(dim_rows[-1], flush=True)

    for dim, logs in dim_logs.items():
        save_figure(plot_completion(logs, ["original", f"compressed r̂={args.rank_estimate}, γ={args.gamma}"], f"d={dim}"), out / f"speed_d{dim}.png", dpi=70)
    narrow_logs = [log for pair in width_logs.values() for log in pair]
    narrow_labels = [f"{kind} r̂={r}" for r in width_logs for kind in ("compressed", "narrow")]
    save_figure(plot_completion(narrow_logs, narrow_labels, f"compressed vs narrow, d={args.narrow_dim}"), out / "speed_narrow.png", dpi=70)

    meta = {
        "command": "python benchmarks/dln_speed.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if not isinstance(v, list)),
        "arguments": vars(args),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
        "total_seconds": time.perf_counter() - started,
    }
    write_json({"meta": meta, "original_vs_compressed": dim_rows, "narrow_vs_compressed": width_rows}, out / "speed.json")

    fmt = lambda x, spec=".3g": "—" if not math.isfinite(x) else format(x, spec)  # noqa: E731
    lines = [
        f"# Compressed deep matrix completion — speed (target recovery error {args.target:g})", "",
        f"r = {args.rank}, L = {args.depth}, {args.observed:.0%} observed, ε = {args.scale}, η = {args.lr}, γ = {args.gamma}, "
        f"{args.threads} thread(s); seconds are training time only.", "",
        f"| d | original iters | original s | compressed (r̂={args.rank_estimate}) iters | compressed s | wall-clock speed-up | per-iteration speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in dim_rows:
        o, c = row["original"], row["compressed"]
        lines.append(f"| {row['dim']} | {fmt(o['iterations'], 'g')} | {fmt(o['seconds'])} | {fmt(c['iterations'], 'g')} | {fmt(c['seconds'])} | "
                     f"{fmt(row['speedup_wall_clock'])}× | {fmt(row['speedup_per_iteration'])}× |")
    lines += ["", f"Narrow (width 2r̂, ε-orthogonal init) vs compressed, d = {args.narrow_dim}:", "",
              "| r̂ | compressed iters | compressed s | narrow iters | narrow s | iteration ratio narrow/compressed | time ratio |",
              "|---|---|---|---|---|---|---|"]
    for row in width_rows:
        c, n = row["compressed"], row["narrow"]
        lines.append(f"| {row['rank_estimate']} | {fmt(c['iterations'], 'g')} | {fmt(c['seconds'])} | {fmt(n['iterations'], 'g')} | {fmt(n['seconds'])} | "
                     f"{fmt(row['iteration_ratio_narrow_over_compressed'])} | {fmt(row['time_ratio_narrow_over_compressed'])} |")
    lines += ["", "— means the target was not reached within --max-steps.", ""]

    def write_md(tmp: str) -> None:
        Path(tmp).write_text("\n".join(lines))

    write_atomic(out / "speed.md", write_md)
    print("\n".join(lines))
    print(f"total {meta['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
