"""Linear/RBF CKA, HSIC estimators and U-centring against an independent float64 reference.

The reference below is written from the formulas in PAPER.md and Kornblith et al. (2019)
with plain NumPy; it never calls vitlens.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitlens.similarity import (
    ConstantLayerWarning,
    gram_linear,
    gram_rbf,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
    ucenter,
)

# ----------------------------------------------------------------------------------------------
# Independent float64 NumPy reference
# ----------------------------------------------------------------------------------------------


def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. 2012: diagonals zeroed, explicit three-term formula."""
    n = K.shape[0]
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    term1 = np.trace(Kt @ Lt)
    term2 = (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def ref_hsic0(K: np.ndarray, L: np.ndarray) -> float:
    """Gretton et al. 2005: tr(K H L H) / (n - 1)^2."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / (n - 1) ** 2)


def ref_cka_from_grams(K: np.ndarray, L: np.ndarray, debiased: bool) -> float:
    h = ref_hsic1 if debiased else ref_hsic0
    return h(K, L) / np.sqrt(h(K, K) * h(L, L))


def ref_linear_gram(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)  # HSIC is shift invariant; centring avoids float64 cancellation
    return X @ X.T


def ref_rbf_gram(X: np.ndarray, frac: float) -> np.ndarray:
    """Kornblith et al. 2019, with sigma = frac * median off-diagonal Euclidean distance."""
    X = np.asarray(X, dtype=np.float64)
    diff = X[:, None, :] - X[None, :, :]
    D2 = (diff**2).sum(-1)
    iu = np.triu_indices(len(X), k=1)
    sigma = frac * np.median(np.sqrt(D2[iu]))
    return np.exp(-D2 / (2 * sigma**2))


def ref_linear_cka(X: np.ndarray, Y: np.ndarray, debiased: bool = True) -> float:
    return ref_cka_from_grams(ref_linear_gram(X), ref_linear_gram(Y), debiased)


def ref_rbf_cka(X: np.ndarray, Y: np.ndarray, frac: float = 0.8, debiased: bool = True) -> float:
    return ref_cka_from_grams(ref_rbf_gram(X, frac), ref_rbf_gram(Y, frac), debiased)


def _pair(rng: np.random.Generator, n: int, dx: int, dy: int, noise: float = 1.0):
    X = rng.standard_normal((n, dx)) * rng.uniform(0.1, 10, size=dx)
    Y = X @ rng.standard_normal((dx, dy)) + noise * rng.standard_normal((n, dy))
    return X, Y


# ----------------------------------------------------------------------------------------------
# Values against the reference
# ----------------------------------------------------------------------------------------------

dims = st.integers(min_value=1, max_value=48)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(min_value=4, max_value=40), dx=dims, dy=dims,
       seed=st.integers(0, 2**32 - 1), debiased=st.booleans())
def test_linear_cka_matches_reference(n, dx, dy, seed, debiased):
    X, Y = _pair(np.random.default_rng(seed), n, dx, dy)
    got = linear_cka(X, Y, debiased=debiased)
    np.testing.assert_allclose(got, ref_linear_cka(X, Y, debiased), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("n", "dx", "dy"), [(300, 3, 5), (12, 200, 150), (64, 64, 1)])
@pytest.mark.parametrize("debiased", [True, False])
def test_linear_cka_both_routes(n, dx, dy, debiased):
    # (300, 3, 5) takes the feature-space route; (12, 200, 150) the Gram route
    X, Y = _pair(np.random.default_rng(n + dx), n, dx, dy, noise=3.0)
    got = linear_cka(torch.from_numpy(X), torch.from_numpy(Y), debiased=debiased)
    np.testing.assert_allclose(got, ref_linear_cka(X, Y, debiased), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(min_value=4, max_value=30), dx=dims, dy=dims,
       seed=st.integers(0, 2**32 - 1), debiased=st.booleans(),
       frac=st.sampled_from([0.2, 0.5, 0.8, 1.0, 2.0]))
def test_rbf_cka_matches_reference(n, dx, dy, seed, debiased, frac):
    X, Y = _pair(np.random.default_rng(seed), n, dx, dy)
    got = rbf_cka(X, Y, sigma_frac=frac, debiased=debiased)
    np.testing.assert_allclose(got, ref_rbf_cka(X, Y, frac, debiased), rtol=1e-10, atol=1e-10)


def _kornblith_feature_space_linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Kornblith et al.'s published feature_space_linear_cka (debiased: Song et al.'s HSIC)."""

    def helper(xty, sx, sy, nx, ny, n):
        return xty - n / (n - 2.0) * sx.dot(sy) + nx * ny / ((n - 1) * (n - 2))

    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    dot = np.linalg.norm(x.T @ y) ** 2
    norm_x, norm_y = np.linalg.norm(x.T @ x), np.linalg.norm(y.T @ y)
    if debiased:
        n = x.shape[0]
        sx, sy = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
        dot = helper(dot, sx, sy, sx.sum(), sy.sum(), n)
        norm_x = np.sqrt(helper(norm_x**2, sx, sx, sx.sum(), sx.sum(), n))
        norm_y = np.sqrt(helper(norm_y**2, sy, sy, sy.sum(), sy.sum(), n))
    return dot / (norm_x * norm_y)


@pytest.mark.parametrize(("n", "dx", "dy"), [(10, 50, 30), (100, 5, 7), (33, 33, 12)])
@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_matches_kornblith_code(n, dx, dy, debiased):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, dx)) + 3.0
    k = min(dx, dy)
    Y = X[:, :k] @ rng.standard_normal((k, dy)) + rng.standard_normal((n, dy))
    np.testing.assert_allclose(linear_cka(X, Y, debiased=debiased),
                               _kornblith_feature_space_linear_cka(X, Y, debiased),
                               rtol=0, atol=1e-13)


def _kornblith_gram_rbf(x: np.ndarray, threshold: float) -> np.ndarray:
    """Kornblith et al.'s published gram_rbf: median over all n^2 squared distances."""
    dot = x @ x.T
    sq_norms = np.diag(dot)
    sq_distances = -2 * dot + sq_norms[:, None] + sq_norms[None, :]
    return np.exp(-sq_distances / (2 * threshold**2 * np.median(sq_distances)))


@pytest.mark.parametrize("n", [6, 9, 40])
def test_rbf_median_of_all_matches_kornblith_code(n):
    X, Y = _pair(np.random.default_rng(n), n, 5, 8)
    for frac in (0.5, 0.8):
        np.testing.assert_allclose(gram_rbf(X, frac, median_of="all"),
                                   _kornblith_gram_rbf(X, frac), rtol=1e-10, atol=1e-12)
        k, l_ = _kornblith_gram_rbf(X, frac), _kornblith_gram_rbf(Y, frac)
        h = np.eye(n) - 1.0 / n
        kc, lc = h @ k @ h, h @ l_ @ h
        want = (kc * lc).sum() / np.sqrt((kc * kc).sum() * (lc * lc).sum())
        got = rbf_cka(X, Y, sigma_frac=frac, debiased=False, median_of="all")
        np.testing.assert_allclose(got, want, rtol=1e-10)
    # the two conventions differ (for small n noticeably): the default excludes the diagonal
    assert not np.allclose(gram_rbf(X, 0.8), gram_rbf(X, 0.8, median_of="all"))
    with pytest.raises(ValueError, match="median_of"):
        gram_rbf(X, median_of="diagonal")


def test_gram_helpers_match_reference():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((15, 7))
    np.testing.assert_allclose(gram_linear(X), X @ X.T, rtol=1e-13)
    np.testing.assert_allclose(gram_rbf(X, 0.5), ref_rbf_gram(X, 0.5), rtol=1e-12)
    got = gram_rbf(torch.from_numpy(X))  # torch in, torch out
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref_rbf_gram(X, 0.8), rtol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(min_value=4, max_value=30), seed=st.integers(0, 2**32 - 1))
def test_hsic_estimators_match_reference(n, seed):
    X, Y = _pair(np.random.default_rng(seed), n, 5, 3)
    K, L = X @ X.T, ref_rbf_gram(Y, 0.8)
    np.testing.assert_allclose(hsic_unbiased(K, L), ref_hsic1(K, L), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hsic_biased(K, L), ref_hsic0(K, L), rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(min_value=4, max_value=30), seed=st.integers(0, 2**32 - 1))
def test_ucenter_inner_product_is_scaled_hsic1(n, seed):
    X, Y = _pair(np.random.default_rng(seed), n, 6, 4)
    K, L = X @ X.T, ref_rbf_gram(Y, 1.0)
    UK, UL = ucenter(K), ucenter(L)
    np.testing.assert_array_equal(np.diag(UK), 0.0)
    np.testing.assert_allclose(UK, UK.T, rtol=0, atol=1e-12 * np.abs(K).max())
    np.testing.assert_allclose(np.sum(UK * UL), n * (n - 3) * ref_hsic1(K, L),
                               rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Invariances
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [linear_cka, rbf_cka])
@pytest.mark.parametrize("debiased", [True, False])
def test_invariances(fn, debiased):
    rng = np.random.default_rng(7)
    X, Y = _pair(rng, 40, 12, 9)
    base = fn(X, Y, debiased=debiased)
    Q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    np.testing.assert_allclose(fn(X @ Q, Y, debiased=debiased), base, rtol=1e-10)
    np.testing.assert_allclose(fn(3.7 * X, 0.01 * Y, debiased=debiased), base, rtol=1e-10)
    np.testing.assert_allclose(fn(X + 5.0, Y - 2.0, debiased=debiased), base, rtol=1e-9)
    np.testing.assert_allclose(fn(Y, X, debiased=debiased), base, rtol=1e-12)
    np.testing.assert_allclose(fn(X, X, debiased=debiased), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Statistical behaviour and numerics
# ----------------------------------------------------------------------------------------------


def test_debiased_is_near_zero_on_independent_wide_data_and_biased_is_not():
    vals, biased = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((32, 4096))
        Y = rng.standard_normal((32, 4096))
        vals.append(linear_cka(X, Y))
        biased.append(linear_cka(X, Y, debiased=False))
    assert abs(np.mean(vals)) < 0.03
    assert min(biased) > 0.9


def test_float32_with_large_channel_offset_matches_float64_reference():
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((64, 500)) + 3000.0).astype(np.float32)
    Y = rng.standard_normal((64, 300)).astype(np.float32)
    Y[:, :100] += 3000.0  # offset on some channels only
    Z = (X[:, :300] - 3000.0) * 0.5 + Y  # related to both
    for A, B in ((X, Y), (X, Z), (Y, Z)):
        for debiased in (True, False):
            ref = ref_linear_cka(A.astype(np.float64), B.astype(np.float64), debiased)
            assert abs(linear_cka(A, B, debiased=debiased) - ref) <= 1e-5
            assert abs(linear_cka(torch.from_numpy(A), torch.from_numpy(B),
                                  debiased=debiased) - ref) <= 1e-5


def test_debiased_estimate_is_not_clamped():
    for seed in range(100):
        rng = np.random.default_rng(seed)
        X, Y = rng.standard_normal((10, 30)), rng.standard_normal((10, 30))
        ref = ref_linear_cka(X, Y)
        if ref < -0.02:
            break
    else:  # pragma: no cover
        pytest.fail("no negative example found")
    got = linear_cka(X, Y)
    assert got < 0
    np.testing.assert_allclose(got, ref, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------


def test_rejects_non_2d_quoting_shapes():
    X = np.zeros((8, 3, 4))
    with pytest.raises(ValueError, match=r"\(8, 3, 4\).*\(8, 5\)"):
        linear_cka(X, np.ones((8, 5)))


def test_rejects_different_numbers_of_examples():
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(9, 3\)"):
        linear_cka(np.ones((10, 3)), np.ones((9, 3)))


def test_rejects_too_few_examples_for_debiased():
    X = np.random.default_rng(0).standard_normal((3, 5))
    with pytest.raises(ValueError, match="at least 4 examples"):
        linear_cka(X, X)
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased(np.eye(3), np.eye(3))
    assert np.isfinite(linear_cka(X, X + X**2, debiased=False))  # biased needs only n >= 2


@pytest.mark.parametrize(("bad", "word"), [(np.nan, "NaN"), (np.inf, "inf")])
def test_rejects_non_finite_naming_the_array(bad, word):
    X = np.random.default_rng(0).standard_normal((10, 4))
    Y = X.copy()
    Y[2, 1] = bad
    with pytest.raises(ValueError, match=rf"Y contains non-finite.*{word}"):
        linear_cka(X, Y)
    with pytest.raises(ValueError, match=r"X contains non-finite"):
        rbf_cka(torch.from_numpy(Y), torch.from_numpy(X))


def test_constant_representation_gives_nan_with_warning():
    X = np.random.default_rng(0).standard_normal((10, 4))
    C = np.full((10, 3), 2.5)
    with pytest.warns(ConstantLayerWarning, match="Y is constant"):
        assert np.isnan(linear_cka(X, C))
    with pytest.warns(ConstantLayerWarning, match="X is constant"):
        assert np.isnan(rbf_cka(C, X, debiased=False))


def test_one_outlier_input_gives_nan_with_a_true_warning():
    """One example differing from the rest: the linear Gram is zero off the diagonal, which
    the unbiased HSIC drops, so HSIC_1(K, K) = 0 exactly though the input is not constant."""
    X = np.zeros((6, 1))
    X[5] = 1.0
    Y = np.random.default_rng(0).standard_normal((6, 3))
    with pytest.warns(ConstantLayerWarning, match="unbiased HSIC with itself is 0") as rec:
        assert np.isnan(linear_cka(X, Y))
    assert "is constant" not in str(rec[0].message)
    assert np.isfinite(linear_cka(X, Y, debiased=False))  # the biased estimator is defined


def test_rbf_rejects_bad_bandwidth():
    X = np.random.default_rng(0).standard_normal((10, 4))
    with pytest.raises(ValueError, match="sigma_frac"):
        rbf_cka(X, X, sigma_frac=0.0)
    D = np.zeros((10, 2))
    D[0] = 1.0  # most pairs identical: zero median distance
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="median pairwise distance"):
            rbf_cka(D, X)


# ----------------------------------------------------------------------------------------------
# Common offsets and wide bandwidths: the estimators must not lose digits
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [300.0, 3000.0])
def test_hsic_unbiased_on_uncentred_grams_cancels_a_common_offset(offset):
    # gram_linear's docstring tells users to pass its uncentred Gram; the offset must cancel
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 20))
    Y = X[:, :5] @ rng.standard_normal((5, 30)) + 2.0 * rng.standard_normal((64, 30))
    K, L = gram_linear(X + offset), gram_linear(Y + offset)
    got = hsic_unbiased(K, L) / np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L))
    true = ref_linear_cka(X, Y)  # reference on centred features, in float64
    assert abs(got - true) < 1e-9
    Kc, Lc = ref_linear_gram(X), ref_linear_gram(Y)
    assert abs(hsic_unbiased(K, L) - ref_hsic1(Kc, Lc)) < 1e-9 * abs(ref_hsic1(Kc, Lc))


def test_hsic_unbiased_rejects_a_matrix_that_is_not_symmetric():
    A = np.random.default_rng(0).standard_normal((8, 8))
    with pytest.raises(ValueError, match=r"K \(shape \(8, 8\)\) is not symmetric.*gram_linear"):
        hsic_unbiased(A, A @ A.T)


def _ref_rbf_cka_wide(X: np.ndarray, Y: np.ndarray, frac: float, debiased: bool) -> float:
    """K - 1 = expm1(-D^2 / 2 sigma^2) keeps every digit; both HSICs ignore the constant."""

    def km1(A: np.ndarray) -> np.ndarray:
        A = A - A.mean(axis=0)
        d2 = ((A[:, None, :] - A[None, :, :]) ** 2).sum(-1)
        sigma = frac * np.median(np.sqrt(d2[np.triu_indices(len(A), k=1)]))
        return np.expm1(-d2 / (2 * sigma**2))

    return ref_cka_from_grams(km1(X), km1(Y), debiased)


@pytest.mark.parametrize("frac", [30.0, 100.0])
@pytest.mark.parametrize("debiased", [True, False])
def test_rbf_cka_at_wide_bandwidths_matches_float64_reference(frac, debiased):
    for seed in range(4):
        X, Y = _pair(np.random.default_rng(seed), 40, 12, 9)
        got = rbf_cka(X, Y, sigma_frac=frac, debiased=debiased)
        assert abs(got - _ref_rbf_cka_wide(X, Y, frac, debiased)) < 1e-9
