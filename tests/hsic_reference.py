"""The tests' independent float64 reference for minibatch CKA, written out from the formula in
PAPER.md (unbiased HSIC, Song et al. 2012), with no vitlens code in it."""

from __future__ import annotations

import numpy as np


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC of two (n, n) Gram matrices (n >= 4)."""
    n = K.shape[0]
    K, L = np.array(K, np.float64), np.array(L, np.float64)
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    return float((np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ K @ L @ one)) / (n * (n - 3)))


def cka1(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA of one batch from unbiased HSIC; examples are rows (flattened)."""
    X = np.asarray(X, np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, np.float64).reshape(len(Y), -1)
    K, L = X @ X.T, Y @ Y.T
    return hsic1(K, L) / np.sqrt(hsic1(K, K) * hsic1(L, L))
