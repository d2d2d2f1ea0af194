"""Deep linear networks as lists of factor matrices, their initialisations and full-batch GD.

A network is a list ``factors = [W_1, …, W_L]`` (applied right to left: ``f(x) = W_L ⋯ W_1 x``).
Everything is float64 on CPU. Gradient descent is ``torch.optim.SGD``, which for momentum 0 is
exactly the seed's update ``W ← (1−ηλ)W − η∇ℓ``; momentum is heavy ball (``v ← μv + ∇ℓ + λW``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = [
    "DTYPE",
    "INIT_KINDS",
    "generator",
    "random_orthogonal",
    "init_weight",
    "init_network",
    "end_to_end",
    "layer_outputs",
    "FactorNetwork",
    "GDConfig",
    "TrainLog",
    "train",
]

DTYPE = torch.float64
INIT_KINDS = ("orthogonal", "normal", "uniform")


def generator(seed: int) -> torch.Generator:
    """A seeded CPU generator (every random draw in ``sclft.dln`` goes through one)."""
    return torch.Generator().manual_seed(int(seed))


def random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """Haar-distributed n×n orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def init_weight(rows: int, cols: int, scale: float, kind: str, gen: torch.Generator) -> torch.Tensor:
    """One ``rows×cols`` weight of scale ε.

    ``orthogonal``: ``WᵀW = ε²I`` (tall) or ``WWᵀ = ε²I`` (wide). ``normal`` and ``uniform`` have
    i.i.d. entries with variance ``ε²·min(rows, cols)/(rows·cols)``, so ``E‖W‖²_F`` equals the
    orthogonal one's ``ε²·min(rows, cols)``.
    """
    if kind == "orthogonal":
        return scale * random_orthogonal(max(rows, cols), gen)[:rows, :cols]
    std = scale * math.sqrt(min(rows, cols) / (rows * cols))
    if kind == "normal":
        return std * torch.randn(rows, cols, generator=gen, dtype=DTYPE)
    if kind == "uniform":  # U(−a, a) has variance a²/3
        return std * math.sqrt(3.0) * (2.0 * torch.rand(rows, cols, generator=gen, dtype=DTYPE) - 1.0)
    raise ValueError(f"unknown init kind {kind!r}; choose one of {INIT_KINDS}")


def init_network(dims: Sequence[int], scale: float, kind: str = "orthogonal", seed: int = 0) -> list[torch.Tensor]:
    """Weights ``W_l`` of shape ``dims[l] × dims[l−1]`` for ``l = 1..L`` (``dims = [d_0, …, d_L]``)."""
    gen = generator(seed)
    return [init_weight(dims[i + 1], dims[i], scale, kind, gen) for i in range(len(dims) - 1)]


def end_to_end(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W_L ⋯ W_1`` multiplied from the input side (cheap when the first factor is wide and short)."""
    product = factors[0]
    for weight in factors[1:]:
        product = weight @ product
    return product


def layer_outputs(factors: Sequence[torch.Tensor], inputs: torch.Tensor) -> list[torch.Tensor]:
    """``[X, W_1X, W_2W_1X, …, W_{L:1}X]`` for inputs ``X`` of shape ``d_0 × N``."""
    outputs = [inputs]
    for weight in factors:
        outputs.append(weight @ outputs[-1])
    return outputs


@dataclass
class FactorNetwork:
    """Trainable factors with a per-factor learning-rate multiplier (γ for compressed outer factors)."""

    factors: list[torch.Tensor]
    lr_scales: list[float] = field(default_factory=list)
    name: str = "network"

    def __post_init__(self) -> None:
        self.factors = [f.detach().clone().to(DTYPE).requires_grad_(True) for f in self.factors]
        if not self.lr_scales:
            self.lr_scales = [1.0] * len(self.factors)
        if len(self.lr_scales) != len(self.factors):
            raise ValueError("need one learning-rate scale per factor")

    def product(self) -> torch.Tensor:
        return end_to_end(self.factors)

    @property
    def num_parameters(self) -> int:
        return sum(f.numel() for f in self.factors)

    def weights(self) -> list[torch.Tensor]:
        """Detached copies of the factors."""
        return [f.detach().clone() for f in self.factors]


@dataclass
class GDConfig:
    """Full-batch gradient descent: step η, weight decay λ, heavy-ball momentum μ."""

    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass
class TrainLog:
    """What ``train`` recorded: step index, loss, optional metric and elapsed seconds per record."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metrics: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def first_step_below(self, threshold: float) -> tuple[int, float] | None:
        """(step, seconds) of the first record whose metric is ≤ threshold, or None."""
        for step, metric, sec in zip(self.steps, self.metrics, self.seconds):
            if metric <= threshold:
                return step, sec
        return None


def train(
    network: FactorNetwork,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    config: GDConfig,
    steps: int,
    *,
    record_every: int = 1,
    metric: Callable[[list[torch.Tensor]], float] | None = None,
    stop_below: float | None = None,
    on_record: Callable[[int, list[torch.Tensor]], None] | None = None,
) -> TrainLog:
    """Run ``steps`` GD steps on ``loss_fn(factors)``; record at step 0, every ``record_every`` and the end.

    ``metric`` (e.g. a recovery error) is evaluated at each record; training stops early once it is
    ≤ ``stop_below``. Time spent in ``metric`` and ``on_record`` is excluded from ``seconds``.
    """
    groups = [
        {"params": [f], "lr": config.lr * scale} for f, scale in zip(network.factors, network.lr_scales)
    ]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    log = TrainLog()
    elapsed = 0.0

    def record(step: int, loss_value: float) -> bool:
        log.steps.append(step)
        log.losses.append(loss_value)
        log.seconds.append(elapsed)
        with torch.no_grad():
            value = float(metric(network.factors)) if metric else math.nan
            log.metrics.append(value)
            if on_record:
                on_record(step, network.factors)
        return stop_below is not None and value <= stop_below

    with torch.no_grad():
        initial_loss = float(loss_fn(network.factors))
    if record(0, initial_loss):
        return log
    for step in range(1, steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network.factors)
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        if step % record_every == 0 or step == steps:
            with torch.no_grad():
                current = float(loss_fn(network.factors))
            if not math.isfinite(current):
                record(step, current)
                break
            if record(step, current):
                break
    return log
