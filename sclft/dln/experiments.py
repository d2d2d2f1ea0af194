"""The three seed experiments as functions that write figures (PNG) and numbers (JSON) into a folder.

Shared by the ``sclft dln …`` command and the ``scripts/dln_*.py`` figure scripts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from .completion import (
    CompletionProblem,
    compressed_network,
    make_problem,
    narrow_network,
    original_network,
    train_completion,
)
from .network import FactorNetwork, TrainLog
from .parsimony import ParsimonyConfig, run_parsimony
from .plots import plot_completion, plot_parsimony, plot_separation, plot_separation_losses, save_figure, write_json
from .separation import SeparationConfig, run_separation

__all__ = ["parsimony_experiment", "separation_experiment", "CompletionConfig", "completion_experiment"]


def parsimony_experiment(config: ParsimonyConfig, out: Path, name: str = "parsimony") -> dict:
    """Train once, write ``{name}.png`` (SVD evolution per layer) and ``{name}.json``."""
    result = run_parsimony(config)
    setting = "whitened" if config.whitened else "non-whitened"
    title = f"L={config.depth}, d={config.dim}, r={config.rank}, ε={config.scale}, {setting}, momentum={config.momentum}"
    save_figure(plot_parsimony(result, title), out / f"{name}.png")
    summary = result.summary()
    write_json(summary, out / f"{name}.json")
    return summary


def separation_experiment(
    base: SeparationConfig,
    out: Path,
    depths: Sequence[int] = (6, 8, 10),
    scales: Sequence[float] = (0.5, 0.25, 0.125),
    scale_depth: int = 4,
    scale_lr: float = 10.0,
    inits: Sequence[str] = ("orthogonal", "normal", "uniform"),
) -> dict:
    """Depth sweep, ε sweep (with its loss curves) and init sweep; writes four PNGs and ``separation.json``."""
    by_depth = [run_separation(replace(base, depth=d)) for d in depths]
    by_scale = [run_separation(replace(base, depth=scale_depth, lr=scale_lr, scale=s)) for s in scales]
    by_init = [run_separation(replace(base, init=kind)) for kind in inits]
    eps = f"ε={base.scale}, η={base.lr}"
    save_figure(plot_separation(by_depth, [f"L={d}" for d in depths], f"D_l by depth ({eps})"), out / "separation_depth.png")
    scale_labels = [f"ε={s}" for s in scales]
    save_figure(
        plot_separation(by_scale, scale_labels, f"D_l by init scale (L={scale_depth}, η={scale_lr})"),
        out / "separation_scale.png",
    )
    save_figure(
        plot_separation_losses(by_scale, scale_labels, f"loss vs iterations (L={scale_depth}, η={scale_lr})"),
        out / "separation_loss.png",
    )
    save_figure(plot_separation(by_init, list(inits), f"D_l by init type (L={base.depth}, {eps})"), out / "separation_init.png")
    summary = {
        "depth_sweep": [r.summary() for r in by_depth],
        "scale_sweep": [r.summary() for r in by_scale],
        "init_sweep": [r.summary() for r in by_init],
    }
    write_json(summary, out / "separation.json")
    return summary


@dataclass
class CompletionConfig:
    """Small defaults of the seed's §4 setup (authors: d = 1000, ε = 1e-3, γ = 0.01 under their scaling).

    At d = 200 the noise in Ω⊙Φ/p is as large as Φ's smallest singular value, so the gradient at
    init finds Φ's subspace only roughly; r̂ = 2r gives the compressed network room to correct it."""

    dim: int = 200
    rank: int = 5
    observed: float = 0.2
    depth: int = 3
    scale: float = 0.01
    lr: float = 0.15
    gamma: float = 0.3
    rank_estimate: int = 10
    steps: int = 2000
    target_error: float = 1e-4
    record_every: int = 25
    seed: int = 0


def _run(network: FactorNetwork, problem: CompletionProblem, config: CompletionConfig, stop: float | None) -> tuple[TrainLog, dict]:
    log = train_completion(network, problem, config.lr, config.steps, record_every=config.record_every, stop_below=stop)
    hit = log.first_step_below(config.target_error)
    row = {
        "network": network.name,
        "parameters": network.num_parameters,
        "final_recovery_error": log.metrics[-1],
        "final_loss": log.losses[-1],
        "steps_run": log.steps[-1],
        "iterations_to_target": hit[0] if hit else math.nan,
        "seconds_to_target": hit[1] if hit else math.nan,
        "seconds_per_iteration": log.seconds[-1] / max(log.steps[-1], 1),
    }
    return log, row


def completion_experiment(config: CompletionConfig, out: Path) -> dict:
    """Completion (original, compressed γ>0 and γ=0, narrow) and factorisation (original vs compressed);
    writes ``completion.png``, ``factorization.png`` and ``completion.json``."""
    problem = make_problem(config.dim, config.rank, config.observed, config.seed)
    c, width = config, 2 * config.rank_estimate
    nets = [
        original_network(problem, c.depth, c.scale, c.seed),
        compressed_network(problem, c.depth, c.scale, c.rank_estimate, c.gamma, c.seed),
        compressed_network(problem, c.depth, c.scale, c.rank_estimate, 0.0, c.seed),
        narrow_network(problem, c.depth, c.scale, width, c.seed),
    ]
    completion = [_run(net, problem, c, None) for net in nets]
    full = make_problem(c.dim, c.rank, 1.0, c.seed)
    factorisation = [
        _run(original_network(full, c.depth, c.scale, c.seed), full, c, None),
        _run(compressed_network(full, c.depth, c.scale, c.rank_estimate, 0.0, c.seed), full, c, None),
    ]
    head = f"d={c.dim}, r={c.rank}, r̂={c.rank_estimate}, L={c.depth}, ε={c.scale}, η={c.lr}"
    save_figure(
        plot_completion([log for log, _ in completion], [row["network"] for _, row in completion], f"completion, {c.observed:.0%} observed, {head}"),
        out / "completion.png",
    )
    save_figure(
        plot_completion([log for log, _ in factorisation], [row["network"] for _, row in factorisation], f"factorisation (full observation), {head}"),
        out / "factorization.png",
    )
    orig_log, comp_log = (log for log, _ in factorisation)
    gap = max(abs(a - b) for a, b in zip(orig_log.metrics, comp_log.metrics))
    summary = {
        "config": asdict(c),
        "completion": [row for _, row in completion],
        "factorization": [row for _, row in factorisation],
        "factorization_max_error_gap": gap,
        "curves": {
            row["network"]: {"steps": log.steps, "recovery_error": log.metrics}
            for log, row in completion
        },
    }
    write_json(summary, out / "completion.json")
    return summary
