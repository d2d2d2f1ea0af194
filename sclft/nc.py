"""Neural-collapse metrics: NC1 = tr(Σ_W Σ_B⁺) and the separation ratio tr(Σ_W)/tr(Σ_B).

Definitions (DESIGN §1), for features ``h_i`` (N×D), labels ``y_i`` in ``0..K-1``:

* ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``
* ``Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ`` with ``μ_G`` the mean of all samples.

NC1 is computed in the (≤K)-dimensional span of the centred class means: with the thin SVD
``M = [μ_1−μ_G … μ_K−μ_G] = U S Vᵀ``, ``tr(Σ_W Σ_B⁺) = K Σ_j s_j⁻² · u_jᵀ Σ_W u_j``. That costs
O(N·D·K) time and O(D·K) memory; no D×D matrix is ever formed. Accumulation is in float64 and
the features are processed in row chunks, so float32 inputs with large D are never copied whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

__all__ = ["nc1", "separation", "class_statistics", "ClassStatistics", "nc2_equinorm", "nc2_equiangular"]

ArrayLike = Union[torch.Tensor, np.ndarray]
_CHUNK_ROWS = 4096


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(x))
    return x.detach()


def _check_inputs(features: ArrayLike, labels: ArrayLike, num_classes: int | None):
    h = _as_tensor(features)
    y = _as_tensor(labels).reshape(-1).to(device=h.device, dtype=torch.long)
    if h.ndim != 2:
        h = h.reshape(h.shape[0], -1)
    if h.shape[0] != y.shape[0]:
        raise ValueError(f"features have {h.shape[0]} rows but labels have {y.shape[0]} entries")
    if y.numel() == 0:
        raise ValueError("no samples: features and labels are empty")
    if int(y.min()) < 0:
        raise ValueError(f"labels must be in 0..K-1, got {int(y.min())}")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if int(y.max()) >= k:
        raise ValueError(f"label {int(y.max())} is out of range for num_classes={k}")
    counts = torch.bincount(y, minlength=k)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} of {k} classes have no samples (class ids: {shown}); NC metrics need every "
            "class present. Pass num_classes matching the labels, or relabel the classes to 0..K-1."
        )
    if k < 2:
        raise ValueError("NC metrics need at least two classes; got a single class")
    return h, y, k, counts


@dataclass
class ClassStatistics:
    """Class means (K×D, float64), global mean (D), class counts (K) and tr(Σ_W)."""

    means: torch.Tensor
    global_mean: torch.Tensor
    counts: torch.Tensor
    trace_within: float

    @property
    def num_classes(self) -> int:
        return int(self.means.shape[0])

    @property
    def centred_means(self) -> torch.Tensor:
        return self.means - self.global_mean


def _chunks(n: int):
    for start in range(0, n, _CHUNK_ROWS):
        yield slice(start, min(start + _CHUNK_ROWS, n))


def class_statistics(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> ClassStatistics:
    """Two chunked passes: class sums, then the within-class scatter trace."""
    h, y, k, counts = _check_inputs(features, labels, num_classes)
    n, d = h.shape
    sums = torch.zeros(k, d, dtype=torch.float64, device=h.device)
    for s in _chunks(n):
        sums.index_add_(0, y[s], h[s].to(torch.float64))
    means = sums / counts.to(torch.float64).unsqueeze(1)
    global_mean = sums.sum(0) / n
    within = 0.0
    for s in _chunks(n):
        within += float(((h[s].to(torch.float64) - means[y[s]]) ** 2).sum())
    return ClassStatistics(means, global_mean, counts, within / n)


def nc1(
    features: ArrayLike,
    labels: ArrayLike,
    num_classes: int | None = None,
    normalize: bool = False,
) -> float:
    """Within-class variability collapse ``tr(Σ_W Σ_B⁺)``.

    ``normalize=True`` divides by K (the Papyan et al. convention). Features of any shape (N, ...) are
    flattened per sample. Raises ``ValueError`` when a class is absent or there is only one class.
    """
    h, y, k, counts = _check_inputs(features, labels, num_classes)
    stats = class_statistics(h, y, k)
    m = stats.centred_means.T  # D×K
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    tol = s.max() * max(m.shape) * torch.finfo(torch.float64).eps
    keep = s > tol
    if not bool(keep.any()):
        raise ValueError("all class means coincide: Σ_B is zero and NC1 is undefined")
    u, s = u[:, keep], s[keep]
    proj_sq = torch.zeros(u.shape[1], dtype=torch.float64, device=h.device)
    n = h.shape[0]
    for sl in _chunks(n):
        centred = h[sl].to(torch.float64) - stats.means[y[sl]]
        proj_sq += ((centred @ u) ** 2).sum(0)
    value = k * float((proj_sq / n / s**2).sum())
    return value / k if normalize else value


def separation(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> float:
    """Compression/separation measure ``tr(Σ_W) / tr(Σ_B)`` (the seed's ``D_l``)."""
    stats = class_statistics(features, labels, num_classes)
    trace_between = float((stats.centred_means**2).sum()) / stats.num_classes
    if trace_between == 0.0:
        raise ValueError("all class means coincide: tr(Σ_B) is zero and the separation is undefined")
    return stats.trace_within / trace_between


def nc2_equinorm(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> float:
    """Coefficient of variation of the centred class-mean norms (0 for an equinorm simplex)."""
    norms = class_statistics(features, labels, num_classes).centred_means.norm(dim=1)
    return float(norms.std(unbiased=False) / norms.mean())


def nc2_equiangular(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> float:
    """Mean |cos(μ_a−μ_G, μ_b−μ_G) + 1/(K−1)| over class pairs (0 for a simplex ETF)."""
    stats = class_statistics(features, labels, num_classes)
    c = stats.centred_means
    c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cos = c @ c.T
    k = stats.num_classes
    off = ~torch.eye(k, dtype=torch.bool, device=cos.device)
    return float((cos[off] + 1.0 / (k - 1)).abs().mean())
