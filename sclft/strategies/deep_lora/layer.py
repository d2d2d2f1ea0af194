"""``DeepLoRALayer``: a frozen ``nn.Linear`` / ``nn.Conv2d`` plus a deep-factorised update ΔW (Yaras et al.,
ICML 2024, reference code ``cjyaras/deep-lora-transformers``: ``dlt/models.py``, ``dlt/train.py``).

Uncompressed: ``ΔW = W₃W₂W₁`` with ε-scale orthogonal factors of the full width ``d = max(out, fan_in)``
(``MatrixFactorization`` with ``rank=None``). Compressed (``CompressedMatrixFactorization``): by the law of
parsimony gradient descent from that init only moves an ``r``-dimensional subspace on each side, so
``ΔW = U · C₃C₂C₁ · Vᵀ`` with ``r × r`` cores ``Cₗ(0) = εI`` training at the step η and the outer factors ``V``
(fan_in × r) and ``U`` (out × r) at γη; ``U``, ``V`` span the subspace the first gradient of the full-width
factorisation moves (:func:`spectral_factors`, the paper's ``create_compressed_lora_train_state``). The weight
seen by the layer is ``W₀ + ΔW`` (a convolution's ΔW is reshaped to its kernel), through the layer's own forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from ...dln.network import end_to_end, init_weight
from ...errors import UsageError

SUPPORTED = (nn.Linear, nn.Conv2d)
D64 = torch.float64


def _orthonormal(rows: int, cols: int, gen: torch.Generator | None) -> torch.Tensor:
    """rows × cols with orthonormal columns (Haar), rows ≥ cols."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=D64))
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def random_frame(out: int, fan_in: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """``M = W₃W₂W₁(0)/ε³`` of a full-width (``d = max(out, fan_in)``) ε-orthogonal factorisation: Haar
    semi-orthogonal out × fan_in (orthonormal columns when out ≥ fan_in, else rows), sampled without the
    d × d factors."""
    return _orthonormal(out, fan_in, gen) if out >= fan_in else _orthonormal(fan_in, out, gen).T


def _span(vectors: torch.Tensor, k: int) -> torch.Tensor:
    """An orthonormal basis (k columns) of the span of ``vectors``' columns."""
    return torch.linalg.svd(vectors, full_matrices=False)[0][:, :k]


def spectral_factors(frame: torch.Tensor, grad: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V, U)`` of the compressed init from ``M`` (``frame``: ΔW(0)/ε³ of the full-width factorisation) and
    ``G = ∂ℓ/∂ΔW`` at ΔW(0) (``grad``, out × fan_in), as ``dlt/train.py`` builds them with ``half_rank = k/2``.

    On the square end of the factorisation (the input end ``W₁`` when fan_in > out, else the output end ``W₃``)
    the first gradient moves the span of ``W₁ᵀ·(its top-k/2 left singular vectors)/ε`` and of its top-k/2 right
    singular vectors. With ``W₁ = εQ₁`` and ``W₃W₂ = ε²Pᵀ`` (P orthonormal columns), ``∂ℓ/∂W₁ = ε²(P U_G)Σ V_Gᵀ``,
    so that span is ``[Mᵀ U_G, V_G]`` (first k/2 columns each; odd k: one more of the first) and the other end
    is ``M`` applied to it (``left = e2e @ right / ε^L``): only the SVD of the out × fan_in ``G`` is needed.
    """
    m, g = frame.to(D64), grad.detach().to(D64).reshape(frame.shape)
    u_g, _, vh_g = torch.linalg.svd(g, full_matrices=False)
    k1 = math.ceil(k / 2)
    if m.shape[1] > m.shape[0]:  # fan_in > out: W₁ (d × fan_in) is the square factor
        v = _span(torch.cat([m.T @ u_g[:, :k1], vh_g[: k - k1].T], 1), k)
        return v, m @ v
    u = _span(torch.cat([m @ vh_g[:k1].T, u_g[:, : k - k1]], 1), k)  # the same on ΔWᵀ = W₁ᵀW₂ᵀW₃ᵀ
    return m.T @ u, u


class DeepLoRALayer(nn.Module):
    """``base(x)`` with the weight ``W₀ + ΔW``; ``factors`` are applied first to last (``ΔW = F_L ⋯ F_1``).

    Compressed (``rank`` r): ``[Vᵀ, C₁, C₂, C₃, U]``; without ``factors``, ``U``, ``V`` are Haar-orthonormal
    until :meth:`init_from_gradient` sets them from the first gradient (``frame``: the full-width
    factorisation's ``M`` it uses). Uncompressed: ``[W₁, W₂, W₃]`` of width ``max(out, fan_in)``."""

    def __init__(self, base: nn.Module, rank: int = 8, eps: float = 1e-3, compressed: bool = True,
                 generator: torch.Generator | None = None, factors: list[torch.Tensor] | None = None):
        super().__init__()
        if not isinstance(base, SUPPORTED) or getattr(base, "groups", 1) != 1:
            raise UsageError(f"deep_lora wraps nn.Linear and ungrouped nn.Conv2d layers, not {base!r}")
        self.base_layer = base
        self.eps, self.compressed = float(eps), bool(compressed)
        out, fan_in = base.weight.shape[0], base.weight[0].numel()
        self.rank = min(int(rank), out, fan_in)
        self.gradient_init = False  # set by the strategy: init_from_data will call start_probe / init_from_gradient
        self.frame: torch.Tensor | None = None  # M of the full-width factorisation (start_probe samples one if unset)
        self.probe: torch.Tensor | None = None  # a leaf standing for ΔW while the first gradient is taken
        if factors is None:
            gen = generator  # None: torch's global RNG (seeded per run)
            if compressed:
                k = self.rank
                factors = [_orthonormal(fan_in, k, gen).T, *(eps * torch.eye(k, dtype=D64),) * 3,
                           _orthonormal(out, k, gen)]
            else:
                width = max(out, fan_in)
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
        if self.probe is not None:
            return self.probe.reshape(self.base_layer.weight.shape)
        return end_to_end(list(self.factors)).reshape(self.base_layer.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.base_layer.weight + self.delta_weight().to(self.base_layer.weight.dtype)
        return functional_call(self.base_layer, {"weight": weight}, (x,), strict=False)

    def start_probe(self) -> torch.Tensor:
        """Make the forward use ΔW(0) = ε³M of the full-width factorisation as a leaf; returns it (its gradient
        is :meth:`init_from_gradient`'s ``grad``)."""
        like = self.base_layer.weight
        if self.frame is None:  # drawn here, not at attach: only a run that trains pays for it
            self.frame = random_frame(len(like), like[0].numel())
        self.probe = (self.eps**3 * self.frame).to(device=like.device, dtype=like.dtype).requires_grad_(True)
        return self.probe

    @torch.no_grad()
    def init_from_gradient(self, grad: torch.Tensor) -> None:
        """Set ``U``, ``V`` from ``grad = ∂ℓ/∂ΔW`` at ΔW(0) = ε³M (:func:`spectral_factors`) and the cores to εI,
        in place (an optimizer built on the factors keeps them)."""
        v, u = spectral_factors(self.frame, grad, self.rank)
        cores = self.eps * torch.eye(self.rank, dtype=D64)
        for f, value in zip(self.factors, [v.T, cores, cores, cores, u]):
            f.copy_(value.to(f.dtype))
        self.frame = self.probe = None
        self.gradient_init = False

    @classmethod
    def compress(cls, full: DeepLoRALayer, grad: torch.Tensor, rank: int) -> DeepLoRALayer:
        """The compressed layer (width ``rank``) of an uncompressed one, from ``grad`` = ∂ℓ/∂ΔW at its init."""
        if full.compressed:
            raise UsageError("compress() takes an uncompressed layer (compressed=False)")
        frame = end_to_end([f.detach().to(D64) for f in full.factors]) / full.eps**3
        k = min(rank, *frame.shape)
        v, u = spectral_factors(frame, grad, k)
        return cls(full.base_layer, k, full.eps, compressed=True,
                   factors=[v.T, *(full.eps * torch.eye(k, dtype=D64),) * 3, u])

    def extra_repr(self) -> str:
        shapes = " · ".join("×".join(map(str, f.shape)) for f in reversed(self.factors))
        return f"{'compressed' if self.compressed else 'uncompressed'}, ΔW = {shapes}, eps={self.eps:g}"
