"""Closed-form ridge regression for few-shot linear probes (float64, primal or dual form)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def ridge_fit(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray, l2: float, *,
              fit_intercept: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``||Y - X W - b||^2 + l2 * ||W||^2`` in closed form, in float64.

    With ``fit_intercept`` the bias is not penalised: X and Y are centred on their training
    means, ``W = (Xc^T Xc + l2 I)^-1 Xc^T Yc`` and ``b = mean(Y) - mean(X) W`` (the same
    solution as scikit-learn's ``Ridge(alpha=l2, fit_intercept=True)``). When d > n the
    equivalent dual form ``W = Xc^T (Xc Xc^T + l2 I)^-1 Yc`` is solved instead.

    Args:
        X: (..., n, d) features; leading dimensions are independent problems.
        Y: (n, K) or (..., n, K) targets.
        l2: Regularisation strength (> 0).

    Returns:
        W (..., d, K) and b (..., K), float64.
    """
    if not l2 > 0:
        msg = f"l2={l2!r}: the ridge penalty must be positive"
        raise ValueError(msg)
    X = torch.as_tensor(X).double()
    Y = torch.as_tensor(Y, device=X.device).double()
    n, d = X.shape[-2:]
    if Y.shape[-2] != n:
        msg = f"X has {n} examples (shape {tuple(X.shape)}) but Y has shape {tuple(Y.shape)}"
        raise ValueError(msg)
    if fit_intercept:
        xm, ym = X.mean(-2, keepdim=True), Y.mean(-2, keepdim=True)
        X, Y = X - xm, Y - ym
    if d <= n:
        gram = X.transpose(-1, -2) @ X
        eye = torch.eye(d, dtype=X.dtype, device=X.device)
        W = torch.linalg.solve(gram + l2 * eye, X.transpose(-1, -2) @ Y)
    else:
        gram = X @ X.transpose(-1, -2)
        eye = torch.eye(n, dtype=X.dtype, device=X.device)
        W = X.transpose(-1, -2) @ torch.linalg.solve(gram + l2 * eye, Y)
    if fit_intercept:
        b = (ym - xm @ W).squeeze(-2)
    else:
        b = torch.zeros(W.shape[:-2] + W.shape[-1:], dtype=X.dtype, device=X.device)
    return W, b


def ridge_predict(X: torch.Tensor | np.ndarray, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Scores (..., n, K) = X W + b, in float64."""
    X = torch.as_tensor(X, device=W.device).double()
    return X @ W + b.unsqueeze(-2)


def signed_targets(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One-vs-all targets in {-1, 1}: (n, K) for ``classes`` (sorted)."""
    return np.where(labels[:, None] == classes[None, :], 1.0, -1.0)


def few_shot_indices(labels: np.ndarray, shots: int, seeds: Sequence[int]) -> list[np.ndarray]:
    """Per seed, ``shots`` training indices of each class, drawn without replacement.

    Raises:
        ValueError: fewer than 2 classes, or a class with fewer than ``shots`` examples.
    """
    if not isinstance(shots, int | np.integer) or shots < 1:
        msg = f"shots={shots!r}: pass a positive number of examples per class"
        raise ValueError(msg)
    if len(seeds) == 0:
        msg = "seeds is empty: pass at least one seed, e.g. seeds=(0, 1, 2)"
        raise ValueError(msg)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        msg = f"the training labels hold {len(classes)} class; a probe needs at least 2"
        raise ValueError(msg)
    short = {int(c): int(k) for c, k in zip(classes, counts, strict=True) if k < shots}
    if short:
        msg = (f"shots={shots} per class, but these classes have fewer training images "
               f"(class: count) {short}; pass more training images or lower shots")
        raise ValueError(msg)
    out = []
    for seed in seeds:
        rng = np.random.default_rng(int(seed))
        out.append(np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                                   for c in classes]))
    return out
