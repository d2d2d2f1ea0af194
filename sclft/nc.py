"""Neural-collapse metrics: NC1 = tr(Σ_W Σ_B⁺) and the separation ratio tr(Σ_W)/tr(Σ_B).

Definitions (docs/design.md §1), for features ``h_i`` (N×D), labels ``y_i`` in ``0..K-1``:

* ``Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ``
* ``Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ`` with ``μ_G`` the mean of all samples.

NC1 is computed in the (≤K)-dimensional span of the centred class means: with the thin SVD
``M = [μ_1−μ_G … μ_K−μ_G] = U S Vᵀ``, ``tr(Σ_W Σ_B⁺) = K Σ_j s_j⁻² · u_jᵀ Σ_W u_j``. That costs
O(N·D·K) time and O(D·K) memory; no D×D matrix is ever formed.

Everything runs through :class:`NCAccumulator`, which sees the features as a stream of batches in
two passes (class sums, then projections of the centred features onto ``U``). The in-memory
functions feed it row chunks of an array; :func:`sclft.probe` feeds it batches straight from the
network, so flattened conv maps (D in the hundreds of thousands) never exist as an N×D array.
Accumulation is in float64, in row chunks of at most ``_CHUNK_ROWS`` rows and ``_CHUNK_ELEMENTS``
values, so float32 inputs with large D are never copied whole.

``jackknife=G`` adds a standard error of NC1 from the same two passes: the samples of each class are dealt
in turn to G groups (in the order they are fed), NC1 is recomputed with each group left out (its own class
means, SVD and scatter), and ``nc1_se`` is the delete-one-group jackknife
``sqrt((G−1)/G · Σ_g (NC1_(−g) − mean_g NC1_(−g))²)`` over the G non-empty groups (fewer than G when every
class has fewer than G samples). Memory O(G·K·D); pass 2 costs G times the projections.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UsageError

__all__ = [
    "nc1", "separation", "class_statistics", "accumulate", "ClassStatistics", "NCAccumulator",
    "nc2_equinorm", "nc2_equiangular",
]

ArrayLike = torch.Tensor | np.ndarray
_CHUNK_ROWS = 4096
_CHUNK_ELEMENTS = 1 << 23  # float64 working copy of a chunk: at most 64 MiB


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        return torch.as_tensor(np.asarray(x))
    return x.detach()


def _as_labels(labels: ArrayLike, device) -> torch.Tensor:
    """Labels as int64; float labels must hold whole numbers (0.7 is an error, not class 0)."""
    y = _as_tensor(labels).reshape(-1)
    if y.is_floating_point() or y.is_complex():
        bad = ~(torch.isfinite(y) & (y == y.round())) if not y.is_complex() else torch.ones_like(y, dtype=torch.bool)
        if bool(bad.any()):
            raise UsageError(f"labels must be whole class ids 0..K-1, got {y[bad][0].item()!r}")
    elif y.dtype == torch.bool:
        raise UsageError("labels must be class ids 0..K-1, got booleans")
    return y.to(device=device, dtype=torch.long)


def _check_finite(h: torch.Tensor) -> None:
    if h.is_floating_point() and not bool(torch.isfinite(h).all()):
        rows = int((~torch.isfinite(h)).reshape(h.shape[0], -1).any(1).sum())
        raise UsageError(f"features contain non-finite values (NaN or inf) in {rows} of {h.shape[0]} rows; "
                         "NC metrics need finite features")


def _check_counts(counts: torch.Tensor, k: int) -> None:
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise UsageError(
            f"{len(missing)} of {k} classes have no samples (class ids: {shown}); NC metrics need every "
            "class present. Pass num_classes matching the labels, or relabel the classes to 0..K-1."
        )
    if k < 2:
        raise UsageError("NC metrics need at least two classes; got a single class")


def _check_inputs(features: ArrayLike, labels: ArrayLike, num_classes: int | None):
    h = _as_tensor(features)
    y = _as_labels(labels, h.device)
    if h.ndim != 2:
        h = h.reshape(h.shape[0], -1)
    if h.shape[0] != y.shape[0]:
        raise UsageError(f"features have {h.shape[0]} rows but labels have {y.shape[0]} entries")
    if y.numel() == 0:
        raise UsageError("no samples: features and labels are empty")
    if int(y.min()) < 0:
        raise UsageError(f"labels must be in 0..K-1, got {int(y.min())}")
    k = int(num_classes) if num_classes is not None else int(y.max()) + 1
    if int(y.max()) >= k:
        raise UsageError(f"label {int(y.max())} is out of range for num_classes={k}")
    _check_counts(torch.bincount(y, minlength=k), k)
    return h, y, k


def _row_slices(n: int, d: int) -> Iterator[slice]:
    step = max(1, min(_CHUNK_ROWS, _CHUNK_ELEMENTS // max(d, 1)))
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


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


class NCAccumulator:
    """Streaming NC1 / separation of one feature stream in two passes, O(K·D) memory.

    >>> acc = NCAccumulator(num_classes=10)
    >>> for h, y in batches: acc.update(h, y)      # pass 1: class sums
    >>> acc.end_pass()
    >>> for h, y in batches: acc.update(h, y)      # pass 2: the same batches again (any order)
    >>> acc.end_pass(); acc.nc1(), acc.separation()

    ``num_classes=None`` grows K with the largest label seen. Features of any shape (B, ...) are
    flattened per sample; batches may live on any device (the statistics follow the first batch's).
    ``projections=False`` skips the SVD and projections (separation only). ``jackknife=G`` (≥ 2) also
    estimates the standard error of NC1 (:meth:`nc1_se`, see the module doc); then pass 2 must feed the
    samples in the same order as pass 1 (checked).
    """

    def __init__(self, num_classes: int | None = None, projections: bool = True, jackknife: int = 0):
        self.k = int(num_classes) if num_classes is not None else 0
        self.projections = projections
        if jackknife and (int(jackknife) < 2 or not projections):
            raise UsageError(f"jackknife must be 0 (off) or a number of groups >= 2 with projections, got {jackknife}")
        self.groups = int(jackknife)
        self.jk: _Jackknife | None = None
        self.phase = 0  # 0: summing, 1: projecting, 2: done
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.n = 0
        self.n_second = 0
        self.within = 0.0
        self.stats: ClassStatistics | None = None
        self.u: torch.Tensor | None = None
        self.s: torch.Tensor | None = None
        self.proj_sq: torch.Tensor | None = None

    # ---------------------------------------------------------------- feeding
    def update(self, features: ArrayLike, labels: ArrayLike) -> None:
        h = _as_tensor(features)
        h = h.reshape(h.shape[0], -1)
        y = _as_labels(labels, h.device)
        if h.shape[0] != y.shape[0]:
            raise UsageError(f"features have {h.shape[0]} rows but labels have {y.shape[0]} entries")
        if not len(y):
            return
        _check_finite(h)
        if self.phase == 0:
            self._add_sums(h, y)
        elif self.phase == 1:
            self._add_spread(h, y)
        else:
            raise RuntimeError("both passes are done; create a new NCAccumulator")

    def _add_sums(self, h: torch.Tensor, y: torch.Tensor) -> None:
        if int(y.min()) < 0:
            raise UsageError(f"labels must be in 0..K-1, got {int(y.min())}")
        k = max(self.k, int(y.max()) + 1)
        if self.sums is None:
            self.sums = torch.zeros(k, h.shape[1], dtype=torch.float64, device=h.device)
            self.counts = torch.zeros(k, dtype=torch.long, device=h.device)
        elif self.sums.shape[1] != h.shape[1]:
            raise UsageError(f"feature width changed from {self.sums.shape[1]} to {h.shape[1]}")
        if k > self.sums.shape[0]:
            grow = k - self.sums.shape[0]
            self.sums = torch.cat([self.sums, self.sums.new_zeros(grow, self.sums.shape[1])])
            self.counts = torch.cat([self.counts, self.counts.new_zeros(grow)])
        y = y.to(self.sums.device)
        if self.groups:
            self.jk = self.jk or _Jackknife(self.groups, h.shape[1], self.sums.device)
            self.jk.grow(k)
        for s in _row_slices(len(y), h.shape[1]):
            x = h[s].to(self.sums.device, torch.float64)
            self.sums.index_add_(0, y[s], x)
            if self.jk is not None:
                self.jk.add_sums(x, y[s])
        self.counts += torch.bincount(y, minlength=self.sums.shape[0])
        self.n += len(y)

    def _add_spread(self, h: torch.Tensor, y: torch.Tensor) -> None:
        means = self.stats.means
        y = y.to(means.device)
        for s in _row_slices(len(y), h.shape[1]):
            x = h[s].to(means.device, torch.float64)
            centred = x - means[y[s]]
            self.within += float((centred**2).sum())
            if self.u is not None:
                self.proj_sq += ((centred @ self.u) ** 2).sum(0)
            if self.jk is not None:
                self.jk.add_spread(x, y[s])
        self.n_second += len(y)

    def end_pass(self) -> None:
        """Close pass 1 (means, and the SVD of the centred means) or pass 2 (the statistics)."""
        if self.phase == 0:
            if self.sums is None:
                raise UsageError("no samples: features and labels are empty")
            if self.k and self.sums.shape[0] > self.k:
                raise UsageError(f"label {self.sums.shape[0] - 1} is out of range for num_classes={self.k}")
            self.k = self.sums.shape[0]
            _check_counts(self.counts, self.k)
            means = self.sums / self.counts.to(torch.float64).unsqueeze(1)
            self.stats = ClassStatistics(means, self.sums.sum(0) / self.n, self.counts, 0.0)
            self.sums = None
            if self.projections:
                self._decompose()
            if self.jk is not None:
                self.jk.end_sums()
        elif self.phase == 1:
            if self.n_second != self.n:
                raise UsageError(f"pass 2 saw {self.n_second} samples but pass 1 saw {self.n}; feed the same data")
            self.stats.trace_within = self.within / self.n
            if self.jk is not None:
                self.jk.end_spread()
        self.phase += 1

    def _decompose(self) -> None:
        self.u, self.s = _mean_directions(self.stats.centred_means)
        self.proj_sq = torch.zeros(self.u.shape[1], dtype=torch.float64, device=self.u.device)

    def feed(self, batches: Iterable[tuple[ArrayLike, ArrayLike]] | None = None) -> NCAccumulator:
        """Run the current pass over ``batches`` and close it."""
        for h, y in batches or ():
            self.update(h, y)
        self.end_pass()
        return self

    # ---------------------------------------------------------------- results
    def _done(self) -> ClassStatistics:
        if self.phase != 2:
            raise RuntimeError("feed the data twice (two passes, each closed with end_pass) before reading results")
        return self.stats

    def nc1(self, normalize: bool = False) -> float:
        """``tr(Σ_W Σ_B⁺)``; ``normalize=True`` divides by K (Papyan et al.)."""
        self._done()
        if self.u is None:
            raise RuntimeError("this accumulator was built with projections=False")
        value = self.k * float((self.proj_sq / self.n / self.s**2).sum())
        return value / self.k if normalize else value

    def nc1_se(self, normalize: bool = False) -> float:
        """Jackknife standard error of :meth:`nc1` (needs ``jackknife=G``; see the module doc)."""
        self._done()
        if self.jk is None:
            raise RuntimeError("this accumulator was built without jackknife groups (jackknife=G)")
        return self.jk.se() / (self.k if normalize else 1)

    def separation(self) -> float:
        """``tr(Σ_W) / tr(Σ_B)``."""
        stats = self._done()
        trace_between = float((stats.centred_means**2).sum()) / stats.num_classes
        if trace_between == 0.0:
            raise UsageError("all class means coincide: tr(Σ_B) is zero and the separation is undefined")
        return stats.trace_within / trace_between


class NC1Undefined(UsageError):
    """The class means coincide (Σ_B = 0), e.g. when a diverged model maps every input to the same features."""


def _mean_directions(centred_means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``U`` (D×r) and ``S`` (r) of the thin SVD of the centred class means (K×D), rank-truncated."""
    m = centred_means.T  # D×K
    u, s, _ = torch.linalg.svd(m, full_matrices=False)
    keep = s > s.max() * max(m.shape) * torch.finfo(torch.float64).eps
    if not bool(keep.any()):
        raise NC1Undefined("all class means coincide: Σ_B is zero and NC1 is undefined")
    return u[:, keep].contiguous(), s[keep]


class _Jackknife:
    """Delete-one-group NC1 replicates for :class:`NCAccumulator` (``jackknife=G``); it feeds the float64 row
    chunks it has already made, in order."""

    def __init__(self, groups: int, dim: int, device):
        self.g, self.dim, self.device = groups, dim, device
        self.sums = torch.zeros(groups, 0, dim, dtype=torch.float64, device=device)  # G×K×D class sums per group
        self.counts = torch.zeros(groups, 0, dtype=torch.long, device=device)
        self.seen = torch.zeros(0, dtype=torch.long, device=device)  # samples of each class dealt so far
        self.order_check = torch.zeros(groups, dim, dtype=torch.float64, device=device)
        self.error: str | None = None

    def grow(self, k: int) -> None:
        """Room for classes ``0..k-1`` (K grows with the largest label seen)."""
        more = k - self.sums.shape[1]
        if more > 0:
            self.sums = torch.cat([self.sums, self.sums.new_zeros(self.g, more, self.dim)], 1)
            self.counts = torch.cat([self.counts, self.counts.new_zeros(self.g, more)], 1)
            self.seen = torch.cat([self.seen, self.seen.new_zeros(more)])

    def _deal(self, y: torch.Tensor) -> torch.Tensor:
        """Group of each sample: the i-th sample of class c (in feeding order) goes to group i mod G."""
        onehot = torch.nn.functional.one_hot(y, len(self.seen))
        rank = (onehot.cumsum(0) - 1).gather(1, y[:, None])[:, 0] + self.seen[y]
        self.seen += onehot.sum(0)
        return rank % self.g

    def add_sums(self, x: torch.Tensor, y: torch.Tensor) -> None:
        flat = self._deal(y) * self.sums.shape[1] + y
        self.sums.view(-1, self.dim).index_add_(0, flat, x)
        self.counts.view(-1).index_add_(0, flat, torch.ones_like(flat))

    def end_sums(self) -> None:
        """Each replicate's class means and mean directions (all classes must survive every deletion). Groups
        left empty (every class has fewer than G samples) are no replicates: the jackknife uses the others."""
        total, counts = self.sums.sum(0), self.counts.sum(0)
        self.means, self.u, self.s, self.n = [], [], [], []
        self.order_check.zero_()
        self.seen.zero_()
        self.active = [g for g in range(self.g) if int(self.counts[g].sum()) > 0]
        for g in self.active:
            c = counts - self.counts[g]
            if bool((c == 0).any()):
                self.error = "the jackknife needs at least two samples of every class"
                return
            means = (total - self.sums[g]) / c.to(torch.float64).unsqueeze(1)
            u, s = _mean_directions(means - (total - self.sums[g]).sum(0) / c.sum())
            self.means.append(means)
            self.u.append(u)
            self.s.append(s)
            self.n.append(int(c.sum()))
        self.proj = torch.zeros(len(self.active), dtype=torch.float64, device=self.device)

    def add_spread(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.error:
            return
        group = self._deal(y)
        self.order_check.index_add_(0, group, x)
        for i, g in enumerate(self.active):  # every sample's term in every replicate but its own group's
            terms = (((x - self.means[i][y]) @ self.u[i]) / self.s[i]) ** 2
            self.proj[i] += terms.sum(1)[group != g].sum()

    def end_spread(self) -> None:
        scale = float(self.sums.abs().amax()) if self.sums.numel() else 1.0
        if not self.error and not torch.allclose(self.order_check, self.sums.sum(1), rtol=1e-9, atol=1e-9 * scale):
            raise UsageError("with jackknife groups, pass 2 must feed the samples in the same order as pass 1")

    def se(self) -> float:
        if self.error:
            raise UsageError(self.error)
        k = self.sums.shape[1]
        reps = k * self.proj / torch.tensor(self.n, dtype=torch.float64, device=self.device)
        g = len(reps)
        return float(((g - 1) / g * ((reps - reps.mean()) ** 2).sum()).sqrt())


def accumulate(
    features: ArrayLike, labels: ArrayLike, num_classes: int | None = None, projections: bool = True,
    jackknife: int = 0,
) -> NCAccumulator:
    """Both passes of an :class:`NCAccumulator` over in-memory features (row chunks)."""
    h, y, k = _check_inputs(features, labels, num_classes)
    acc = NCAccumulator(k, projections=projections, jackknife=jackknife)
    for _ in range(2):
        acc.feed((h[s], y[s]) for s in _row_slices(len(y), h.shape[1]))
    return acc


def class_statistics(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> ClassStatistics:
    """Two chunked passes: class sums, then the within-class scatter trace."""
    return accumulate(features, labels, num_classes, projections=False).stats


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
    return accumulate(features, labels, num_classes, projections=True).nc1(normalize)


def separation(features: ArrayLike, labels: ArrayLike, num_classes: int | None = None) -> float:
    """Compression/separation measure ``tr(Σ_W) / tr(Σ_B)`` (the lecture's ``D_l``)."""
    return accumulate(features, labels, num_classes, projections=False).separation()


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
