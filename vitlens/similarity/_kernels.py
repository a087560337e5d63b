"""Gram matrices, U-centring and the HSIC estimators, in float64 (public helpers).

Notation: ``n`` examples; ``K`` and ``L`` are (n, n) Gram matrices; ``K~`` is ``K`` with its
diagonal set to zero; ``H = I - 11^T / n`` is the centring matrix.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ._checks import _as_tensor, _check_finite, _like_input, _shape, _square_pair

__all__ = ["gram_linear", "gram_rbf", "ucenter", "hsic_unbiased", "hsic_biased"]


def _check_features(x: Any, name: str = "X") -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.ndim != 2:
        msg = (f"{name} must be 2-D (n_examples, n_features); got shape {_shape(t)}. "
               f"Flatten each example first, e.g. {name}.reshape(len({name}), -1)")
        raise ValueError(msg)
    _check_finite(t, name)
    return t


def _check_symmetric(t: torch.Tensor, name: str) -> None:
    gap = float((t - t.T).abs().max())
    scale = float(t.abs().max())
    if gap > 1e-6 * scale:
        msg = (f"{name} (shape {_shape(t)}) is not symmetric: max |{name} - {name}^T| = "
               f"{gap:.3g} against max |{name}| = {scale:.3g}; HSIC takes Gram (kernel) "
               "matrices, e.g. gram_linear(X) or gram_rbf(X)")
        raise ValueError(msg)


def gram_linear(X: Any) -> Any:
    """Linear-kernel Gram matrix ``K = X X^T`` in float64.

    Args:
        X: Features, shape (n, d), a NumPy array or torch tensor of any float dtype.

    Returns:
        K, shape (n, n), float64, of the same array type as ``X``. It is not centred: the
        HSIC estimators centre it themselves.
    """
    t = _check_features(X)
    return _like_input(t @ t.T, X)


def _rbf_from_centred(t: torch.Tensor, sigma_frac: float, name: str,
                      median_of: str = "pairs", *, minus_one: bool = False) -> torch.Tensor:
    """RBF Gram of float64 features (n, d); the bandwidth follows Kornblith et al. 2019.

    ``minus_one=True`` returns ``K - 1`` (``expm1``), exact to full relative precision even
    at wide bandwidths, where every entry of ``K`` is close to 1. Both HSIC estimators are
    unchanged by a constant added to every entry, so CKA may use it in place of ``K``.

    ``median_of="pairs"``: sigma = sigma_frac * median of the distances over pairs i < j.
    ``median_of="all"``: sigma^2 = sigma_frac^2 * median of the squared distances over all n^2
    entries, the n zeros of the diagonal included (Kornblith et al.'s published code).
    """
    if median_of not in ("pairs", "all"):
        msg = f"median_of must be 'pairs' or 'all', got {median_of!r}"
        raise ValueError(msg)
    if not (math.isfinite(sigma_frac) and sigma_frac > 0):
        msg = f"sigma_frac must be a positive finite number, got {sigma_frac!r}"
        raise ValueError(msg)
    n = t.shape[0]
    if n < 2:
        msg = f"the RBF bandwidth needs at least 2 examples; {name} has shape {_shape(t)}"
        raise ValueError(msg)
    t = t - t.mean(dim=0)  # distances are shift-invariant; centring limits cancellation
    sq = (t * t).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (t @ t.T)).clamp_min_(0.0)  # (n, n)
    d2.fill_diagonal_(0.0)
    if median_of == "pairs":
        iu = torch.triu_indices(n, n, offset=1, device=t.device)
        sigma = sigma_frac * _np_median(d2[iu[0], iu[1]].sqrt())  # off-diagonal distances
    else:
        sigma = sigma_frac * math.sqrt(_np_median(d2.flatten()))  # all n^2 squared distances
    if sigma <= 0.0:
        msg = (f"the median pairwise distance of {name} (shape {_shape(t)}) is zero: more "
               "than half of the examples are identical, so the RBF bandwidth is undefined")
        raise ValueError(msg)
    arg = d2 / (-2.0 * sigma * sigma)
    return torch.expm1(arg) if minus_one else torch.exp(arg)


def _np_median(v: torch.Tensor) -> float:
    """The NumPy median of a 1-d tensor: the mean of the two middle values for an even count."""
    v = v.sort().values
    m = v.numel()
    return float(v[m // 2] if m % 2 else 0.5 * (v[m // 2 - 1] + v[m // 2]))


def gram_rbf(X: Any, sigma_frac: float = 0.8, *, median_of: str = "pairs") -> Any:
    """Gaussian (RBF) Gram matrix with a median-distance bandwidth.

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma = sigma_frac * median`` of the
    Euclidean distances between the examples, over the pairs ``i < j`` (the NumPy median: the
    mean of the two middle values when their number is even), as Kornblith et al. 2019
    describe it. Their published code instead takes the median of the squared distances over
    all ``n^2`` entries, the diagonal's zeros included, which gives a smaller bandwidth for
    small ``n``; ``median_of="all"`` reproduces it exactly.

    Args:
        X: Features, shape (n, d).
        sigma_frac: Bandwidth as a fraction of the median distance.
        median_of: ``"pairs"`` (distinct examples) or ``"all"`` (Kornblith et al.'s code).

    Returns:
        K, shape (n, n), float64, of the same array type as ``X``.

    Raises:
        ValueError: If the median distance is zero (most examples identical).
    """
    t = _check_features(X)
    return _like_input(_rbf_from_centred(t, sigma_frac, "X", median_of), X)


def _ucenter(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    kt = k.clone()
    kt.fill_diagonal_(0.0)
    r = kt.sum(dim=1)
    u = kt - (r[:, None] + r[None, :]) / (n - 2) + r.sum() / ((n - 1) * (n - 2))
    u.fill_diagonal_(0.0)
    return u


def ucenter(K: Any) -> Any:
    """U-centre a Gram matrix (Székely and Rizzo 2014).

    With ``K~`` the matrix with a zero diagonal, ``r = K~ 1`` and ``s = 1^T K~ 1``, the
    off-diagonal entries are ``K~_ij - (r_i + r_j) / (n - 2) + s / ((n - 1)(n - 2))`` and the
    diagonal is zero. For symmetric ``K`` and ``L``,
    ``<ucenter(K), ucenter(L)> = n (n - 3) * hsic_unbiased(K, L)`` exactly.

    Args:
        K: Gram matrix, shape (n, n), n >= 3.

    Returns:
        The U-centred matrix, shape (n, n), float64, of the same array type as ``K``.
    """
    t, _ = _square_pair(K, K, min_n=3)
    return _like_input(_ucenter(t), K)


def _hsic1(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two symmetric float64 (n, n) Grams, as a 0-d tensor.

    Both Grams are U-centred first, then ``HSIC_1 = <U_K, U_L> / (n (n - 3))``, which equals
    Song et al.'s closed form. Applied directly to an uncentred Gram, the closed form
    subtracts terms that grow with the square of a common feature offset and loses every
    digit (an offset of 3000 gives inf); U-centring removes the offset, as the engine does.
    """
    n = k.shape[0]
    return (_ucenter(k) * _ucenter(l_)).sum() / (n * (n - 3))


def _hsic0(k: torch.Tensor, l_: torch.Tensor) -> torch.Tensor:
    """Biased HSIC ``tr(K H L H) / (n - 1)^2`` of two float64 (n, n) Grams."""
    n = k.shape[0]

    def _dc(m: torch.Tensor) -> torch.Tensor:
        return m - m.mean(dim=0, keepdim=True) - m.mean(dim=1, keepdim=True) + m.mean()

    return (_dc(k) * _dc(l_).T).sum() / ((n - 1) ** 2)


def hsic_unbiased(K: Any, L: Any) -> float:
    """Unbiased HSIC estimator HSIC_1 (Song et al. 2012).

    ``[tr(K~L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
    where ``K~``, ``L~`` have zero diagonals. It can be negative; it is never clamped.

    It is computed as ``<ucenter(K), ucenter(L)> / (n (n - 3))``, the same value in exact
    arithmetic. U-centring first removes a common feature offset before anything is
    multiplied, so an uncentred Gram (as :func:`gram_linear` returns) loses no more than
    the rounding of its own entries; the closed form, applied to it as is, loses digits with
    the square of the offset.

    Args:
        K: Symmetric Gram matrix, shape (n, n), n >= 4.
        L: Symmetric Gram matrix, shape (n, n).

    Returns:
        The estimate as a Python float (computed in float64).

    Raises:
        ValueError: bad shapes, n < 4, NaN/inf, or a matrix that is not symmetric.
    """
    k, l_ = _square_pair(K, L, min_n=4)
    _check_symmetric(k, "K")
    _check_symmetric(l_, "L")
    return float(_hsic1(k, l_))


def hsic_biased(K: Any, L: Any) -> float:
    """Biased HSIC estimator HSIC_0 = tr(K H L H) / (n - 1)^2 (Gretton et al. 2005).

    Args:
        K: Gram matrix, shape (n, n), n >= 2.
        L: Gram matrix, shape (n, n).

    Returns:
        The estimate as a Python float (computed in float64).
    """
    k, l_ = _square_pair(K, L, min_n=2)
    return float(_hsic0(k, l_))
