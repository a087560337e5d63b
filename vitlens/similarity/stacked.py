"""Minibatch CKA between many same-shaped feature sets at once (localization's P x Q pairs).

The row sets (P, n, C) and column sets (Q, n, D) are stacked tensors, so each batch's
U-centred Grams come from a few batched matrix products instead of one call per set. The
sums kept are those of :class:`vitlens.similarity.MinibatchCKA` (``n * HSIC_1`` per pair,
float64): :class:`StackedCKA` is a :class:`~vitlens.similarity.MinibatchCKA` whose
:meth:`~StackedCKA.update` takes the stacks, so merging, ``all_reduce``, saving and
:meth:`~vitlens.similarity.MinibatchCKA.compute` are the accumulator's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ._minibatch import MinibatchCKA

_CHUNK = 1 << 24  # elements of U-centred Grams held at once (128 MiB in float64)
_CONST_RTOL = 64.0


def _ucentred(x: torch.Tensor) -> torch.Tensor:
    """(L, n, d) features -> (L, n * n) flattened U-centred Grams, float64."""
    x = x.double()
    n = x.shape[1]
    x = x - x.mean(dim=1, keepdim=True)  # centring leaves U-centred Grams unchanged
    k = x @ x.transpose(1, 2)
    scale = k.abs().amax(dim=(1, 2))
    k.diagonal(dim1=1, dim2=2).zero_()
    r = k.sum(dim=2)  # (L, n)
    u = k - (r[:, :, None] + r[:, None, :]) / (n - 2) + (r.sum(dim=1) / ((n - 1) * (n - 2)))[:, None, None]
    u.diagonal(dim1=1, dim2=2).zero_()
    flat = u.abs().amax(dim=(1, 2)) <= _CONST_RTOL * torch.finfo(torch.float64).eps * scale
    u[flat] = 0.0  # a set constant over the batch: its U-centred Gram is zero
    return u.reshape(len(u), n * n)


def _chunks(total: int, n: int) -> Iterator[slice]:
    step = max(1, _CHUNK // (n * n))
    for s in range(0, total, step):
        yield slice(s, min(s + step, total))


class StackedCKA(MinibatchCKA):
    """Accumulate minibatch CKA between every row set and every column set.

    Args:
        names_a, names_b: Labels of the P row sets and Q column sets.
        device: Where the float64 sums live.
    """

    def __init__(self, names_a: Sequence[str], names_b: Sequence[str],
                 device: torch.device | str | None = None) -> None:
        super().__init__(names_a, names_b, device=device)
        P, Q = len(self.names_a), len(self.names_b)
        kw = dict(dtype=torch.float64, device=self.device)
        self.hsic_ab = torch.zeros(P, Q, **kw)
        self.hsic_aa = torch.zeros(P, **kw)
        self.hsic_bb = torch.zeros(Q, **kw)
        self.self_comparison = False
        self.device = self.hsic_ab.device

    @torch.no_grad()
    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:  # type: ignore[override]
        """Add one batch: ``a`` (P, n, C) and ``b`` (Q, n, D) on the same n examples."""
        P, n = a.shape[:2]
        if (P, len(b)) != tuple(self.hsic_ab.shape) or b.shape[1] != n:
            msg = (f"expected ({self.hsic_ab.shape[0]}, n, C) and ({self.hsic_ab.shape[1]}, n, D) "
                   f"feature stacks; got {tuple(a.shape)} and {tuple(b.shape)}")
            raise ValueError(msg)
        if n < 4:
            msg = f"a batch of {n} examples is too small: the unbiased HSIC needs at least 4"
            raise ValueError(msg)
        a, b = a.to(self.hsic_ab.device), b.to(self.hsic_ab.device)
        w = 1.0 / (n - 3)  # n * HSIC_1 = <U_K, U_L> / (n - 3)
        first = True
        for sb in _chunks(len(b), n):
            ub = _ucentred(b[sb])
            self.hsic_bb[sb] += ub.square().sum(dim=1) * w
            for sa in _chunks(P, n):
                ua = _ucentred(a[sa])
                if first:
                    self.hsic_aa[sa] += ua.square().sum(dim=1) * w
                self.hsic_ab[sa, sb] += (ua @ ub.T) * w
            first = False
        self.n_examples += n
        self.n_batches += 1

    def engine(self) -> MinibatchCKA:
        """This accumulator (kept for callers that asked for a ``MinibatchCKA``)."""
        return self
