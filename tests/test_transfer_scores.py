"""LogME and NCTI (sclft.transfer_scores) against independent references: the Gaussian marginal likelihood of
the Bayesian linear model, a brute-force grid over (α, β), matrices with known nuclear norms, collapsed sets,
and values of the reference implementations on fixed synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from sclft import transfer_scores as ts


def _blobs(n_per_class=15, k=3, d=6, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    y = np.repeat(np.arange(k), n_per_class)
    return centres[y] + spread * rng.normal(size=(len(y), d)), y


def _marginal(f, target, alpha, beta):
    """log N(y; 0, α⁻¹ F Fᵀ + β⁻¹ I) / N: the evidence of w ~ N(0, α⁻¹I), y = Fw + N(0, β⁻¹I)."""
    n = len(target)
    cov = f @ f.T / alpha + np.eye(n) / beta
    return multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(target) / n


@pytest.mark.parametrize("n_per_class,d", [(15, 6), (4, 20)])  # N > D and N < D
def test_logme_evidence_is_the_gaussian_marginal_at_the_returned_alpha_beta(n_per_class, d):
    f, y = _blobs(n_per_class=n_per_class, d=d)
    res = ts.logme(f, y)
    for c in range(3):
        direct = _marginal(f, (y == c).astype(float), res.alphas[c], res.betas[c])
        assert res.evidences[c] == pytest.approx(direct, rel=1e-9, abs=1e-9)
    assert res.score == pytest.approx(np.mean(res.evidences))


@pytest.mark.parametrize("n_per_class,d", [(15, 6), (6, 20)])  # N = 45 > D; N = 18 < D, not interpolated
def test_logme_fixed_point_reaches_the_grid_maximum(n_per_class, d):
    # (with N < D a target the features interpolate has its supremum at β → ∞, outside any grid)
    f, y = _blobs(n_per_class=n_per_class, d=d, spread=2.0, seed=1)
    target = (y == 1).astype(float)
    log_a, log_b = np.linspace(-2, 10, 49), np.linspace(-2, 11, 53)  # steps of 0.25
    lam, u = np.linalg.eigh(f @ f.T)  # the marginal's covariance α⁻¹FFᵀ + β⁻¹I in FFᵀ's eigenbasis, on the grid
    var = np.clip(lam, 0, None)[None, None, :] / np.exp(log_a)[:, None, None] + np.exp(-log_b)[None, :, None]
    grid = -0.5 * (np.log(var).sum(-1) + ((u.T @ target) ** 2 / var).sum(-1) + len(target) * math.log(2 * math.pi))
    grid /= len(target)
    assert grid[10, 20] == pytest.approx(_marginal(f, target, math.exp(log_a[10]), math.exp(log_b[20])))
    ia, ib = np.unravel_index(grid.argmax(), grid.shape)
    assert 0 < ia < len(log_a) - 1 and 0 < ib < len(log_b) - 1  # an interior maximum
    tight = ts.logme(f, y, max_iter=500, tol=1e-10)
    assert tight.evidences[1] >= grid.max() - 1e-9  # the maximum, not just a stationary value below the grid's
    assert abs(math.log(tight.alphas[1]) - log_a[ia]) <= 0.25 and abs(math.log(tight.betas[1]) - log_b[ib]) <= 0.25
    published = ts.logme(f, y)  # the reference's 1 % stopping rule: within a hair of the maximum
    assert published.evidences[1] == pytest.approx(tight.evidences[1], abs=1e-3)
    assert max(published.iterations) <= ts.LOGME_MAX_ITER


def test_logme_matches_the_reference_implementation_on_fixed_data():
    # thuml/LogME on this data: LogME().fit(f, y) (its default, the fixed-point variant) -0.0962525617, the ICML
    # each_evidence variant -0.0962728 (it evaluates the evidence at the previous step's m)
    f, y = _blobs(n_per_class=20, k=4, d=8, seed=3)
    assert ts.logme(f, y).score == pytest.approx(-0.0962525617, abs=1e-8)
    assert ts.logme(f, y).score == pytest.approx(-0.0962728, abs=3e-5)


def test_logme_ranks_separable_features_above_noise():
    f, y = _blobs(spread=0.2)
    noise = np.random.default_rng(5).normal(size=f.shape)
    assert ts.logme(f, y).score > ts.logme(noise, y).score


def test_nuclear_norm_terms_on_matrices_with_known_singular_values():
    k, n = 4, 9
    etf = np.eye(k) - 1.0 / k  # centred simplex: singular values 1 (k−1 times) and 0
    z = np.repeat(etf, n, axis=0)  # each class n times: singular values √n
    assert ts.seli_term(z) == pytest.approx(math.sqrt(n) * (k - 1))
    assert ts.seli_term(z + 5.0) == pytest.approx(math.sqrt(n) * (k - 1))  # centring
    y = np.repeat(np.arange(k), n)
    onehot = np.eye(k)[y]
    assert ts.ncc_term(onehot, y) == 1.0
    assert ts.vc_term(onehot, y) == pytest.approx(math.log(k * math.sqrt(n)))  # each P_c is rank 1, norm √n
    uniform = np.full((k * n, k), 1.0 / k)
    assert ts.ncc_term(uniform, y) == pytest.approx(1.0 / k)
    assert ts.vc_term(uniform, y) == pytest.approx(math.log(k * math.sqrt(n / k)))


def test_ncti_terms_of_a_perfectly_collapsed_set():
    k, n, d = 5, 12, 70
    rng = np.random.default_rng(0)
    means = rng.normal(size=(k, d)) * 10
    y = np.repeat(np.arange(k), n)
    f = means[y] + 1e-4 * rng.normal(size=(k * n, d))
    t = ts.ncti_terms(f, y)
    assert t.ncc == pytest.approx(1.0, abs=1e-9)
    assert t.vc == pytest.approx(math.log(k * math.sqrt(n)), abs=1e-6)
    assert t.pca_dim == min(64, k * n, d)
    noisy = ts.ncti_terms(means[y] + 10 * rng.normal(size=(k * n, d)), y)
    assert noisy.ncc < t.ncc


@pytest.mark.parametrize("spread,scale,reference", [
    (12, 1.0, (57.59575390370287, 0.9095841713608535, 3.262887982550804)),  # shrinkage 1e-10: svd-solver LDA
    (12, 0.02, (55.57818023680426, 0.9033997351101123, 3.2671504043504442))])  # shrinkage 0.031: eigen solver
def test_ncti_terms_match_the_reference_implementation_on_fixed_data(spread, scale, reference):
    # BUserName/NCTI metrics.NCTI_Score on this data (PCA 64 of 80 dimensions) returned
    # (all_lowfeat_nuc, sfda_score, log(class_pred_nuc)) = reference
    f, y = _blobs(n_per_class=30, k=4, d=80, spread=spread, seed=7)
    t = ts.ncti_terms(f * scale, y)
    assert (t.seli, t.ncc, t.vc) == pytest.approx(reference, rel=1e-7)
    assert (t.shrinkage is None) == (scale == 1.0)


def test_ncti_combination_is_minmax_normalised_across_candidates():
    terms = {"a": {"seli": 10.0, "ncc": 0.9, "vc": 2.0}, "b": {"seli": 30.0, "ncc": 0.5, "vc": 3.0},
             "c": {"seli": 20.0, "ncc": 0.7, "vc": 4.0}}
    # seli' = 0, 1, .5; ncc' = 1, 0, .5; vc' = 0, .5, 1
    assert ts.ncti(terms) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    same = {n: {**t, "ncc": 0.5} for n, t in terms.items()}  # a constant term adds 0 (the reference: 0/0)
    assert ts.ncti(same) == pytest.approx({"a": 0.0, "b": 0.5, "c": -0.5})
    assert all(math.isnan(v) for v in ts.ncti({"a": terms["a"]}).values())  # one candidate: no ranking
    partial = ts.ncti({**terms, "d": {"seli": math.nan, "ncc": 1.0, "vc": 0.0}})
    assert math.isnan(partial["d"]) and partial["a"] == pytest.approx(1.0)


def test_scores_refuse_bad_input():
    f, y = _blobs()
    with pytest.raises(ValueError, match="non-finite"):
        ts.logme(np.where(np.arange(f.size).reshape(f.shape) == 3, np.nan, f), y)
    with pytest.raises(ValueError, match="labels for"):
        ts.ncti_terms(f, y[:-1])
    with pytest.raises(ValueError, match="at least two classes"):
        ts.logme(f, np.zeros(len(y), dtype=int))
    with pytest.raises(ValueError, match="whole class ids"):
        ts.logme(f, y + 0.5)
