"""The lecture's three experiments as functions that write figures (PNG) and numbers (JSON) into a folder.

Shared by the ``sclft dln …`` command and the ``scripts/dln_*.py`` figure scripts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import UsageError
from .completion import (
    BASES,
    STOP_RULES,
    TARGETS,
    CompletionProblem,
    compressed_network,
    make_problem,
    narrow_network,
    original_network,
    per_entry_loss,
    train_completion,
)
from .network import FactorNetwork, Runtime, TrainLog, run_status
from .parsimony import ParsimonyConfig, run_parsimony
from .plots import plot_completion, plot_parsimony, plot_separation, plot_separation_losses, save_figure, write_json
from .separation import SeparationConfig, run_separation

__all__ = [
    "NETWORKS",
    "AUTHORS_PRESET",
    "authors_lr",
    "CompletionConfig",
    "build_networks",
    "completion_experiment",
    "completion_ratios",
    "parsimony_experiment",
    "run_network",
    "separation_experiment",
]


def parsimony_experiment(config: ParsimonyConfig, out: Path, name: str = "parsimony") -> dict:
    """Train once, write ``{name}.png`` (SVD evolution per layer) and ``{name}.json``."""
    result = run_parsimony(config)
    setting = "whitened" if config.whitened else "non-whitened"
    title = (
        f"L={config.depth}, d={config.dim}, r={config.rank}, ε={config.scale}, {setting}, momentum={config.momentum}"
    )
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
    save_figure(
        plot_separation(by_depth, [f"L={d}" for d in depths], f"D_l by depth ({eps})"), out / "separation_depth.png"
    )
    scale_labels = [f"ε={s}" for s in scales]
    save_figure(
        plot_separation(by_scale, scale_labels, f"D_l by init scale (L={scale_depth}, η={scale_lr})"),
        out / "separation_scale.png",
    )
    save_figure(
        plot_separation_losses(by_scale, scale_labels, f"loss vs iterations (L={scale_depth}, η={scale_lr})"),
        out / "separation_loss.png",
    )
    save_figure(
        plot_separation(by_init, list(inits), f"D_l by init type (L={base.depth}, {eps})"), out / "separation_init.png"
    )
    summary = {
        "depth_sweep": [r.summary() for r in by_depth],
        "scale_sweep": [r.summary() for r in by_scale],
        "init_sweep": [r.summary() for r in by_init],
    }
    write_json(summary, out / "separation.json")
    return summary


NETWORKS = ("original", "compressed", "frozen", "narrow")  # frozen: compressed with γ = 0


@dataclass
class CompletionConfig:
    """Small defaults of the lecture's §4 setup; :data:`AUTHORS_PRESET` is the authors' setting.

    sclft's defaults (d = 200, Φ with σ ∈ [1, 2], η = 0.15 on ½‖Ω⊙(W−Φ)‖²/p, float32, stop at recovery error
    1e-4) keep a run to seconds on a CPU; the basis is the authors' (``each_side``, r̂ directions from each side
    of the first gradient). γ = 0.3 is the ratio of the outer factors' step to the cores' (the authors use 0.01:
    the same γ gives the same trajectory under either loss scaling, only η converts). At d = 200 the noise in
    Ω⊙Φ/p is as large as Φ's smallest singular value, so the gradient at init finds Φ's subspace only roughly
    and the outer factors must rotate; r̂ = 2r gives the compressed network room for that. Each network stops at
    the target (``stop``: ``recovery`` error ≤ ``target_error``, or ``train_loss`` < ``train_loss_tol`` in the
    authors' per-entry units) unless ``stop_at_target`` is off."""

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
    networks: tuple[str, ...] = NETWORKS
    factorization: bool = True
    stop_at_target: bool = True
    basis: str = "each_side"
    target: str = "haar"
    stop: str = "recovery"
    train_loss_tol: float = 1e-10
    runtime: Runtime = field(default_factory=lambda: Runtime(dtype="float32"))

    def __post_init__(self) -> None:
        for name, valid in (("basis", BASES), ("target", TARGETS), ("stop", STOP_RULES)):
            if getattr(self, name) not in valid:
                raise UsageError(f"{name} {getattr(self, name)!r}: choose one of {', '.join(valid)}")


AUTHORS_STEP = 5e3  # their step size on ½·mean over d² entries (fig_compare_iteration_time.ipynb)
# cjyaras/law-of-parsimony fig_compare_iteration_time.ipynb / fig_equiv_traj_mc.ipynb: d = 1000, r = r̂ = 5,
# 20 % observed, L = 3, ε = 1e-3, dlr (γ) = 0.01, 2000 × 100 steps checked every 100, stop at train loss < 1e-10,
# Gaussian rank-r target, float64; η = authors_lr(dim, observed)
AUTHORS_PRESET: dict = {
    "dim": 1000, "rank": 5, "observed": 0.2, "depth": 3, "scale": 1e-3, "gamma": 0.01, "rank_estimate": 5,
    "steps": 200_000, "record_every": 100, "basis": "each_side", "target": "gaussian", "stop": "train_loss",
    "train_loss_tol": 1e-10, "dtype": "float64",
}


def authors_lr(dim: int, observed: float) -> float:
    """The authors' step 5e3 on ½·mean over d² entries as a step on sclft's ½‖Ω⊙(W−Φ)‖²/p: ``5e3·p/d²``."""
    return AUTHORS_STEP * observed / dim**2


def run_network(
    kind: str, network: FactorNetwork, problem: CompletionProblem, config: CompletionConfig
) -> tuple[TrainLog, dict]:
    on_loss = config.stop == "train_loss"
    stop = {"train_loss_below" if on_loss else "stop_below": (config.train_loss_tol if on_loss else config.target_error)
            } if config.stop_at_target else {}
    log = train_completion(network, problem, config.lr, config.steps, record_every=config.record_every, **stop)
    if on_loss:
        limit = config.train_loss_tol * problem.dim**2 / problem.observed_fraction  # in sclft's loss units
        hit = next(((st, sec, cpu) for st, loss, sec, cpu in zip(log.steps, log.losses, log.seconds, log.cpu_seconds)
                    if loss < limit), None)
    else:
        hit = log.first_step_below(config.target_error)
    row = {
        "network": network.name,
        "kind": kind,
        "parameters": network.num_parameters,
        "final_recovery_error": log.metrics[-1],
        "final_loss": log.losses[-1],
        "final_train_loss_per_entry": per_entry_loss(log.losses[-1], problem),
        "iterations_to_target": hit[0] if hit else math.nan,
        "seconds_to_target": hit[1] if hit else math.nan,
        "seconds_per_iteration": log.seconds[-1] / max(log.steps[-1], 1),
        "cpu_seconds_to_target": hit[2] if hit else math.nan,
        "cpu_seconds_per_iteration": log.cpu_seconds[-1] / max(log.steps[-1], 1),
        "device": str(network.factors[0].device),
        "dtype": str(network.factors[0].dtype).removeprefix("torch."),
        **run_status(log),
    }
    return log, row


def _ratio(a: float, b: float) -> float:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else math.nan


def completion_ratios(rows: Sequence[dict], clock: str = "seconds") -> dict:
    """The lecture's comparisons as ratios of the rows present (NaN where a run missed the target); times on
    ``clock``: ``seconds`` (wall clock) or ``cpu_seconds`` (process CPU time, steadier on a shared CPU)."""
    by = {row["kind"]: row for row in rows}
    orig, comp, narrow = by.get("original"), by.get("compressed"), by.get("narrow")
    per_step, to_target = f"{clock}_per_iteration", f"{clock}_to_target"
    ratios = {"clock": clock}
    if orig and comp:
        ratios["iterations_compressed_over_original"] = _ratio(
            comp["iterations_to_target"], orig["iterations_to_target"]
        )
        ratios["speedup_per_iteration_original_over_compressed"] = _ratio(orig[per_step], comp[per_step])
        ratios["speedup_to_target_original_over_compressed"] = _ratio(orig[to_target], comp[to_target])
    if narrow and comp:
        ratios["iterations_narrow_over_compressed"] = _ratio(
            narrow["iterations_to_target"], comp["iterations_to_target"]
        )
        ratios["time_to_target_narrow_over_compressed"] = _ratio(narrow[to_target], comp[to_target])
    return ratios


def build_networks(
    problem: CompletionProblem, c: CompletionConfig, names: Sequence[str]
) -> list[tuple[str, FactorNetwork]]:
    """``(kind, network)`` for each named kind (``NETWORKS``) for ``problem``, on the config's runtime."""
    build = {
        "original": lambda: original_network(problem, c.depth, c.scale, c.seed, c.runtime),
        "compressed": lambda: compressed_network(
            problem, c.depth, c.scale, c.rank_estimate, c.gamma, c.seed, c.runtime, c.basis
        ),
        "frozen": lambda: compressed_network(
            problem, c.depth, c.scale, c.rank_estimate, 0.0, c.seed, c.runtime, c.basis
        ),
        "narrow": lambda: narrow_network(problem, c.depth, c.scale, 2 * c.rank_estimate, c.seed, c.runtime),
    }
    return [(name, build[name]()) for name in names]


def _plot_runs(runs: list[tuple[TrainLog, dict]], title: str, path: Path, problem: CompletionProblem) -> None:
    logs, labels = [log for log, _ in runs], [row["network"] for _, row in runs]
    save_figure(plot_completion(logs, labels, title, problem.fully_observed), path)


def completion_experiment(config: CompletionConfig, out: Path) -> dict:
    """Completion (the config's networks: original, compressed γ>0 and γ=0, narrow) and, unless switched
    off, factorisation (original vs compressed γ=0); writes ``completion.png``, ``factorization.png`` and
    ``completion.json``."""
    c = config
    problem = make_problem(c.dim, c.rank, c.observed, c.seed, target=c.target)
    completion = [run_network(kind, net, problem, c) for kind, net in build_networks(problem, c, c.networks)]
    factorisation = []
    if c.factorization:
        full = make_problem(c.dim, c.rank, 1.0, c.seed, target=c.target)
        for kind, net in build_networks(full, c, ("original", "frozen")):
            net.name = f"{net.name} (full observation)"
            factorisation.append(run_network(kind, net, full, c))
    head = f"d={c.dim}, r={c.rank}, r̂={c.rank_estimate}, L={c.depth}, ε={c.scale}, η={c.lr:.3g}, γ={c.gamma:g}"
    _plot_runs(completion, f"completion, {c.observed:.0%} observed, {head}", out / "completion.png", problem)
    summary = {
        "config": asdict(c),
        "completion": [row for _, row in completion],
        "ratios": completion_ratios([row for _, row in completion]),
        "factorization": [row for _, row in factorisation],
        "curves": {
            row["network"]: {"steps": log.steps, "recovery_error": log.metrics, "seconds": log.seconds}
            for log, row in completion
        },
    }
    if factorisation:
        _plot_runs(factorisation, f"factorisation (full observation), {head}", out / "factorization.png", full)
        orig_log, comp_log = (log for log, _ in factorisation)
        summary["factorization_max_error_gap"] = max(abs(a - b) for a, b in zip(orig_log.metrics, comp_log.metrics))
    write_json(summary, out / "completion.json")
    return summary
