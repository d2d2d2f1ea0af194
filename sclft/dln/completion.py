"""Deep matrix completion / factorisation with original, compressed and narrow DLNs (the lecture §4).

Problem: recover a rank-r ``d×d`` matrix Φ from the entries in a mask Ω by minimising
``ℓ = ½‖Ω ⊙ (W_{L:1} − Φ)‖²_F / p`` (p = observed fraction, so full observation — deep matrix
factorisation — is the plain ``½‖W_{L:1} − Φ‖²_F``). The recovery error is the relative Frobenius
error on the unobserved entries (on all entries when everything is observed).

The compressed network (Yaras et al. 2023) exploits the law of parsimony: from an ε-orthogonal
``d``-wide init, GD only moves a ``2r̂``-dimensional subspace of each layer, so
``W_{L:1}(t) ≈ U_{L,1} W̃_L(t)⋯W̃_1(t) V_{1,1}ᵀ`` with ``W̃_l(0) = εI_{2r̂}``. ``V_{1,1}`` spans the
top-r̂ right singular vectors of the first layer's gradient G at init and ``W_1(0)ᵀ/ε`` times its top-r̂ left
singular vectors — r̂ from each side, as the authors' ``compute_factor`` (cjyaras/law-of-parsimony
``network.py``, used by their notebooks) and the paper build it; ``U_{L,1} = W_{L:1}(0)V_{1,1}/ε^L``.
``basis="stacked"`` is their ``compute_factor_v3`` (top 2r̂ right singular vectors of ``[G; GᵀW_1/ε]``), which
without a spectral gap misses part of that span. For completion Ω⊙Φ is not low rank, so the
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
    "compress_weights",
    "train_completion",
    "BASES",
    "TARGETS",
    "STOP_RULES",
    "per_entry_loss",
]

BASES = ("each_side", "stacked")  # compression_basis: the authors' compute_factor / compute_factor_v3
TARGETS = ("haar", "gaussian")  # make_problem: sclft's Haar factors with σ ∈ [1, 2] / the authors' generate_data
STOP_RULES = ("recovery", "train_loss")  # recovery error ≤ target / the authors' per-entry train loss < tol


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
    target: str = "haar",
) -> CompletionProblem:
    """Random rank-``rank`` Φ and a uniformly random mask with ``round(observed_fraction·d²)`` observed entries.

    ``target="haar"``: Φ = U diag(s) Vᵀ (Haar U, V; s evenly spaced in ``singular_values``). ``"gaussian"``: the
    best rank-``rank`` approximation of a d×d standard Gaussian (the authors' ``generate_data``; its singular
    values are ≈ 2√d, so their step size is ~d⁻¹ᐟ² of one that suits σ ∈ [1, 2])."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}; choose one of {TARGETS}")
    gen = generator(seed)
    if target == "gaussian":
        u, s, vh = torch.linalg.svd(torch.randn(dim, dim, generator=gen, dtype=DTYPE))
        phi = (u[:, :rank] * s[:rank]) @ vh[:rank]
    else:
        left = random_orthogonal(dim, gen)[:, :rank]
        right = random_orthogonal(dim, gen)[:, :rank]
        spectrum = torch.linspace(singular_values[1], singular_values[0], rank, dtype=DTYPE)
        phi = (left * spectrum) @ right.T
    count = int(round(observed_fraction * dim * dim))
    mask = torch.zeros(dim * dim, dtype=torch.bool)
    mask[torch.randperm(dim * dim, generator=gen)[:count]] = True
    return CompletionProblem(phi, mask.reshape(dim, dim), rank)


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


def per_entry_loss(loss: float, problem: CompletionProblem) -> float:
    """``completion_loss`` in the authors' units: ``½·mean over all d² entries of (Ω ⊙ (W − Φ))²`` (their
    ``create_loss(target, mask)``), i.e. ``loss · p / d²``. A step size η there is ``η·p/d²`` here."""
    return loss * problem.observed_fraction / problem.dim**2


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
    weights: list[torch.Tensor],
    problem: CompletionProblem,
    rank_estimate: int,
    scale: float,
    basis: str = "each_side",
) -> torch.Tensor:
    """``V_{1,1}`` (d×2r̂, orthonormal columns) from ``G = ∇_{W_1}ℓ`` at init (``weights``).

    ``each_side``: the span of G's top-r̂ right singular vectors and ``W_1(0)ᵀ/ε`` times its top-r̂ left ones
    (the authors' ``compute_factor`` / ``compute_factor_v2``); ``stacked``: the top-2r̂ right singular vectors
    of ``[G; GᵀW_1(0)/ε]`` (their ``compute_factor_v3``)."""
    if basis not in BASES:
        raise UsageError(f"unknown basis {basis!r}; choose one of {BASES}")
    factors = [w.detach().to("cpu", DTYPE).requires_grad_(True) for w in weights]
    problem = CompletionProblem(problem.target.to("cpu", DTYPE), problem.mask.cpu(), problem.rank)
    completion_loss(end_to_end(factors), problem).backward()
    grad, first = factors[0].grad, factors[0].detach()
    k = rank_estimate
    if basis == "stacked":
        _, _, vh = torch.linalg.svd(torch.cat([grad, grad.T @ first / scale], dim=0), full_matrices=False)
        return vh[: 2 * k].T.contiguous()
    u_g, _, vh_g = torch.linalg.svd(grad, full_matrices=False)
    both = torch.cat([vh_g[:k].T, first.T @ u_g[:, :k] / scale], dim=1)
    return torch.linalg.svd(both, full_matrices=False)[0][:, : 2 * k].contiguous()


def compress_weights(
    weights: list[torch.Tensor], problem: CompletionProblem, rank_estimate: int, scale: float, basis: str = "each_side"
) -> list[torch.Tensor]:
    """``[V_{1,1}ᵀ, εI, …, εI, U_{L,1}]`` (float64 CPU) of the original network's init ``weights``."""
    weights = [w.detach().to("cpu", DTYPE) for w in weights]
    right = compression_basis(weights, problem, rank_estimate, scale, basis)
    left = end_to_end(weights) @ right / scale ** len(weights)
    cores = [scale * torch.eye(2 * rank_estimate, dtype=DTYPE) for _ in weights]
    return [right.T.contiguous()] + cores + [left]


def compressed_network(
    problem: CompletionProblem,
    depth: int,
    scale: float,
    rank_estimate: int,
    outer_lr_ratio: float,
    seed: int = 0,
    runtime: Runtime | None = None,
    basis: str = "each_side",
) -> FactorNetwork:
    """``U_{L,1} · W̃_L ⋯ W̃_1 · V_{1,1}ᵀ`` built from the same init as ``original_network(…, seed)``.

    The outer factors ``V_{1,1}ᵀ`` and ``U_{L,1}`` train at ``outer_lr_ratio × η`` (the lecture's γ)."""
    if 2 * rank_estimate > problem.dim:
        raise UsageError(f"2·rank_estimate = {2 * rank_estimate} exceeds the width {problem.dim}")
    weights = original_network(problem, depth, scale, seed).weights()  # float64 CPU: the basis is built there
    factors = compress_weights(weights, problem, rank_estimate, scale, basis)
    scales = [outer_lr_ratio] + [1.0] * depth + [outer_lr_ratio]
    return FactorNetwork(factors, scales, name=f"compressed γ={outer_lr_ratio:g}", **_on(runtime))


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
    train_loss_below: float | None = None,
) -> TrainLog:
    """GD on the completion loss; the log's metric is the recovery error. The problem is moved to the
    network's runtime (device, dtype). Training stops at a record where the recovery error is ≤ ``stop_below``
    or the train loss in the authors' units (:func:`per_entry_loss`) is < ``train_loss_below``."""
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
        loss_below=None if train_loss_below is None else train_loss_below * problem.dim**2 / fraction,
    )
