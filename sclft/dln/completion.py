"""Deep matrix completion / factorisation with original, compressed and narrow DLNs (the lecture §4).

Problem: recover a rank-r ``d×d`` matrix Φ from the entries in a mask Ω by minimising
``ℓ = ½‖Ω ⊙ (W_{L:1} − Φ)‖²_F / p`` (p = observed fraction, so full observation — deep matrix
factorisation — is the plain ``½‖W_{L:1} − Φ‖²_F``). The recovery error is the relative Frobenius
error on the unobserved entries (on all entries when everything is observed).

The compressed network (Yaras et al. 2023) exploits the law of parsimony: from an ε-orthogonal
``d``-wide init, GD only moves a ``2r̂``-dimensional subspace of each layer, so
``W_{L:1}(t) ≈ U_{L,1} W̃_L(t)⋯W̃_1(t) V_{1,1}ᵀ`` with ``W̃_l(0) = εI_{2r̂}``. ``V_{1,1}`` spans the
top right singular vectors of the first layer's gradient at init and ``W_1(0)ᵀ`` times its top left
singular vectors; ``U_{L,1} = W_{L:1}(0)V_{1,1}/ε^L``. For completion Ω⊙Φ is not low rank, so the
outer factors are trained too, at the discrepant step γη (γ = 0 freezes them).

Cost per GD step: the original network multiplies ``d×d`` factors, ``O(L·d³)`` flops (``L·d²`` parameters);
the compressed one has ``2d·2r̂ + L·(2r̂)²`` parameters and never multiplies two ``d``-wide matrices — its
product ``U·(W̃_{L:1}V^T)`` costs ``O(d·r̂² L + d²·r̂)`` — but the loss still reads every observed entry,
``|Ω| = p·d²`` of them, so at a fixed observed fraction a step is ``O(d²)`` with a small constant (measured
in ``benchmarks/dln_speed.py``). Networks are built in float64 on the CPU and then moved to the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import UsageError
from .network import (
    DTYPE,
    FactorNetwork,
    GDConfig,
    Runtime,
    TrainLog,
    end_to_end,
    generator,
    init_network,
    random_orthogonal,
    train,
)

__all__ = [
    "CompletionProblem",
    "make_problem",
    "completion_loss",
    "fused_completion_loss",
    "recovery_error",
    "original_network",
    "compressed_network",
    "narrow_network",
    "compression_basis",
    "train_completion",
]


@dataclass
class CompletionProblem:
    """Target Φ (d×d, rank r) and boolean mask Ω of observed entries."""

    target: torch.Tensor
    mask: torch.Tensor
    rank: int

    @property
    def dim(self) -> int:
        return int(self.target.shape[0])

    @property
    def observed_fraction(self) -> float:
        return float(self.mask.to(DTYPE).mean())

    @property
    def fully_observed(self) -> bool:
        return bool(self.mask.all())

    def to(self, runtime: Runtime) -> CompletionProblem:
        """The same problem on the runtime's device and dtype."""
        return CompletionProblem(runtime.to(self.target), runtime.to(self.mask), self.rank)


def make_problem(
    dim: int,
    rank: int,
    observed_fraction: float = 0.2,
    seed: int = 0,
    singular_values: tuple[float, float] = (1.0, 2.0),
) -> CompletionProblem:
    """Random rank-``rank`` Φ = U diag(s) Vᵀ (Haar U, V; s evenly spaced in ``singular_values``)
    and a uniformly random mask with ``round(observed_fraction·d²)`` observed entries."""
    gen = generator(seed)
    left = random_orthogonal(dim, gen)[:, :rank]
    right = random_orthogonal(dim, gen)[:, :rank]
    spectrum = torch.linspace(singular_values[1], singular_values[0], rank, dtype=DTYPE)
    target = (left * spectrum) @ right.T
    count = int(round(observed_fraction * dim * dim))
    mask = torch.zeros(dim * dim, dtype=torch.bool)
    mask[torch.randperm(dim * dim, generator=gen)[:count]] = True
    return CompletionProblem(target, mask.reshape(dim, dim), rank)


def completion_loss(product: torch.Tensor, problem: CompletionProblem) -> torch.Tensor:
    """``½‖Ω ⊙ (W − Φ)‖²_F / p``."""
    residual = torch.where(
        problem.mask, product - problem.target, torch.zeros((), dtype=product.dtype, device=product.device)
    )
    return 0.5 * residual.pow(2).sum() / problem.observed_fraction


class _MaskedHalfSquare(torch.autograd.Function):
    """``½·Σ w·(W − Φ)²`` for weights ``w`` (``Ω/p``) in three passes over the ``d×d`` entries: the gradient
    ``w·(W − Φ)`` is formed once in the forward pass and reused (autograd's chain of where/pow/sum needs ~8)."""

    @staticmethod
    def forward(
        ctx, product: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, fraction: float
    ) -> torch.Tensor:
        grad = (product - target).mul_(weight)
        ctx.save_for_backward(grad)
        flat = grad.reshape(-1)
        return 0.5 * fraction * torch.dot(flat, flat)  # w·diff² = p·(w·diff)² on Ω, since w = 1/p there

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None


def fused_completion_loss(
    product: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, fraction: float
) -> torch.Tensor:
    """``completion_loss`` for training, given ``weight = Ω/p`` in the product's dtype and ``fraction = p``."""
    return _MaskedHalfSquare.apply(product, target, weight, fraction)


def recovery_error(product: torch.Tensor, problem: CompletionProblem) -> float:
    """Relative Frobenius error on the unobserved entries (all entries if nothing is hidden)."""
    hidden = torch.ones_like(problem.mask) if problem.fully_observed else ~problem.mask
    diff = (product - problem.target)[hidden]
    return float(diff.norm() / problem.target[hidden].norm())


def original_network(
    problem: CompletionProblem, depth: int, scale: float, seed: int = 0, runtime: Runtime | None = None
) -> FactorNetwork:
    """The ``d``-wide, ``depth``-layer DLN from ε-orthogonal init."""
    d = problem.dim
    return FactorNetwork(init_network([d] * (depth + 1), scale, "orthogonal", seed), name="original", **_on(runtime))


def _on(runtime: Runtime | None) -> dict:
    return {} if runtime is None else {"runtime": runtime}


def compression_basis(
    weights: list[torch.Tensor], problem: CompletionProblem, rank_estimate: int, scale: float
) -> torch.Tensor:
    """``V_{1,1}`` (d×2r̂): top-2r̂ right singular vectors of ``[G; GᵀW_1(0)/ε]``, G = ∇_{W_1}ℓ at init."""
    factors = [w.detach().to("cpu", DTYPE).requires_grad_(True) for w in weights]
    problem = CompletionProblem(problem.target.to("cpu", DTYPE), problem.mask.cpu(), problem.rank)
    completion_loss(end_to_end(factors), problem).backward()
    grad = factors[0].grad
    stacked = torch.cat([grad, grad.T @ factors[0].detach() / scale], dim=0)
    _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
    return vh[: 2 * rank_estimate].T.contiguous()


def compressed_network(
    problem: CompletionProblem,
    depth: int,
    scale: float,
    rank_estimate: int,
    outer_lr_ratio: float,
    seed: int = 0,
    runtime: Runtime | None = None,
) -> FactorNetwork:
    """``U_{L,1} · W̃_L ⋯ W̃_1 · V_{1,1}ᵀ`` built from the same init as ``original_network(…, seed)``.

    The outer factors ``V_{1,1}ᵀ`` and ``U_{L,1}`` train at ``outer_lr_ratio × η`` (the lecture's γ)."""
    if 2 * rank_estimate > problem.dim:
        raise UsageError(f"2·rank_estimate = {2 * rank_estimate} exceeds the width {problem.dim}")
    weights = original_network(problem, depth, scale, seed).weights()  # float64 CPU: the basis is built there
    right = compression_basis(weights, problem, rank_estimate, scale)
    left = end_to_end(weights) @ right / scale**depth
    width = 2 * rank_estimate
    cores = [scale * torch.eye(width, dtype=DTYPE) for _ in range(depth)]
    scales = [outer_lr_ratio] + [1.0] * depth + [outer_lr_ratio]
    return FactorNetwork([right.T] + cores + [left], scales, name=f"compressed γ={outer_lr_ratio:g}", **_on(runtime))


def narrow_network(
    problem: CompletionProblem, depth: int, scale: float, width: int, seed: int = 0, runtime: Runtime | None = None
) -> FactorNetwork:
    """A ``width``-wide DLN (``d → width → … → width → d``) from ε-orthogonal init."""
    d = problem.dim
    dims = [d] + [width] * (depth - 1) + [d]
    return FactorNetwork(init_network(dims, scale, "orthogonal", seed), name=f"narrow w={width}", **_on(runtime))


def train_completion(
    network: FactorNetwork,
    problem: CompletionProblem,
    lr: float,
    steps: int,
    *,
    record_every: int = 10,
    stop_below: float | None = None,
) -> TrainLog:
    """GD on the completion loss; the log's metric is the recovery error. The problem is moved to the
    network's runtime (device, dtype)."""
    problem = problem.to(network.runtime)
    fraction = problem.observed_fraction
    weight = problem.mask.to(problem.target.dtype) / fraction
    return train(
        network,
        lambda factors: fused_completion_loss(end_to_end(factors), problem.target, weight, fraction),
        GDConfig(lr=lr),
        steps,
        record_every=record_every,
        metric=lambda factors: recovery_error(end_to_end(factors), problem),
        stop_below=stop_below,
    )
