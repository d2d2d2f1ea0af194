import numpy as np
import pytest
import torch

from sclft import nc


def reference_nc1(h, y, k):
    """Explicit D×D covariances and numpy pinv: the obviously-correct definition."""
    h = np.asarray(h, dtype=np.float64)
    n, d = h.shape
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    mu_g = h.mean(0)
    centred = h - means[y]
    sigma_w = centred.T @ centred / n
    m = (means - mu_g).T
    sigma_b = m @ m.T / k
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)))


def reference_separation(h, y, k):
    h = np.asarray(h, dtype=np.float64)
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    within = ((h - means[y]) ** 2).sum() / len(h)
    between = ((means - h.mean(0)) ** 2).sum() / k
    return within / between


@pytest.mark.parametrize(
    "n,d,k,balanced",
    [(200, 16, 5, True), (60, 300, 4, True), (150, 40, 7, False), (45, 500, 3, False), (500, 8, 10, True)],
)
def test_nc1_matches_explicit_pinv(n, d, k, balanced):
    rng = np.random.default_rng(n + d + k)
    if balanced:
        y = np.arange(n) % k
    else:
        p = rng.dirichlet(np.ones(k) * 0.7)
        y = np.concatenate([np.arange(k), rng.choice(k, size=n - k, p=p)])
    centres = rng.normal(size=(k, d)) * 2.0
    h = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.2, 2.0, size=d)
    ours = nc.nc1(torch.from_numpy(h).float(), torch.from_numpy(y))
    ref = reference_nc1(h.astype(np.float32), y, k)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert nc.nc1(h, y, normalize=True) == pytest.approx(reference_nc1(h, y, k) / k, rel=1e-6)
    assert nc.separation(h, y) == pytest.approx(reference_separation(h, y, k), rel=1e-9)


def test_nc1_accepts_feature_maps_and_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    h = rng.normal(size=(90, 4, 3, 3)) + y[:, None, None, None]
    full = nc.nc1(h, y)
    monkeypatch.setattr(nc, "_CHUNK_ROWS", 7)
    assert nc.nc1(h, y) == pytest.approx(full, rel=1e-10)
    assert full == pytest.approx(reference_nc1(h.reshape(90, -1), y, 3), rel=1e-6)


def test_perfect_collapse_is_zero_and_scale_invariant():
    y = np.repeat(np.arange(4), 5)
    centres = np.eye(4, 6)
    assert nc.nc1(centres[y], y) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    h = centres[y] + 0.1 * rng.normal(size=(20, 6))
    assert nc.nc1(10 * h, y) == pytest.approx(nc.nc1(h, y), rel=1e-9)


def test_missing_class_and_single_class_raise():
    h = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="no samples"):
        nc.nc1(h, np.array([0] * 5 + [2] * 5))
    with pytest.raises(ValueError, match="no samples"):
        nc.separation(h, np.array([0, 1] * 5), num_classes=3)
    with pytest.raises(ValueError, match="two classes"):
        nc.nc1(h, np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match="rows"):
        nc.nc1(h, np.zeros(9, dtype=int))


def test_nc2_simplex_etf_is_zero():
    k = 4
    etf = np.eye(k) - 1.0 / k
    y = np.repeat(np.arange(k), 3)
    assert nc.nc2_equinorm(etf[y], y) == pytest.approx(0.0, abs=1e-12)
    assert nc.nc2_equiangular(etf[y], y) == pytest.approx(0.0, abs=1e-12)


def reference_jackknife_se(h, y, k, groups):
    """Delete-one-group jackknife by brute force: the i-th sample of each class sits in group i mod G; NC1 of
    the rest by the explicit pinv definition for each left-out group."""
    group = np.zeros(len(y), dtype=int)
    seen = np.zeros(k, dtype=int)
    for i, c in enumerate(y):
        group[i], seen[c] = seen[c] % groups, seen[c] + 1
    used = sorted(set(group))  # a group no sample was dealt to is no replicate
    reps = np.array([reference_nc1(h[group != g], y[group != g], k) for g in used])
    return float(np.sqrt((len(used) - 1) / len(used) * ((reps - reps.mean()) ** 2).sum()))


@pytest.mark.parametrize("n,d,k,groups", [(83, 7, 4, 5), (120, 40, 6, 10), (41, 300, 3, 4), (24, 6, 6, 10)])
def test_jackknife_se_matches_brute_force(n, d, k, groups, monkeypatch):
    rng = np.random.default_rng(n + d)
    y = np.concatenate([np.arange(k), np.arange(k), rng.integers(0, k, n - 2 * k)])  # unbalanced, >= 2 a class
    h = rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(k, d))[y]
    ref = reference_jackknife_se(h, y, k, groups)
    acc = nc.accumulate(h, y, k, jackknife=groups)
    assert acc.nc1_se() == pytest.approx(ref, rel=1e-7) and ref > 0
    assert acc.nc1_se(normalize=True) == pytest.approx(ref / k, rel=1e-7)
    assert acc.nc1() == pytest.approx(reference_nc1(h, y, k), rel=1e-9)  # the estimate itself is unchanged
    monkeypatch.setattr(nc, "_CHUNK_ROWS", 7)  # streamed in small batches, classes interleaved across them
    streamed = nc.NCAccumulator(k, jackknife=groups)
    for _ in range(2):
        streamed.feed((h[i:i + 9], y[i:i + 9]) for i in range(0, n, 9))
    assert streamed.nc1_se() == pytest.approx(ref, rel=1e-7)


def test_jackknife_checks_order_samples_and_arguments():
    rng = np.random.default_rng(1)
    y = np.arange(60) % 3
    h = rng.normal(size=(60, 5)) + y[:, None]
    acc = nc.NCAccumulator(3, jackknife=4).feed([(h, y)])
    with pytest.raises(ValueError, match="same order"):
        acc.feed([(h[::-1].copy(), y[::-1].copy())])
    single = np.concatenate([y, [2]]), np.concatenate([h, h[:1]])
    lonely = np.concatenate([y[y != 2], [2]]), np.concatenate([h[y != 2], h[:1]])  # class 2 has one sample
    assert nc.accumulate(single[1], single[0], jackknife=4).nc1_se() > 0
    with pytest.raises(ValueError, match="two samples of every class"):
        nc.accumulate(lonely[1], lonely[0], jackknife=4).nc1_se()
    with pytest.raises(RuntimeError, match="without jackknife"):
        nc.accumulate(h, y).nc1_se()
    for bad in (1, -2):
        with pytest.raises(ValueError, match="jackknife"):
            nc.NCAccumulator(3, jackknife=bad)


def test_a_model_mapping_every_input_alike_gets_nan_nc1_not_a_failed_run(caplog):
    """A diverged run's head input can be the same vector for every image: NC1 is undefined there. The
    evaluation records NaN with a warning (the run keeps its accuracy); `sclft nc` on such features still refuses."""
    import math

    from sclft.eval import evaluate

    class Collapsed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(3, 4)

        def forward_features(self, x):
            return torch.ones(len(x), 3)

    x, y = torch.randn(12, 5), torch.arange(12) % 4
    loader = [(x[:6], y[:6]), (x[6:], y[6:])]
    model = Collapsed()
    expected = float((model.head(torch.ones(1, 3)).argmax(1) == y).float().mean())  # one prediction for all
    with caplog.at_level("WARNING", logger="sclft.eval"):
        out = evaluate(model, loader, num_classes=4, with_nc1=True)
    assert math.isnan(out["nc1"]) and out["accuracy"] == pytest.approx(expected) == 0.25
    assert "NC1 is NaN: all class means coincide" in caplog.text and "lower --lr" in caplog.text
    with pytest.raises(ValueError, match="all class means coincide"):
        nc.nc1(torch.ones(12, 3), y, 4)
