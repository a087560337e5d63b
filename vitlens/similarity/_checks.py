"""Input conversion and validation shared by the similarity functions (private)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__: list[str] = []


class ConstantLayerWarning(RuntimeWarning):
    """A representation's (unbiased) HSIC with itself was 0, so its CKA is undefined (NaN):
    it was constant over the examples, or (unbiased HSIC) varied in too few of them."""


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """Convert a NumPy array or torch tensor to a detached float64 tensor (device kept).

    MPS has no float64, so MPS tensors move to the CPU.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        t = torch.from_numpy(np.asarray(x))
    else:
        msg = f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}"
        raise TypeError(msg)
    if t.dtype.is_complex or t.dtype == torch.bool:
        msg = f"{name} must hold real numbers, got dtype {t.dtype}"
        raise TypeError(msg)
    if t.device.type == "mps":
        t = t.cpu()
    return t.to(torch.float64)


def _check_finite(t: torch.Tensor, name: str) -> None:
    # one reduction; the elementwise test runs only when the sum is not finite
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        msg = (f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf) in an array of "
               f"shape {_shape(t)}; CKA needs finite activations")
        raise ValueError(msg)


def _features_pair(x: Any, y: Any, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two (n, d) feature matrices and return them as float64 tensors."""
    tx, ty = _as_tensor(x, "X"), _as_tensor(y, "Y")
    if tx.ndim != 2 or ty.ndim != 2:
        msg = (f"X and Y must be 2-D (n_examples, n_features); got X of shape {_shape(tx)} and "
               f"Y of shape {_shape(ty)}. Flatten each example first, e.g. X.reshape(len(X), -1)")
        raise ValueError(msg)
    if tx.shape[0] != ty.shape[0]:
        msg = (f"X and Y must have the same number of examples (first axis); got X of shape "
               f"{_shape(tx)} and Y of shape {_shape(ty)}")
        raise ValueError(msg)
    if tx.shape[0] < min_n:
        msg = (f"at least {min_n} examples are needed (got {tx.shape[0]}, from X of shape "
               f"{_shape(tx)})" + ("; the unbiased HSIC estimator divides by n(n-3)"
                                   if min_n == 4 else ""))
        raise ValueError(msg)
    _check_finite(tx, "X")
    _check_finite(ty, "Y")
    if ty.device != tx.device:
        ty = ty.to(tx.device)
    return tx, ty


def _square_pair(k: Any, l_: Any, min_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two (n, n) Gram matrices and return them as float64 tensors."""
    tk, tl = _as_tensor(k, "K"), _as_tensor(l_, "L")
    for t, name in ((tk, "K"), (tl, "L")):
        if t.ndim != 2 or t.shape[0] != t.shape[1]:
            msg = f"{name} must be a square (n, n) Gram matrix; got shape {_shape(t)}"
            raise ValueError(msg)
    if tk.shape != tl.shape:
        msg = f"K and L must have the same shape; got K {_shape(tk)} and L {_shape(tl)}"
        raise ValueError(msg)
    if tk.shape[0] < min_n:
        msg = f"at least {min_n} examples are needed; got Gram matrices of shape {_shape(tk)}"
        raise ValueError(msg)
    _check_finite(tk, "K")
    _check_finite(tl, "L")
    if tl.device != tk.device:
        tl = tl.to(tk.device)
    return tk, tl


def _like_input(t: torch.Tensor, like: Any) -> Any:
    """Return ``t`` as a NumPy array when ``like`` was not a torch tensor."""
    if isinstance(like, torch.Tensor):
        return t
    return t.cpu().numpy()
