"""Deep linear networks as lists of factor matrices, their initialisations and full-batch GD.

A network is a list ``factors = [W_1, …, W_L]`` (applied right to left: ``f(x) = W_L ⋯ W_1 x``).
Every random draw and every initialisation is made in float64 on the CPU (so a seed gives the same network
on every device); training then runs on a :class:`Runtime`'s device and dtype. Gradient descent is
``torch.optim.SGD``, which for momentum 0 is exactly the lecture's update ``W ← (1−ηλ)W − η∇ℓ``; momentum is
heavy ball (``v ← μv + ∇ℓ + λW``). ``train`` shows a tqdm bar (current loss / error, ETA) when asked and
stops at a :class:`Runtime`'s step or time budget, recording why it stopped (``TrainLog.ended_by``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..devices import resolve_device
from ..errors import UsageError
from ..progress import progress_bar

__all__ = [
    "DTYPE",
    "DTYPES",
    "DEVICES",
    "Runtime",
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
    "run_status",
    "train",
]

DTYPE = torch.float64  # of every draw and initialisation; training casts to Runtime.dtype
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("auto", "cpu", "cuda")
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
    raise UsageError(f"unknown init kind {kind!r}; choose one of {INIT_KINDS}")


def init_network(dims: Sequence[int], scale: float, kind: str = "orthogonal", seed: int = 0) -> list[torch.Tensor]:
    """Weights ``W_l`` of shape ``dims[l] × dims[l−1]`` for ``l = 1..L`` (``dims = [d_0, …, d_L]``)."""
    gen = generator(seed)
    return [init_weight(dims[i + 1], dims[i], scale, kind, gen) for i in range(len(dims) - 1)]


@dataclass
class Runtime:
    """Where and how long a run trains: device (``auto`` = cuda when available), dtype, optional budgets
    (``max_steps``, ``max_seconds`` of wall clock per training run) and a progress bar on stderr."""

    device: str = "auto"
    dtype: str = "float64"
    max_steps: int | None = None
    max_seconds: float | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise UsageError(f"device {self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise UsageError(f"dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")

    @property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` on this device, floating tensors in this dtype."""
        if tensor.is_floating_point():
            return tensor.to(device=self.torch_device, dtype=self.torch_dtype)
        return tensor.to(device=self.torch_device)


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
    """Trainable factors with a per-factor learning-rate multiplier (γ for compressed outer factors), on the
    runtime's device and dtype (default: float64 on the CPU)."""

    factors: list[torch.Tensor]
    lr_scales: list[float] = field(default_factory=list)
    name: str = "network"
    runtime: Runtime = field(default_factory=lambda: Runtime(device="cpu"))

    def __post_init__(self) -> None:
        self.factors = [self.runtime.to(f.detach()).clone().requires_grad_(True) for f in self.factors]
        if not self.lr_scales:
            self.lr_scales = [1.0] * len(self.factors)
        if len(self.lr_scales) != len(self.factors):
            raise UsageError("need one learning-rate scale per factor")

    def product(self) -> torch.Tensor:
        return end_to_end(self.factors)

    @property
    def num_parameters(self) -> int:
        return sum(f.numel() for f in self.factors)

    def weights(self) -> list[torch.Tensor]:
        """Detached copies of the factors (on the runtime's device and dtype)."""
        return [f.detach().clone() for f in self.factors]

    def cpu_weights(self) -> list[torch.Tensor]:
        """Detached float64 CPU copies of the factors, for analysis (SVDs, angles) in full precision."""
        return [f.detach().to("cpu", DTYPE) for f in self.factors]


@dataclass
class GDConfig:
    """Full-batch gradient descent: step η, weight decay λ, heavy-ball momentum μ."""

    lr: float
    weight_decay: float = 0.0
    momentum: float = 0.0


@dataclass
class TrainLog:
    """What ``train`` recorded: step index, loss, optional metric and elapsed seconds per record, and why it
    stopped: ``steps`` (all planned steps), ``target`` (``stop_below`` reached), ``diverged`` (non-finite
    loss), ``max_steps`` / ``max_seconds`` (the runtime's budget ended it; ``planned_steps`` were asked)."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    metrics: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    ended_by: str = "steps"
    name: str = "run"
    planned_steps: int = 0
    wall_seconds: float = 0.0

    @property
    def budget_ended(self) -> bool:
        return self.ended_by in ("max_steps", "max_seconds")

    def stop_note(self) -> str:
        """One line saying how the run ended and what it reached."""
        name = self.name
        reached = f"loss {self.losses[-1]:.3g}" + (
            "" if math.isnan(self.metrics[-1]) else f", error {self.metrics[-1]:.3g}"
        )
        if self.budget_ended:
            flag = "--max-steps" if self.ended_by == "max_steps" else "--max-seconds"
            return (
                f"{name}: budget reached ({flag}) at step {self.steps[-1]} of {self.planned_steps} "
                f"after {self.wall_seconds:.3g} s; reached {reached}"
            )
        what = {"steps": "all steps run", "target": "target reached", "diverged": "diverged (non-finite loss)"}
        return (
            f"{name}: {what[self.ended_by]} at step {self.steps[-1]} after {self.wall_seconds:.3g} s; reached {reached}"
        )

    def first_step_below(self, threshold: float) -> tuple[int, float, float] | None:
        """(step, seconds, CPU seconds) of the first record whose metric is ≤ threshold, or None."""
        for step, metric, sec, cpu in zip(self.steps, self.metrics, self.seconds, self.cpu_seconds):
            if metric <= threshold:
                return step, sec, cpu
        return None


def run_status(log: TrainLog | None) -> dict:
    """The fields every result row carries about how its run ended (empty without a log)."""
    if log is None:
        return {}
    return {
        "ended_by": log.ended_by,
        "steps_run": log.steps[-1],
        "planned_steps": log.planned_steps,
        "budget_ended": log.budget_ended,
        "wall_seconds": log.wall_seconds,
        "stop_note": log.stop_note(),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels are asynchronous: time them to completion
        torch.cuda.synchronize(device)


def train(
    network: FactorNetwork,
    loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
    config: GDConfig,
    steps: int,
    *,
    record_every: int = 1,
    metric: Callable[[list[torch.Tensor]], float] | None = None,
    stop_below: float | None = None,
    loss_below: float | None = None,
    on_record: Callable[[int, list[torch.Tensor]], None] | None = None,
) -> TrainLog:
    """Run ``steps`` GD steps on ``loss_fn(factors)``; record at step 0, every ``record_every`` and the end.

    ``metric`` (e.g. a recovery error) is evaluated at each record; training stops early once it is
    ≤ ``stop_below`` or the recorded loss is < ``loss_below`` (ended_by ``target`` either way), or when the
    network's runtime budget (``max_steps``, ``max_seconds`` of wall clock) is spent — the last step is then
    recorded too. Time spent in ``metric`` and ``on_record`` is excluded from ``seconds`` (wall clock) and
    ``cpu_seconds`` (this process's CPU time: on a shared CPU, the cost of the steps themselves), not from the
    wall-clock budget.
    """
    runtime, device = network.runtime, network.factors[0].device
    groups = [{"params": [f], "lr": config.lr * scale} for f, scale in zip(network.factors, network.lr_scales)]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    log = TrainLog(name=network.name, planned_steps=steps)
    elapsed, cpu_elapsed, wall_start = 0.0, 0.0, time.perf_counter()
    last = steps if runtime.max_steps is None else min(steps, runtime.max_steps)
    bar = progress_bar(total=last, desc=network.name, progress=runtime.progress, leave=True, mininterval=0.5,
                       dynamic_ncols=True)

    def record(step: int, loss_value: float) -> bool:
        log.steps.append(step)
        log.losses.append(loss_value)
        log.seconds.append(elapsed)
        log.cpu_seconds.append(cpu_elapsed)
        with torch.no_grad():
            value = float(metric(network.factors)) if metric else math.nan
            log.metrics.append(value)
            if on_record:
                on_record(step, network.factors)
        bar.set_postfix_str(
            f"loss={loss_value:.3g}" + ("" if math.isnan(value) else f" error={value:.3g}"), refresh=False
        )
        return (stop_below is not None and value <= stop_below) or (loss_below is not None and loss_value < loss_below)

    with torch.no_grad():
        initial_loss = float(loss_fn(network.factors))
    if record(0, initial_loss):
        log.ended_by = "target"
    for step in range(1, last + 1):
        if log.ended_by == "target":
            break
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network.factors)
        loss.backward()
        optimizer.step()
        _sync(device)
        elapsed += time.perf_counter() - start
        cpu_elapsed += time.process_time() - cpu_start
        bar.update(1)
        out_of_time = runtime.max_seconds is not None and time.perf_counter() - wall_start >= runtime.max_seconds
        if step % record_every == 0 or step == last or out_of_time:
            with torch.no_grad():
                current = float(loss_fn(network.factors))
            if not math.isfinite(current):
                record(step, current)
                log.ended_by = "diverged"
                break
            if record(step, current):
                log.ended_by = "target"
                break
        if out_of_time and step < last:
            log.ended_by = "max_seconds"
            break
    else:
        if last < steps:
            log.ended_by = "max_steps"
    bar.close()
    log.wall_seconds = time.perf_counter() - wall_start
    return log
