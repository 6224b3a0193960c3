"""MATH.md, as numbers: the mappings, the bounds, the gradients and the step (claims 1, 4, 5, 6)."""

from __future__ import annotations

import math

import entmax
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamrbf.core import _kernels
from streamrbf.core.accelerated import apply_step, batch_statistics, sq_distances
from streamrbf.core.losses import (
    distortion,
    fixed_responsibility_gradient,
    free_energy,
    kmeans_objective,
)
from streamrbf.core.mappings import entmax15, responsibilities, softmax, sparse_entmax15
from streamrbf.core.statistics import SufficientStatistics

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


def _kernel_rows(d: np.ndarray, temperature: float, mapping: str = "entmax15") -> np.ndarray:
    """Dense responsibilities from the compiled row kernel."""
    n, k = d.shape
    out = np.zeros((n, k))
    vals, idx = np.empty(k), np.empty(k, np.int64)
    ub, tb = np.empty(k), np.empty(k)
    for i in range(n):
        m, _, _ = _kernels.row_responsibilities(
            d[i], temperature, _kernels.MAPPING_CODES[mapping], vals, idx, ub, tb
        )
        out[i, idx[:m]] = vals[:m]
    return out


@st.composite
def distance_rows(draw):
    n = draw(st.integers(1, 12))
    k = draw(st.integers(1, 40))
    scale = 10.0 ** draw(st.integers(-8, 8))
    d = draw(arrays(np.float64, (n, k), elements=st.floats(0, 1, allow_nan=False))) * scale
    temperature = 10.0 ** draw(st.floats(-12, 8))
    return d, temperature


@given(distance_rows())
def test_entmax_kernels_match_the_entmax_package(case):
    d, temperature = case
    ref = entmax.entmax15(torch.from_numpy(-d / temperature), dim=-1).numpy()
    kernel = _kernel_rows(d, temperature)
    dense = entmax15(torch.from_numpy(d), temperature).numpy()
    vals, idx = sparse_entmax15(torch.from_numpy(d), temperature)
    sparse = torch.zeros(d.shape, dtype=torch.float64).scatter_(1, idx, vals).numpy()
    gap = d - d.min(axis=1, keepdims=True)
    for p in (kernel, dense, sparse):
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
        assert np.all(p[gap >= 2 * temperature] == 0.0)  # fact 1: exact zeros off the support
        if np.isfinite(ref).all():
            assert np.abs(p - ref).max() <= 1e-6


@given(distance_rows())
def test_one_hot_when_the_margin_exceeds_two_t(case):
    d, temperature = case
    srt = np.sort(d, axis=1)
    p = _kernel_rows(d, temperature)
    if d.shape[1] > 1:
        clear = (srt[:, 1] - srt[:, 0]) >= 2 * temperature  # fact 2
        assert np.all(p[clear].max(axis=1) == 1.0)
        np.testing.assert_array_equal(p[clear].argmax(axis=1), d[clear].argmin(axis=1))


@given(distance_rows(), st.sampled_from(["softmax", "hard"]))
def test_kernel_softmax_and_hard_match_torch(case, mapping):
    d, temperature = case
    torch_p = responsibilities(torch.from_numpy(d), temperature, mapping).numpy()
    kernel = _kernel_rows(d, temperature, mapping)
    if mapping == "hard":
        np.testing.assert_array_equal(kernel, torch_p)
    else:
        np.testing.assert_allclose(kernel, torch_p, atol=1e-9)


def test_below_half_the_margin_entmax_is_the_voronoi_assignment():
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.normal(size=(500, 3)))
    C = torch.from_numpy(rng.normal(size=(6, 3)))
    d = sq_distances(X, C)
    srt = d.sort(dim=1).values
    margin = float((srt[:, 1] - srt[:, 0]).min())
    p = entmax15(d, 0.49 * margin)  # fact 3
    hard = torch.nn.functional.one_hot(d.argmin(1), 6).to(p.dtype)
    assert torch.equal(p, hard)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_naive_softmax_is_nan_at_tiny_t_and_entmax_never(dtype):
    rng = np.random.default_rng(1)
    d = torch.from_numpy(rng.uniform(1, 100, size=(1000, 8))).to(dtype)
    t = 1e-6
    naive = torch.exp(-d / t) / torch.exp(-d / t).sum(dim=1, keepdim=True)  # claim 4
    assert (~torch.isfinite(naive)).any(dim=1).float().mean() > 0.9
    for p in (entmax15(d, t), softmax(d, t)):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.sum(1), torch.ones(1000, dtype=dtype))
    assert np.isfinite(_kernel_rows(d.double().numpy(), t)).all()


@given(
    arrays(np.float64, (20, 4), elements=st.floats(0, 50)),
    st.floats(1e-3, 1e2),
)
def test_uniform_bounds_of_the_losses(d_np, temperature):
    d = torch.from_numpy(d_np)
    n, k = d.shape
    j = float(kmeans_objective(d))
    slack = 1e-9 * (1 + j)
    for mapping in ("softmax", "entmax15"):
        lt = float(distortion(d, temperature, mapping))
        assert -slack <= lt - j <= n * (k - 1) * temperature / math.e + slack
    f = float(free_energy(d, temperature))
    assert j - n * temperature * math.log(k) - slack <= f <= j + slack


def test_fixed_p_gradient_is_autograd_of_free_energy_and_differs_from_l_t():
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.normal(size=(200, 3)))
    C0 = torch.from_numpy(rng.normal(size=(4, 3)))
    gaps = []
    for t in (10.0, 1.0, 0.1, 0.01):
        C = C0.clone().requires_grad_(True)
        free_energy(sq_distances(X, C), t).backward()
        p = softmax(sq_distances(X, C0), t)
        analytic = fixed_responsibility_gradient(X, C0, p)
        torch.testing.assert_close(C.grad, analytic, rtol=1e-9, atol=1e-9)  # claim 5
        C2 = C0.clone().requires_grad_(True)
        distortion(sq_distances(X, C2), t, "softmax").backward()
        gaps.append(float((C2.grad - analytic).norm()))
    assert gaps[0] > 1e-3  # the full gradient of L_T has the extra factor ...
    assert all(a > b for a, b in zip(gaps, gaps[1:]))  # ... whose effect shrinks with T
    assert gaps[-1] < 1e-2 * gaps[0]


@given(st.integers(0, 10_000), st.floats(0.01, 10.0), st.sampled_from(["entmax15", "softmax"]))
def test_step_of_half_inverse_mass_is_the_weighted_mean(seed, temperature, mapping):
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.normal(size=(64, 3)))
    C = torch.from_numpy(rng.normal(size=(4, 3)))
    p = responsibilities(sq_distances(X, C), temperature, mapping)
    mass = p.sum(0)
    grad = fixed_responsibility_gradient(X, C, p)
    stepped = C - grad / (2 * mass[:, None])  # claim 1: eta_k = 1 / (2 N_k)
    xbar = (p.T @ X) / mass[:, None]
    keep = mass > 1e-12
    torch.testing.assert_close(stepped[keep], xbar[keep], rtol=0, atol=1e-10)
    stats = batch_statistics(X, C, temperature, mapping).stats
    via_stats, _ = apply_step(C, torch.zeros(4, dtype=torch.float64), stats, decay=0.0)
    torch.testing.assert_close(via_stats[keep], xbar[keep], rtol=0, atol=1e-10)


@given(st.integers(0, 10_000), st.integers(1, 7), st.sampled_from(["entmax15", "softmax", "hard"]))
def test_merged_shard_statistics_equal_one_step_on_all_data(seed, shards, mapping):
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.normal(size=(300, 5)))
    C = torch.from_numpy(rng.normal(size=(6, 5)))
    counts = torch.from_numpy(rng.uniform(0, 50, 6))
    whole = batch_statistics(X, C, 0.5, mapping).stats
    parts = SufficientStatistics.zeros(6, 5)
    for chunk in np.array_split(rng.permutation(300), shards):  # claim 6, any order
        parts = parts + batch_statistics(X[torch.from_numpy(chunk)], C, 0.5, mapping).stats
    assert parts.n == whole.n == 300
    a, na = apply_step(C, counts, whole, 0.9)
    b, nb = apply_step(C, counts, parts, 0.9)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    torch.testing.assert_close(na, nb, rtol=0, atol=1e-10)
    assert abs(parts.loss - whole.loss) <= 1e-9 * (1 + whole.loss)


@pytest.mark.parametrize("mapping", ["entmax15", "softmax", "hard"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_and_torch_backends_agree(mapping, dtype):
    rng = np.random.default_rng(3)
    X = torch.from_numpy(rng.normal(size=(2000, 16))).to(dtype)
    C = torch.from_numpy(rng.normal(size=(32, 16))).to(dtype)
    for t in (50.0, 2.0, 0.05):
        a = batch_statistics(X, C, t, mapping, backend="numba")
        b = batch_statistics(X, C, t, mapping, backend="torch")
        tol = 1e-9 if dtype == torch.float64 else 1e-3
        torch.testing.assert_close(a.stats.mass, b.stats.mass, rtol=tol, atol=tol)
        torch.testing.assert_close(a.stats.sums, b.stats.sums, rtol=tol, atol=tol * 10)
        assert torch.equal(a.labels, b.labels.to(a.labels.dtype))
        if mapping != "softmax":  # softmax's support is wherever exp does not underflow
            assert a.support == b.support


def test_entmax_gradient_is_finite_at_exact_ties():
    d = torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    d.requires_grad_(True)
    (entmax15(d, 1.0) * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(d.grad).all()
    # ... and equals the entmax package's gradient.
    z = (-d.detach() / 1.0).requires_grad_(True)
    (entmax.entmax15(z, dim=-1) * torch.arange(4.0, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(d.grad, -z.grad, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------- k-means++ (compiled)
def _kmeans_plusplus_numpy(X, k, rng):
    """The greedy k-means++ loop in numpy calls (the compiled kernel's reference): the same
    draws, ``rng.random(trials)`` per centre."""
    n = len(X)
    trials = 2 + int(math.log(k))
    norms = np.einsum("ij,ij->i", X, X)
    idx = [int(rng.integers(n))]
    closest = ((X - X[idx[0]]) ** 2).sum(axis=1)
    for _ in range(1, k):
        u = rng.random(trials)
        total = closest.sum()
        if total > 0 and math.isfinite(total):
            cand = np.minimum(np.searchsorted(np.cumsum(closest), u * total), n - 1)
        else:
            cand = np.minimum((u * n).astype(np.int64), n - 1)
        d = norms[:, None] - 2.0 * (X @ X[cand].T) + norms[cand][None, :]
        pots = np.minimum(closest[:, None], np.maximum(d, 0.0))
        best = int(np.argmin(pots.sum(axis=0)))
        idx.append(int(cand[best]))
        closest = pots[:, best]
    return X[idx]


@given(st.integers(1, 200), st.integers(1, 12), st.integers(1, 9), st.integers(-30, 30),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_compiled_kmeans_plusplus_equals_the_numpy_loop(n, d, k, exponent, dup, seed):
    from streamrbf.core.seeding import kmeans_plusplus

    n = max(n, k)
    rng = np.random.default_rng(seed)
    # Small integers times a power of two: every distance, dot product and cumulative sum is
    # exact in float64, so the compiled loop and BLAS must agree bit for bit (on other data
    # their rounding differs, which can tip a near-tie between candidates).
    X = rng.integers(-50, 51, size=(n, d)) * 2.0**exponent
    if dup:
        X[: (n + 1) // 2] = X[0]   # duplicates (all of X when n is 1 or 2: uniform draws)
    got = kmeans_plusplus(X, k, np.random.default_rng(seed))
    want = _kmeans_plusplus_numpy(X, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(got, want)   # same draws, same candidates, same centres
    assert all((X == c).all(axis=1).any() for c in got)   # centres are data points
    n_distinct = len(np.unique(X, axis=0))
    assert len(np.unique(got, axis=0)) == min(k, n_distinct) or n_distinct < k


def test_kmeans_plusplus_potential_matches_scikit_learn():
    # The seeding is as good as scikit-learn's greedy k-means++ (same rule, other draws): mean
    # potential over 200 seeds within 6 % on blobs (measured 2.6 % apart over 600 seeds, the
    # standard error of the difference at 200 seeds is ~1.8 %).
    from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
    from sklearn.datasets import make_blobs

    from streamrbf.core.seeding import kmeans_plusplus

    X, _ = make_blobs(2000, n_features=5, centers=12, cluster_std=1.0, random_state=3)
    norms = (X**2).sum(1)

    def potential(C):
        return float(np.maximum(norms[:, None] - 2 * X @ C.T + (C**2).sum(1), 0).min(1).sum())

    ours = np.mean([potential(kmeans_plusplus(X, 12, np.random.default_rng(s)))
                    for s in range(200)])
    theirs = np.mean([potential(sk_kmeans_plusplus(X, 12, random_state=s)[0])
                      for s in range(200)])
    assert ours <= 1.06 * theirs, (ours, theirs)


@pytest.mark.parametrize("offset, scale", [(1.7e9, 1.0), (0.0, 1e160), (0.0, 1e-162),
                                           (0.0, 1e300), (-3e15, 10.0), (0.0, 1e-310)])
def test_kmeans_plusplus_distinct_centres_far_from_the_origin_and_at_extreme_scales(offset, scale):
    # Data near 1.7e9 (epoch seconds) lost its distances to cancellation in the norm expansion,
    # and squared distances of 1e160-scale data overflowed (draws became uniform): duplicate
    # centres for 5 % and ~30 % of seeds; subnormal data (1e-310) overflowed the scale factor.
    # Distinct points must give distinct centres.
    from streamrbf.core.seeding import kmeans_plusplus

    X = offset + np.random.default_rng(1).normal(size=(40, 2)) * scale
    assert len(np.unique(X, axis=0)) == 40
    for seed in range(60):
        C = kmeans_plusplus(X, 4, np.random.default_rng(seed))
        assert len(np.unique(C, axis=0)) == 4, seed
        assert all((X == c).all(axis=1).any() for c in C)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1e-3, 1e-40, 1e-50, 1e-300])
def test_free_energy_reaches_the_kmeans_objective_at_any_small_temperature(dtype, temperature):
    # F_T -> J as T -> 0, with the gradient of K-Means (one-hot on the nearest centre). In float32
    # the divisor underflowed to 0 below T ~ 1e-45 and F was NaN (0 / 0 at the nearest centre).
    from streamrbf.core.losses import free_energy, kmeans_objective

    d = torch.tensor([[0.0, 9.0, 2.5], [4.0, 1.0, 7.0], [3.0, 3.5, 0.5]], dtype=dtype,
                     requires_grad=True)
    F = free_energy(d, temperature)
    F.backward()
    assert float(F.detach()) == pytest.approx(float(kmeans_objective(d.detach())), rel=1e-6)
    one_hot = torch.nn.functional.one_hot(d.detach().argmin(1), 3).to(dtype)
    assert torch.equal(d.grad, one_hot)


@pytest.mark.parametrize("mapping", ["entmax15", "softmax"])
@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("ratio", [0.8, 0.95, 1.05, 1.25])
def test_coincident_centres_split_below_the_critical_temperature(mapping, m, ratio):
    """docs/theory.md: m centres coinciding at the mean of data with covariance eigenvalue
    lambda split below T_c = 2 sqrt(m) lambda (entmax-1.5) or 2 lambda (softmax): one soft-Lloyd
    step multiplies a perturbation along the top eigenvector by T_c / T."""
    from streamrbf.core.statistics import batch_result

    rng = np.random.default_rng(m)
    Z = rng.normal(size=(20000, 2))
    Z -= Z.mean(axis=0)
    Z = Z @ np.linalg.inv(np.linalg.cholesky(np.cov(Z.T, bias=True))).T  # exactly white
    lam = 4.0
    X = Z * np.array([math.sqrt(lam), 1.0])  # covariance diag(4, 1)
    critical = 2 * lam * (math.sqrt(m) if mapping == "entmax15" else 1.0)
    T = ratio * critical
    eps = 1e-5
    C = np.zeros((m, 2))
    C[0, 0], C[1, 0] = eps, -eps  # sum of the perturbations 0
    r = batch_result(X, C, T, mapping)
    stepped = r.stats.sums / r.stats.mass[:, None]
    growth = stepped[0, 0] / eps
    assert growth == pytest.approx(critical / T, rel=1e-6)
    assert (growth > 1) == (T < critical)
    assert abs(stepped[:, 1]).max() < 1e-9  # along the top eigenvector only
