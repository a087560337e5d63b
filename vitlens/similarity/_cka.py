"""CKA between two representations of the same examples: linear and RBF (public)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from ._checks import ConstantLayerWarning, _features_pair
from ._engine import batch_hsic
from ._kernels import _hsic0, _rbf_from_centred, _ucenter

__all__ = ["linear_cka", "rbf_cka"]


def _constant(t: torch.Tensor) -> bool:
    return bool((t == t[:1]).all())


def _warn_constant(flags: tuple[bool, bool]) -> bool:
    names = [n for n, flag in zip(("X", "Y"), flags, strict=True) if flag]
    if names:
        which = " and ".join(names)
        msg = (f"{which} is constant over the examples (every row identical), so its "
               "self-similarity is zero and CKA is undefined; returning NaN")
        warnings.warn(msg, ConstantLayerWarning, stacklevel=3)
        return True
    return False


def _ratio(ab: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor) -> float:
    return float(ab / torch.sqrt(aa * bb))


def linear_cka(X: Any, Y: Any, *, debiased: bool = True) -> float:
    """Linear CKA between two representations of the same n examples.

    ``debiased=True`` (the default) uses the unbiased HSIC_1 of Song et al. (2012):
    ``HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))``, close to 0 for independent features
    even when the width far exceeds n. The value can be slightly negative and is not clamped.
    ``debiased=False`` is the classic estimator of Kornblith et al. (2019) with centred Grams
    (HSIC_0), which is inflated when features outnumber examples.

    Everything is computed in float64 after centring the features, either from the (n, n)
    Grams or, when cheaper (narrow features, large n), from ``X^T Y`` without forming them.

    Args:
        X: Features, shape (n, d_x), NumPy array or torch tensor, any float dtype.
        Y: Features, shape (n, d_y).
        debiased: Use the unbiased HSIC estimator (needs n >= 4).

    Returns:
        The CKA as a Python float; NaN, with a :class:`ConstantLayerWarning`, when X or Y is
        constant over the examples.

    Raises:
        ValueError: If X or Y is not 2-D, the numbers of examples differ, there are too few
            examples, or an input holds NaN or inf.
    """
    tx, ty = _features_pair(X, Y, min_n=4 if debiased else 2)
    if debiased:
        ab, aa, bb, const_x, const_y = batch_hsic([tx], [ty], gram_dtype=torch.float64)
        if _warn_constant((const_x[0], const_y[0])):
            return math.nan
        # HSIC_1(K, K) can be 0 for a non-constant input too (one example differing from the
        # rest): the CKA is undefined then, and the warning says what was measured
        zero = [n for n, v in (("X", aa[0]), ("Y", bb[0])) if float(v) <= 0]
        if zero:
            msg = (f"{' and '.join(zero)}: the unbiased HSIC with itself is 0 (to rounding; "
                   "the input varies in too few examples), so CKA is undefined; returning NaN. "
                   "Use more examples, or debiased=False")
            warnings.warn(msg, ConstantLayerWarning, stacklevel=2)
            return math.nan
        return _ratio(ab[0, 0], aa[0], bb[0])
    if _warn_constant((_constant(tx), _constant(ty))):
        return math.nan
    xc, yc = tx - tx.mean(dim=0), ty - ty.mean(dim=0)
    n, dx, dy = xc.shape[0], xc.shape[1], yc.shape[1]
    if dx * dy + dx * dx + dy * dy < n * (dx + dy):  # the feature form is cheaper
        ab = (xc.T @ yc).square().sum()
        aa = (xc.T @ xc).square().sum()
        bb = (yc.T @ yc).square().sum()
        return _ratio(ab, aa, bb)
    k, l_ = xc @ xc.T, yc @ yc.T  # already centred: HKH = K up to rounding
    return _ratio(_hsic0(k, l_), _hsic0(k, k), _hsic0(l_, l_))


def rbf_cka(X: Any, Y: Any, *, sigma_frac: float = 0.8, debiased: bool = True,
            median_of: str = "pairs") -> float:
    """CKA with Gaussian (RBF) kernels, as in Kornblith et al. (2019).

    Each representation gets its own bandwidth ``sigma = sigma_frac * median`` of its
    off-diagonal pairwise Euclidean distances (see :func:`gram_rbf`; ``median_of="all"``
    takes the median as Kornblith et al.'s published code does).

    Args:
        X: Features, shape (n, d_x), NumPy array or torch tensor, any float dtype.
        Y: Features, shape (n, d_y).
        sigma_frac: Bandwidth as a fraction of the median distance.
        debiased: Use the unbiased HSIC_1 (n >= 4) instead of the biased HSIC_0.
        median_of: ``"pairs"`` (median over distinct examples, the default) or ``"all"``
            (over all n^2 squared distances, diagonal zeros included, as in Kornblith et
            al.'s code).

    Returns:
        The CKA as a Python float (computed in float64); NaN, with a
        :class:`ConstantLayerWarning`, when X or Y is constant over the examples.

    Raises:
        ValueError: For bad shapes, too few examples, NaN/inf inputs, a non-positive
            ``sigma_frac``, or a zero median distance (most examples identical).
    """
    tx, ty = _features_pair(X, Y, min_n=4 if debiased else 2)
    if _warn_constant((_constant(tx), _constant(ty))):
        return math.nan
    # K - 1 instead of K (both HSICs ignore a constant): full precision at wide bandwidths
    k = _rbf_from_centred(tx, sigma_frac, "X", median_of, minus_one=True)
    l_ = _rbf_from_centred(ty, sigma_frac, "Y", median_of, minus_one=True)
    if debiased:  # HSIC_1 = <U_K, U_L> / (n (n - 3)); the factor cancels in the ratio
        uk, ul = _ucenter(k), _ucenter(l_)
        return _ratio((uk * ul).sum(), (uk * uk).sum(), (ul * ul).sum())
    return _ratio(_hsic0(k, l_), _hsic0(k, k), _hsic0(l_, l_))
