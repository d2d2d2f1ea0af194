"""Law of parsimony in GD for deep linear networks (the lecture §2, Yaras et al. 2023).

With ε-orthogonal init and whitened inputs, GD on ``½‖W_{L:1}X − Y‖²_F`` with ``rank(YXᵀ) = r``
only changes a ``2r``-dimensional singular subspace of each square layer: the trailing ``d − 2r``
singular values stay equal (one ``ρ(t)``) and their singular vectors never move.

Because every vector is a singular vector of ``εQ``, "initial singular vectors" are taken after the
first GD step, when the ``2r`` moving directions have split off. Trailing vectors are compared as a
subspace (their singular values are equal, so individual vectors are arbitrary); leading ones one by one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch

from ..errors import UsageError
from .network import (
    DTYPE,
    FactorNetwork,
    GDConfig,
    Runtime,
    TrainLog,
    generator,
    init_network,
    layer_outputs,
    random_orthogonal,
    run_status,
    train,
)

__all__ = [
    "ParsimonyConfig",
    "ParsimonyResult",
    "make_regression_data",
    "split_spectrum",
    "max_principal_angle",
    "run_parsimony",
]


@dataclass
class ParsimonyConfig:
    """The lecture's setup: L = 3, d_x = d_y = 30, rank(Y) = 3. float64 by default: the claims are exact equalities
    (trailing spread ~1e-15), which float32 blurs to ~1e-6."""

    depth: int = 3
    dim: int = 30
    rank: int = 3
    samples: int = 60
    scale: float = 0.1
    lr: float = 0.1
    steps: int = 600
    weight_decay: float = 0.0
    momentum: float = 0.0
    whitened: bool = True
    init: str = "orthogonal"
    seed: int = 0
    runtime: Runtime = field(default_factory=Runtime)


def make_regression_data(
    dim: int, rank: int, samples: int, whitened: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs X (d×N) and targets Y = M X with ``rank(M) = rank`` (singular values in [1, 2]).

    Whitened: X has orthonormal rows (``XXᵀ = I``). Otherwise X is Gaussian with entries of variance
    1/N (``XXᵀ ≈ I`` only on average; its condition number is far from 1 when N ≈ 2d)."""
    if samples < dim:
        raise UsageError("need samples ≥ dim for whitened inputs")
    gen = generator(seed)
    if whitened:
        inputs = random_orthogonal(samples, gen)[:dim]
    else:
        inputs = torch.randn(dim, samples, generator=gen, dtype=DTYPE) / math.sqrt(samples)
    left = random_orthogonal(dim, gen)[:, :rank]
    right = random_orthogonal(dim, gen)[:, :rank]
    mixing = (left * torch.linspace(2.0, 1.0, rank, dtype=DTYPE)) @ right.T
    return inputs, mixing @ inputs


def split_spectrum(values: torch.Tensor, moved: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``moved`` singular values farthest from the median (sorted by value, descending)
    and of the remaining cluster around it. Needs ``moved < len(values)/2``."""
    order = torch.argsort((values - values.median()).abs(), stable=True)
    trailing, leading = order[: len(values) - moved], order[len(values) - moved :]
    return leading[torch.argsort(values[leading], descending=True)], trailing


def max_principal_angle(basis_a: torch.Tensor, basis_b: torch.Tensor) -> float:
    """Largest principal angle (radians) between the column spans of two orthonormal bases,
    computed through its sine ``‖(I − AAᵀ)B‖₂`` so that tiny angles keep full precision."""
    residual = basis_b - basis_a @ (basis_a.T @ basis_b)
    return float(torch.asin(torch.linalg.matrix_norm(residual, ord=2).clamp(max=1.0)))


def _vector_angles(
    vectors: torch.Tensor,
    leading: torch.Tensor,
    trailing: torch.Tensor,
    ref_vectors: torch.Tensor,
    ref_leading: torch.Tensor,
    ref_trailing: torch.Tensor,
) -> torch.Tensor:
    """Angle of each singular vector (columns, sorted by value) to its reference counterpart:
    leading vectors to the reference leading vector of the same rank, trailing ones to the reference
    trailing subspace."""
    angles = torch.zeros(vectors.shape[1], dtype=DTYPE)
    cosines = (vectors[:, leading] * ref_vectors[:, ref_leading]).sum(0).abs().clamp(max=1.0)
    angles[leading] = torch.acos(cosines)
    basis = ref_vectors[:, ref_trailing]
    outside = vectors[:, trailing] - basis @ (basis.T @ vectors[:, trailing])
    angles[trailing] = torch.asin(outside.norm(dim=0).clamp(max=1.0))
    return angles


@dataclass
class ParsimonyResult:
    """Per-record singular values and angles, shape (records, layers, d); summary numbers per layer."""

    config: ParsimonyConfig
    steps: list[int]
    losses: list[float]
    singular_values: torch.Tensor
    right_angles: torch.Tensor
    left_angles: torch.Tensor
    layers: list[dict] = field(default_factory=list)
    log: TrainLog | None = None

    def summary(self) -> dict:
        return {
            "config": asdict(self.config),
            "final_loss": self.losses[-1],
            "layers": self.layers,
            **run_status(self.log),
        }


def _layer_report(
    initial: torch.Tensor, reference: torch.Tensor, final: torch.Tensor, moved: int, scale: float
) -> dict:
    """Trailing equality / invariance and leading movement for one layer."""
    u_ref, s_ref, vh_ref = torch.linalg.svd(reference)
    u_end, s_end, vh_end = torch.linalg.svd(final)
    _, trail_ref = split_spectrum(s_ref, moved)
    lead_end, trail_end = split_spectrum(s_end, moved)
    trailing = s_end[trail_end]
    rho = float(trailing.mean())
    right_end = vh_end.T[:, trail_end]
    # On the trailing subspace the layer must still act as its (rescaled) initial map.
    unchanged_map = final @ right_end - (rho / scale) * (initial @ right_end)
    return {
        "rho": rho,
        "trailing_relative_spread": float((trailing.max() - trailing.min()) / trailing.mean()),
        "trailing_right_angle_rad": max_principal_angle(vh_ref.T[:, trail_ref], right_end),
        "trailing_left_angle_rad": max_principal_angle(u_ref[:, trail_ref], u_end[:, trail_end]),
        "trailing_map_change": float(unchanged_map.norm() / (rho * math.sqrt(len(trail_end)))),
        "leading_singular_values": s_end[lead_end].tolist(),
        "leading_min_relative_gap": float(((s_end[lead_end] - rho).abs() / rho).min()),
    }


def run_parsimony(config: ParsimonyConfig, record_every: int = 1) -> ParsimonyResult:
    """Train the DLN and trace the SVD of every layer."""
    inputs, targets = make_regression_data(config.dim, config.rank, config.samples, config.whitened, config.seed)
    dims = [config.dim] * (config.depth + 1)
    initial = init_network(dims, config.scale, config.init, config.seed + 1)
    network = FactorNetwork(initial, name="parsimony", runtime=config.runtime)
    inputs, targets = config.runtime.to(inputs), config.runtime.to(targets)
    moved = 2 * config.rank
    records: list[tuple[int, list[torch.Tensor]]] = []

    def snapshot(step: int, factors: list[torch.Tensor]) -> None:  # SVDs in float64 on the CPU
        records.append((step, [torch.linalg.svd(w.detach().to("cpu", DTYPE)) for w in factors]))

    def loss_fn(factors: list[torch.Tensor]) -> torch.Tensor:
        return 0.5 * (layer_outputs(factors, inputs)[-1] - targets).pow(2).sum()

    gd = GDConfig(config.lr, config.weight_decay, config.momentum)
    one_step = replace(config.runtime, progress=False, max_steps=None, max_seconds=None)
    reference_network = FactorNetwork(initial, runtime=one_step)
    train(reference_network, loss_fn, gd, 1)  # the weights after one step define the reference SVD
    reference = reference_network.cpu_weights()
    log = train(network, loss_fn, gd, config.steps, record_every=record_every, on_record=snapshot)

    ref_svds = [torch.linalg.svd(w) for w in reference]
    values, right, left = [], [], []
    for step, svds in records:
        values.append(torch.stack([s for _, s, _ in svds]))
        r_row, l_row = [], []
        for (u, s, vh), (u0, s0, vh0) in zip(svds, ref_svds):
            if step == 0:  # εQ has no preferred singular vectors: step 0 takes the reference itself
                u, s, vh = u0, s0, vh0
            lead, trail = split_spectrum(s, moved)
            lead0, trail0 = split_spectrum(s0, moved)
            r_row.append(_vector_angles(vh.T, lead, trail, vh0.T, lead0, trail0))
            l_row.append(_vector_angles(u, lead, trail, u0, lead0, trail0))
        right.append(torch.stack(r_row))
        left.append(torch.stack(l_row))
    final = network.cpu_weights()
    layers = [_layer_report(w0, wr, wt, moved, config.scale) for w0, wr, wt in zip(initial, reference, final)]
    return ParsimonyResult(
        config, log.steps, log.losses, torch.stack(values), torch.stack(right), torch.stack(left), layers, log
    )
