"""Transferability scores from the literature, for one feature matrix (a layer, or a backbone's penultimate
feature) on the downstream training data: LogME and NCTI's three collapse terms (docs/design.md §1, "Scores
from the transferability literature").

* :func:`logme` — You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"
  (ICML 2021; reference code ``thuml/LogME``). The log marginal likelihood (evidence) of a Bayesian linear
  head ``y = F w + ε``, ``w ~ N(0, α⁻¹I)``, ``ε ~ N(0, β⁻¹I)``, maximised over α, β by the paper's fixed-point
  iteration (Algorithm 1: ``γ = Σ σ_i / (σ_i + α/β)``, ``α ← γ / mᵀm``, ``β ← (N − γ) / ‖y − Fm‖²``), per
  class on one-vs-rest 0/1 targets, divided by N and averaged over the classes. Higher is better.
* :func:`ncti_terms` / :func:`ncti` — Wang et al., "How Far Pre-trained Models Are from Neural Collapse on the
  Target Dataset Informs their Transferability" (ICCV 2023; reference code ``BUserName/NCTI``, ``metrics.py``
  ``NCTI_Score`` and the combination in ``evaluate_metric_group1_cpu.py``). PCA to 64 dimensions, a shrinkage
  LDA, then three terms: ``seli`` (nuclear norm of the centred LDA projection: the geometry term), ``ncc``
  (mean LDA posterior of the true class: the nearest-centre classifier term) and ``vc`` (log of the summed
  per-class nuclear norms of the posteriors: within-class variability, lower is more collapsed). The score of
  a *set* of candidates is ``seli' + ncc' − vc'`` with each term min–max normalised across the candidates, so
  NCTI ranks candidates; a single candidate has no NCTI score.

Torch-free (numpy, scipy, scikit-learn). Features of any per-sample shape are flattened; computation is in
float64. Which parts follow the papers exactly and which deviate: docs/design.md §1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .errors import UsageError

__all__ = ["LogME", "logme", "logme_evidence", "NCTITerms", "ncti_terms", "ncti", "NCTI_TERMS"]

LOGME_MAX_ITER = 11  # the reference's loop bound ("should converge after at most 10 steps")
LOGME_TOL = 0.01  # the reference's stopping rule: relative change of λ = α/β below 1 %
LOGME_EPS = 1e-5  # the reference's guard in the α, β updates
NCTI_PCA_DIM = 64  # the reference's PCA width
NCTI_SHRINK_DIMS = 32  # shrinkage = exp(−sum of the first 32 PCA variances), at least 1e-10 (reference)
NCTI_TERMS = ("seli", "ncc", "vc")
# sign of each term in the combined score: seli and ncc reward, vc (within-class variability) penalises
NCTI_SIGNS = {"seli": 1.0, "ncc": 1.0, "vc": -1.0}
LAYER_SCORES: Sequence[str] = ("logme", "ncti_seli", "ncti_ncc", "ncti_vc")  # keys of layer_scores()


def _matrix(features) -> np.ndarray:
    f = np.asarray(getattr(features, "detach", lambda: features)(), dtype=np.float64)
    f = f.reshape(f.shape[0], -1)
    if not np.isfinite(f).all():
        raise UsageError("features contain non-finite values (NaN or inf); transferability scores need finite "
                         "features")
    return f


def _labels(labels, n: int) -> tuple[np.ndarray, int]:
    y = np.asarray(getattr(labels, "detach", lambda: labels)()).reshape(-1)
    if len(y) != n:
        raise UsageError(f"{len(y)} labels for {n} feature rows")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(y == np.round(y))):
        raise UsageError(f"labels must be whole class ids 0..K-1, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0:
        raise UsageError(f"labels must be class ids 0..K-1, got {int(y.min())}")
    k = int(y.max()) + 1
    missing = sorted(set(range(k)) - set(y.tolist()))
    if k < 2 or missing:
        raise UsageError(f"transferability scores need at least two classes, each with a sample (labels 0..{k - 1}; "
                         f"missing: {missing[:10]})")
    return y, k


# ------------------------------------------------------------------------------------------ LogME
@dataclass
class LogME:
    """LogME of a feature matrix: ``score`` (mean over classes of evidence / N) and, per class, the maximising
    ``alphas`` / ``betas``, the per-class ``evidences`` and the fixed-point ``iterations``."""

    score: float
    evidences: list[float]
    alphas: list[float]
    betas: list[float]
    iterations: list[int]


def _spectrum(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues ``σ`` of FᵀF (its non-zero part: the smaller Gram matrix) and the basis that turns a target
    ``y`` into ``g = (s_i · u_iᵀ y)_i`` (so ``g_i² = σ_i x_i²`` with ``x = Uᵀ y``, stable for tiny σ)."""
    n, d = f.shape
    if d <= n:
        sigma, v = np.linalg.eigh(f.T @ f)
        return np.clip(sigma, 0.0, None), v.T @ f.T  # g = Vᵀ Fᵀ y
    sigma, u = np.linalg.eigh(f @ f.T)
    sigma = np.clip(sigma, 0.0, None)
    return sigma, np.sqrt(sigma)[:, None] * u.T  # g = S Uᵀ y


def logme_evidence(alpha: float, beta: float, sigma: np.ndarray, g2: np.ndarray, y2: float, n: int, d: int) -> float:
    """Closed-form log evidence / N at (α, β), given the eigenvalues ``sigma`` of FᵀF's non-zero block (the
    other ``d − len(sigma)`` are 0), ``g2`` = (s_i u_iᵀ y)² and ``y2`` = ‖y‖²:
    ``D/2 log α + N/2 log β − ½ log|αI + βFᵀF| − β/2 ‖y − Fm‖² − α/2 ‖m‖² − N/2 log 2π`` with
    ``m = β (αI + βFᵀF)⁻¹ Fᵀ y``."""
    t = alpha / beta
    m2 = float(np.sum(g2 / (t + sigma) ** 2))
    res2 = max(y2 - float(np.sum(g2 * (2 * t + sigma) / (t + sigma) ** 2)), 0.0)
    logdet = float(np.sum(np.log(alpha + beta * sigma))) + (d - len(sigma)) * math.log(alpha)
    return (d / 2 * math.log(alpha) + n / 2 * math.log(beta) - logdet / 2 - beta / 2 * res2 - alpha / 2 * m2
            - n / 2 * math.log(2 * math.pi)) / n


def _fixed_point(sigma: np.ndarray, g2: np.ndarray, y2: float, n: int, max_iter: int, tol: float
                 ) -> tuple[float, float, int]:
    alpha, beta = 1.0, 1.0  # the reference's start
    lam = alpha / beta
    for it in range(1, max_iter + 1):
        gamma = float(np.sum(sigma / (sigma + lam)))
        m2 = float(np.sum(g2 / (lam + sigma) ** 2))  # ‖m‖², m = β A⁻¹ Fᵀ y at the current α, β
        res2 = max(y2 - float(np.sum(g2 * (2 * lam + sigma) / (lam + sigma) ** 2)), 0.0)  # ‖y − F m‖²
        alpha = gamma / (m2 + LOGME_EPS)
        beta = (n - gamma) / (res2 + LOGME_EPS)
        new_lam = alpha / beta
        if abs(new_lam - lam) / lam < tol:
            return alpha, beta, it
        lam = new_lam
    return alpha, beta, max_iter


def logme(features, labels, *, max_iter: int = LOGME_MAX_ITER, tol: float = LOGME_TOL) -> LogME:
    """LogME (You et al., ICML 2021) of ``features`` (N × D, any per-sample shape) for class ids ``labels``.

    One eigen-decomposition of the smaller Gram matrix serves every class; each class's one-vs-rest target runs
    the paper's fixed-point iteration from α = β = 1 until λ = α/β changes by less than ``tol`` (relative) or
    ``max_iter`` steps (the reference's 1 % and 11). The evidence is then evaluated in closed form at the final
    α, β (:func:`logme_evidence`). ``score`` is the mean over classes of evidence / N.
    """
    f = _matrix(features)
    y, k = _labels(labels, len(f))
    n, d = f.shape
    sigma, basis = _spectrum(f)
    out = LogME(0.0, [], [], [], [])
    for c in range(k):
        target = (y == c).astype(np.float64)
        g2 = (basis @ target) ** 2
        y2 = float(target @ target)
        alpha, beta, it = _fixed_point(sigma, g2, y2, n, max_iter, tol)
        out.evidences.append(logme_evidence(alpha, beta, sigma, g2, y2, n, d))
        out.alphas.append(alpha)
        out.betas.append(beta)
        out.iterations.append(it)
    out.score = float(np.mean(out.evidences))
    return out


# ------------------------------------------------------------------------------------------ NCTI
@dataclass
class NCTITerms:
    """NCTI's three terms of one feature matrix (larger ``seli`` / ``ncc`` and smaller ``vc`` = closer to
    collapse), and what they were computed on."""

    seli: float  # nuclear norm of the centred LDA projection
    ncc: float  # mean LDA posterior probability of the true class
    vc: float  # log Σ_c ‖P_c‖_* over the per-class posterior matrices P_c
    pca_dim: int
    shrinkage: float | None  # None: the LDA's svd solver without shrinkage (the reference's choice at 1e-10)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def nuclear_norm(a: np.ndarray) -> float:
    """Sum of the singular values of ``a``."""
    return float(np.linalg.svd(a, compute_uv=False).sum())


def seli_term(z: np.ndarray) -> float:
    """NCTI's geometry term: the nuclear norm of ``z`` (N × d) centred on its mean row."""
    return nuclear_norm(z - z.mean(axis=0, keepdims=True))


def ncc_term(proba: np.ndarray, y: np.ndarray) -> float:
    """NCTI's classifier term: the mean posterior probability ``proba[i, y_i]``."""
    return float(proba[np.arange(len(y)), y].mean())


def vc_term(proba: np.ndarray, y: np.ndarray) -> float:
    """NCTI's variability term: ``log Σ_c ‖P_c‖_*``, ``P_c`` the posterior rows of class c's samples."""
    return math.log(sum(nuclear_norm(proba[y == c]) for c in np.unique(y)))


def ncti_terms(features, labels, *, pca_dim: int = NCTI_PCA_DIM) -> NCTITerms:
    """NCTI's three terms (Wang et al., ICCV 2023) of ``features`` for ``labels``: PCA to
    ``min(pca_dim, N, D)`` dimensions (the reference: 64), an LDA with shrinkage
    ``max(exp(−Σ of the first 32 PCA variances), 1e-10)`` (at 1e-10 the reference switches to the unshrunk
    svd solver, as here), then :func:`seli_term` of the LDA projection, :func:`ncc_term` and :func:`vc_term`
    of its posteriors on the same samples."""
    from sklearn.decomposition import PCA  # scikit-learn: the reference's PCA and LDA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    f = _matrix(features)
    y, _ = _labels(labels, len(f))
    dim = min(pca_dim, *f.shape)
    pca = PCA(n_components=dim, svd_solver="full")
    x = pca.fit_transform(f)
    shrink = max(math.exp(-float(pca.explained_variance_[:NCTI_SHRINK_DIMS].sum())), 1e-10)
    lda = (LinearDiscriminantAnalysis(solver="svd") if shrink == 1e-10
           else LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrink))
    z = lda.fit_transform(x, y)
    proba = lda.predict_proba(x)
    return NCTITerms(seli=seli_term(z), ncc=ncc_term(proba, y), vc=vc_term(proba, y), pca_dim=dim,
                     shrinkage=None if shrink == 1e-10 else shrink)


def ncti(terms: Mapping[str, Mapping[str, float] | NCTITerms]) -> dict[str, float]:
    """NCTI scores of a set of candidates (name → its :class:`NCTITerms` or a dict with ``seli``, ``ncc``,
    ``vc``): each term min–max normalised across the candidates, then ``seli' + ncc' − vc'`` (the reference's
    combination; higher = more transferable). A term equal on every candidate contributes 0 (the reference
    divides by zero there). Candidates with a missing or non-finite term get NaN and take no part in the
    normalisation; with fewer than two scorable candidates every score is NaN."""
    values = {name: (t.as_dict() if isinstance(t, NCTITerms) else dict(t or {})) for name, t in terms.items()}
    ok = [n for n, t in values.items() if all(isinstance(t.get(k), (int, float)) and math.isfinite(t[k])
                                              for k in NCTI_TERMS)]
    scores = {name: math.nan for name in values}
    if len(ok) < 2:
        return scores
    for name in ok:
        scores[name] = 0.0
    for key in NCTI_TERMS:
        col = [values[n][key] for n in ok]
        low, span = min(col), max(col) - min(col)
        if span > 0:
            for name in ok:
                scores[name] += NCTI_SIGNS[key] * (values[name][key] - low) / span
    return scores


def layer_scores(features, labels) -> dict[str, float]:
    """Every per-feature-matrix score this module has, flat and JSON-ready: ``logme`` and the NCTI terms
    ``ncti_seli``, ``ncti_ncc``, ``ncti_vc`` (combine across candidates with :func:`ncti`)."""
    terms = ncti_terms(features, labels)
    return {"logme": logme(features, labels).score, **{f"ncti_{k}": getattr(terms, k) for k in NCTI_TERMS}}


def ncti_from_rows(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """:func:`ncti` over candidates whose scores are :func:`layer_scores` dicts (``ncti_seli`` …)."""
    return ncti({name: {k: r.get(f"ncti_{k}", math.nan) for k in NCTI_TERMS} for name, r in rows.items()})

