"""``sclft dln parsimony|separation|completion --out DIR``: run one of the lecture's experiments, write PNGs + JSON.

Every experiment takes ``--device cpu|cuda|auto``, ``--dtype float32|float64`` (float64 for parsimony and
separation, whose claims are exact to ~1e-15; float32 for completion), a budget per training run
(``--max-steps``, ``--max-seconds``) that ends it with what was reached (recorded as ``ended_by`` in the JSON
and printed), and a progress bar on stderr (``--no-progress`` hides it)."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..cli_format import HelpFormatter
from ..errors import UsageError
from ..run_folder import check_out_folder
from .completion import BASES, STOP_RULES, TARGETS
from .experiments import (
    AUTHORS_PRESET,
    NETWORKS,
    CompletionConfig,
    authors_lr,
    completion_experiment,
    parsimony_experiment,
    separation_experiment,
)
from .network import DEVICES, DTYPES, Runtime
from .parsimony import ParsimonyConfig
from .separation import SeparationConfig

__all__ = ["add_parser", "check_flags"]

SEED_MAX = 2**63 - 2  # the init draws with seed + 1, which torch.Generator must still accept
# (flag, test of one value, what is valid); a flag with nargs="+" is tested value by value
Rule = tuple[str, Callable[[Any], bool], str]


def _int(low: int, high: int | None = None) -> tuple[Callable[[Any], bool], str]:
    return (
        lambda v: isinstance(v, int) and low <= v and (high is None or v <= high),
        f"an integer >= {low}" if high is None else f"an integer from {low} to {high}",
    )


def _positive() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def _non_negative() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def _optional(test: tuple[Callable[[Any], bool], str]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v is None or test[0](v)), test[1]


COMMON: list[Rule] = [
    ("--seed", *_int(0, SEED_MAX)),
    ("--max-steps", *_optional(_int(1))),
    ("--max-seconds", *_optional(_positive())),
]
RULES: dict[str, list[Rule]] = {
    "parsimony": [
        ("--depth", *_int(1)),
        ("--dim", *_int(1)),
        ("--rank", *_int(1)),
        ("--samples", *_int(1)),
        ("--scale", *_positive()),
        ("--lr", *_positive()),
        ("--steps", *_int(1)),
        ("--weight-decay", *_non_negative()),
        ("--momentum", lambda v: math.isfinite(v) and 0 <= v < 1, "a number in [0, 1)"),
    ],
    "separation": [
        ("--classes", *_int(2)),
        ("--per-class", *_int(2)),
        ("--width", *_int(1)),
        ("--depths", *_int(2)),
        ("--scale", *_positive()),
        ("--lr", *_positive()),
        ("--steps", *_int(1)),
        ("--scales", *_positive()),
        ("--scale-depth", *_int(2)),
        ("--scale-lr", *_positive()),
    ],
    "completion": [
        ("--dim", *_int(2)),
        ("--rank", *_int(1)),
        ("--rank-estimate", *_int(1)),
        ("--depth", *_int(1)),
        ("--observed", lambda v: math.isfinite(v) and 0 < v <= 1, "a fraction in (0, 1]"),
        ("--scale", *_positive()),
        ("--lr", *_positive()),
        ("--gamma", *_non_negative()),
        ("--steps", *_int(1)),
        ("--target-error", *_positive()),
        ("--train-loss-tol", *_positive()),
        ("--record-every", *_int(1)),
    ],
}


def _joint_rules(command: str, a: argparse.Namespace) -> list[tuple[bool, str]]:
    """Limits that tie flags together: (holds, message)."""
    if command == "parsimony":
        return [
            (
                4 * a.rank < a.dim,
                f"--rank must be below --dim / 4 (the 2·rank singular values that move must be fewer "
                f"than half of the --dim ones), got --rank {a.rank} with --dim {a.dim}",
            ),
            (
                a.samples >= a.dim,
                f"--samples must be >= --dim (the inputs need full row rank), got --samples "
                f"{a.samples} with --dim {a.dim}",
            ),
        ]
    if command == "separation":
        return [
            (
                a.width > 2 * a.classes,
                f"--width must be > 2·--classes (the theorem's unchanged spectrum is the "
                f"width − 2K trailing singular values), got --width {a.width} with "
                f"--classes {a.classes}",
            )
        ]
    return [
        (
            a.rank <= a.rank_estimate,
            f"--rank-estimate must be >= --rank (r̂ ≥ r), got --rank-estimate {a.rank_estimate} with --rank {a.rank}",
        ),
        (
            2 * a.rank_estimate <= a.dim,
            f"--rank-estimate must be at most --dim / 2 (the compressed width is "
            f"2·r̂), got --rank-estimate {a.rank_estimate} with --dim {a.dim}",
        ),
        (
            round(a.observed * a.dim * a.dim) >= 1,
            f"--observed {a.observed} observes no entry of a --dim {a.dim} matrix; observe at least one",
        ),
    ]


def check_flags(command: str, args: argparse.Namespace) -> None:
    """Every flag of ``sclft dln COMMAND`` in its valid range; a ``ValueError`` names the flag, the valid
    range and the value given (the CLI turns it into exit code 2)."""
    for flag, ok, valid in COMMON + RULES[command]:
        value = getattr(args, flag[2:].replace("-", "_"))
        if not all(ok(v) for v in (value if isinstance(value, list) else [value])):
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            raise UsageError(f"{flag} must be {valid}{' (each value)' if isinstance(value, list) else ''}, got {shown}")
    for holds, message in _joint_rules(command, args):
        if not holds:
            raise UsageError(message)
    if command == "completion":
        _check_memory(args)
    check_out_folder(args.out)
    _runtime(args).torch_device  # noqa: B018 -- --device cuda without a GPU fails here, before any work


def completion_bytes(dim: int, depth: int) -> int:
    """Memory the original (``dim``-wide) completion network needs, about: (5·depth + 3) ``dim×dim`` float64
    matrices — its weights (built in float64), their gradients, the products between them, target, mask and
    residual. Measured: peak RSS of ``--networks original --no-factorization --max-steps 3 --device cpu`` grew by
    1018 MiB from --dim 3000 to 4000 at depth 3, 145 bytes per added entry; this formula gives 144."""
    return dim * dim * 8 * (5 * depth + 3)


def available_bytes() -> int | None:
    """Memory available to a new allocation on this machine (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def _check_memory(args: argparse.Namespace) -> None:
    """``sclft dln completion``: refuse a --dim whose networks cannot fit in memory, before allocating any."""
    needed, free = completion_bytes(args.dim, args.depth), available_bytes()
    if free is not None and needed > free:
        raise UsageError(f"--dim {args.dim} --depth {args.depth}: the original network needs about "
                         f"{needed / 2**30:,.1f} GiB ({args.depth} weights of {args.dim}×{args.dim}, their gradients "
                         f"and products, in float64), but {free / 2**30:,.1f} GiB are available; use a smaller --dim")


def _runtime(args: argparse.Namespace) -> Runtime:
    return Runtime(
        device=args.device,
        dtype=args.dtype,
        max_steps=args.max_steps,
        max_seconds=args.max_seconds,
        progress=not args.no_progress,
    )


def _notes(rows: list[dict]) -> None:
    """One line per training run on how it ended; a budget that ended a run is said so."""
    for row in rows:
        print(("BUDGET " if row["budget_ended"] else "") + row["stop_note"])


def _parsimony(args: argparse.Namespace) -> int:
    check_flags("parsimony", args)
    config = ParsimonyConfig(
        depth=args.depth,
        dim=args.dim,
        rank=args.rank,
        samples=args.samples,
        scale=args.scale,
        lr=args.lr,
        steps=args.steps,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        whitened=not args.no_whiten,
        init=args.init,
        seed=args.seed,
        runtime=_runtime(args),
    )
    summary = parsimony_experiment(config, Path(args.out))
    _notes([summary])
    for i, layer in enumerate(summary["layers"], 1):
        print(
            f"layer {i}: rho={layer['rho']:.4g} trailing spread={layer['trailing_relative_spread']:.1e} "
            f"angles right/left={layer['trailing_right_angle_rad']:.1e}/{layer['trailing_left_angle_rad']:.1e} rad"
        )
    return 0


def _separation(args: argparse.Namespace) -> int:
    check_flags("separation", args)
    base = SeparationConfig(
        num_classes=args.classes,
        per_class=args.per_class,
        width=args.width,
        depth=args.depths[0],
        scale=args.scale,
        lr=args.lr,
        steps=args.steps,
        seed=args.seed,
        runtime=_runtime(args),
    )
    summary = separation_experiment(
        base,
        Path(args.out),
        depths=args.depths,
        scales=args.scales,
        scale_depth=args.scale_depth,
        scale_lr=args.scale_lr,
    )
    _notes([run for group in ("depth_sweep", "scale_sweep", "init_sweep") for run in summary[group]])
    for group in ("depth_sweep", "scale_sweep", "init_sweep"):
        for run in summary[group]:
            cfg = run["config"]
            print(
                f"{group}: L={cfg['depth']} ε={cfg['scale']} init={cfg['init']}: mean D_(l+1)/D_l="
                f"{run['mean_decay_ratio']:.4f} (bound {run['bound']:.4f}), final loss {run['final_loss']:.1e}"
            )
    return 0


class _Given(argparse.Action):
    """Store the value and remember the flag was given (``--preset`` fills only the flags not given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def apply_preset(args: argparse.Namespace) -> None:
    """``--preset authors``: the authors' setting (:data:`AUTHORS_PRESET`, η from :func:`authors_lr`) for every
    flag not given on the command line."""
    if args.preset != "authors":
        return
    given = getattr(args, "given", set())
    for name, value in AUTHORS_PRESET.items():
        if name not in given:
            setattr(args, name, value)
    if "lr" not in given:
        args.lr = authors_lr(args.dim, args.observed)


def _completion(args: argparse.Namespace) -> int:
    apply_preset(args)
    check_flags("completion", args)
    config = CompletionConfig(
        dim=args.dim,
        rank=args.rank,
        observed=args.observed,
        depth=args.depth,
        scale=args.scale,
        lr=args.lr,
        gamma=args.gamma,
        rank_estimate=args.rank_estimate,
        steps=args.steps,
        target_error=args.target_error,
        record_every=args.record_every,
        basis=args.basis,
        target=args.target,
        stop=args.stop,
        train_loss_tol=args.train_loss_tol,
        seed=args.seed,
        networks=tuple(dict.fromkeys(args.networks)),
        factorization=not args.no_factorization,
        stop_at_target=not args.keep_going,
        runtime=_runtime(args),
    )
    summary = completion_experiment(config, Path(args.out))
    rows = summary["completion"] + summary["factorization"]
    _notes(rows)
    keys = ("network", "final_recovery_error", "iterations_to_target", "seconds_to_target", "seconds_per_iteration")
    for row in rows:
        print(json.dumps({k: row[k] for k in keys}))
    if summary["ratios"]:
        print(json.dumps(summary["ratios"]))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``dln`` and its three sub-commands on the top-level ``sclft`` parser."""
    dln = subparsers.add_parser("dln", help="deep-linear-network theory lab (the lecture §2–4)", description=__doc__)
    commands = dln.add_subparsers(dest="dln_command", metavar="EXPERIMENT", required=True)

    def leaf(name: str, help_text: str, func, dtype: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, formatter_class=HelpFormatter)
        parser.add_argument("--out", required=True, help="folder for the PNG figures and the JSON numbers")
        parser.add_argument("--seed", type=int, default=0, help="seed of the data and the initialisation")
        parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available, else cpu")
        parser.add_argument("--dtype", choices=tuple(DTYPES), default=dtype, action=_Given,
                            help="floating-point precision")
        parser.add_argument(
            "--max-steps",
            type=int,
            default=None,
            help="budget: end each training run after this many steps (recorded as ended_by)",
        )
        parser.add_argument(
            "--max-seconds",
            type=float,
            default=None,
            help="budget: end each training run after this many wall-clock seconds",
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
        parser.set_defaults(func=func)
        return parser

    p = leaf("parsimony", "SVD of each layer during GD: only 2r directions move", _parsimony, "float64")
    defaults = ParsimonyConfig()
    p.add_argument("--depth", type=int, default=defaults.depth, help="layers L of the network")
    p.add_argument("--dim", type=int, default=defaults.dim, help="input = output = layer width d")
    p.add_argument("--rank", type=int, default=defaults.rank, help="rank r of the target map")
    p.add_argument("--samples", type=int, default=defaults.samples, help="training samples N (>= --dim)")
    p.add_argument("--scale", type=float, default=defaults.scale, help="init scale ε")
    p.add_argument("--lr", type=float, default=defaults.lr, help="GD step size η")
    p.add_argument("--steps", type=int, default=defaults.steps, help="GD steps")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="weight decay λ")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="heavy-ball momentum")
    p.add_argument("--init", choices=("orthogonal", "normal", "uniform"), default=defaults.init,
                   help="initialisation of each layer (scaled by --scale)")
    p.add_argument("--no-whiten", action="store_true", help="Gaussian inputs instead of XXᵀ = I")

    s = leaf("separation", "per-layer separation D_l of a trained DLN", _separation, "float64")
    sep = SeparationConfig()
    s.add_argument("--classes", type=int, default=sep.num_classes, help="classes K")
    s.add_argument("--per-class", type=int, default=sep.per_class, help="samples per class")
    s.add_argument("--width", type=int, default=sep.width, help="input dimension = layer width d")
    s.add_argument(
        "--depths", type=int, nargs="+", default=[6, 8, 10], help="depth sweep (the first is used for the init sweep)"
    )
    s.add_argument("--scale", type=float, default=sep.scale, help="ε of the depth and init sweeps")
    s.add_argument("--lr", type=float, default=sep.lr, help="GD step size η")
    s.add_argument("--steps", type=int, default=2000, help="GD steps of each run")
    s.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.25, 0.125], help="ε sweep")
    s.add_argument("--scale-depth", type=int, default=4, help="depth of the ε sweep")
    s.add_argument("--scale-lr", type=float, default=10.0, help="step size of the ε sweep")

    c = leaf("completion", "original vs compressed vs narrow DLN for matrix completion", _completion, "float32")
    comp = CompletionConfig()
    c.add_argument(
        "--preset",
        choices=("sclft", "authors"),
        default="sclft",
        help="authors: their setting (cjyaras/law-of-parsimony: d=1000, r=r̂=5, 20%% observed, ε=1e-3, γ=0.01, "
        "η=5e3·p/d² here, Gaussian rank-r target, stop at train loss < 1e-10 checked every 100 steps, float64) "
        "for every flag not given",
    )
    for flag, kind, help_text in (
        ("--dim", int, "side d of the d×d matrix (memory: d², checked first)"),
        ("--rank", int, "rank r of the matrix to recover"),
        ("--rank-estimate", int, "r̂ ≥ r (r̂ directions from each side: the compressed width is 2r̂)"),
        ("--observed", float, "observed fraction p of the entries"),
        ("--depth", int, "layers L"),
        ("--scale", float, "init scale ε"),
        ("--lr", float, "step η on ½‖Ω⊙(W−Φ)‖²/p (the authors' η on ½·mean over d² entries is η·p/d² here)"),
        ("--gamma", float, "outer-factor step ratio γ (the authors: 0.01)"),
        ("--steps", int, "GD steps of each network"),
        ("--target-error", float, "recovery error of --stop recovery"),
        ("--train-loss-tol", float, "train loss ½·mean over d² entries of --stop train_loss (the authors' units)"),
        ("--record-every", int, "record (and check the stop rule) every this many steps"),
    ):
        name = flag[2:].replace("-", "_")
        c.add_argument(flag, type=kind, default=getattr(comp, name), action=_Given, help=help_text)
    for name, choices, help_text in (
        ("basis", BASES, "compressed V: each_side = r̂ top singular directions from each side of the first gradient "
         "(the authors' compute_factor); stacked = top 2r̂ of [G; GᵀW₁/ε] (sclft's earlier basis)"),
        ("target", TARGETS, "Φ: haar = Haar factors with σ evenly in [1, 2]; gaussian = rank-r truncation of a "
         "Gaussian (authors)"),
        ("stop", STOP_RULES, "recovery: recovery error ≤ --target-error; train_loss: train loss < --train-loss-tol "
         "(authors)"),
    ):
        c.add_argument(f"--{name}", choices=choices, default=getattr(comp, name), action=_Given, help=help_text)
    c.add_argument(
        "--networks",
        nargs="+",
        choices=NETWORKS,
        default=list(NETWORKS),
        help="completion networks to train (frozen: compressed with γ = 0; narrow: width 2·r̂)",
    )
    c.add_argument(
        "--no-factorization", action="store_true", help="skip the full-observation original-vs-compressed (γ = 0) pair"
    )
    c.add_argument("--keep-going", action="store_true", help="train all --steps even after reaching --target-error")
    return dln
