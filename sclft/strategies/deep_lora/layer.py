"""``DeepLoRALayer``: a frozen ``nn.Linear`` / ``nn.Conv2d`` plus a deep-factorised update ΔW.

Uncompressed (the seed's deep linear network applied to the update): ``ΔW = W₃W₂W₁`` with ε-scale
orthogonal factors of the full width ``d = min(out, fan_in)``. Compressed (``sclft.dln``, seed §4): by the
law of parsimony gradient descent from that init only moves a ``2r̂``-dimensional subspace, so
``ΔW = U · C₃C₂C₁ · Vᵀ`` with cores ``Cₗ(0) = εI₂ᵣ̂`` training at the step η and the outer factors
``V`` (fan_in × 2r̂) and ``U`` (out × 2r̂) at the discrepant step γη. The weight seen by the layer is
``W₀ + ΔW`` (a convolution's ΔW is reshaped to its kernel), run through the wrapped layer's own forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ...dln.network import end_to_end, init_weight

SUPPORTED = (nn.Linear, nn.Conv2d)


def _orthonormal(rows: int, cols: int, gen: torch.Generator | None) -> torch.Tensor:
    """rows × cols with orthonormal columns (Haar), rows ≥ cols."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


class DeepLoRALayer(nn.Module):
    """``base(x)`` with the weight ``W₀ + ΔW``; ``factors`` are applied first to last (``ΔW = F_L ⋯ F_1``)."""

    def __init__(self, base: nn.Module, rank: int = 8, eps: float = 0.1, compressed: bool = True,
                 generator: torch.Generator | None = None, factors: list[torch.Tensor] | None = None):
        super().__init__()
        if not isinstance(base, SUPPORTED) or getattr(base, "groups", 1) != 1:
            raise ValueError(f"deep_lora wraps nn.Linear and ungrouped nn.Conv2d layers, not {base!r}")
        self.base_layer = base
        self.eps, self.rank, self.compressed = float(eps), int(rank), bool(compressed)
        out, fan_in = base.weight.shape[0], base.weight[0].numel()
        width = min(out, fan_in)
        if factors is None:
            gen = generator  # None: torch's global RNG (seeded per run)
            if compressed:  # the law-of-parsimony frame of an ε-orthogonal W₃W₂W₁: Haar U, V, cores εI
                k = min(2 * rank, width)
                factors = [_orthonormal(fan_in, k, gen).T, *(eps * torch.eye(k, dtype=torch.float64),) * 3,
                           _orthonormal(out, k, gen)]
            else:
                factors = [init_weight(width, fan_in, eps, "orthogonal", gen),
                           init_weight(width, width, eps, "orthogonal", gen),
                           init_weight(out, width, eps, "orthogonal", gen)]
        like = base.weight
        self.factors = nn.ParameterList(
            [nn.Parameter(f.detach().clone().to(device=like.device, dtype=like.dtype)) for f in factors])

    @property
    def outer(self) -> list[nn.Parameter]:
        """The factors that train at γη (V and U of the compressed form; none uncompressed)."""
        return [self.factors[0], self.factors[-1]] if self.compressed else []

    def delta_weight(self) -> torch.Tensor:
        return end_to_end(list(self.factors)).reshape(self.base_layer.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight + self.delta_weight().to(self.base_layer.weight.dtype)
        return functional_call(self.base_layer, {"weight": weight}, (x,), strict=False)

    @classmethod
    def compress(cls, full: "DeepLoRALayer", grad: torch.Tensor, rank: int) -> "DeepLoRALayer":
        """The compressed layer of an uncompressed one (seed §4, as ``sclft.dln.completion``): ``V`` = top-2r̂
        right singular vectors of ``[G₁; G₁ᵀW₁(0)/ε]`` with ``G₁ = (W₃W₂)ᵀ ∂ℓ/∂ΔW`` (``grad``, the loss
        gradient w.r.t. ΔW at init), ``U = W₃W₂W₁(0)·V/ε³``, cores ``εI``."""
        if full.compressed:
            raise ValueError("compress() takes an uncompressed layer (compressed=False)")
        w1, w2, w3 = (f.detach().to(torch.float64) for f in full.factors)
        eps = full.eps
        g1 = (w3 @ w2).T @ grad.detach().reshape(w3.shape[0], -1).to(torch.float64)
        _, _, vh = torch.linalg.svd(torch.cat([g1, g1.T @ w1 / eps]), full_matrices=False)
        k = min(2 * rank, w1.shape[0])
        v = vh[:k].T
        u = w3 @ w2 @ w1 @ v / eps**3
        return cls(full.base_layer, rank, eps, compressed=True,
                   factors=[v.T, *(eps * torch.eye(k, dtype=torch.float64),) * 3, u])

    def extra_repr(self) -> str:
        shapes = " · ".join("×".join(map(str, f.shape)) for f in reversed(self.factors))
        return f"{'compressed' if self.compressed else 'uncompressed'}, ΔW = {shapes}, eps={self.eps:g}"
