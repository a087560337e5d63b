"""Minibatch CKA between every pair of layers (Nguyen, Raghu and Kornblith 2021)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._checks import ConstantLayerWarning
from ._engine import batch_hsic

__all__ = ["MinibatchCKA"]

_STATE_VERSION = 1


def _shapes(shapes: Sequence[tuple[int, ...]]) -> str:
    return ", ".join(str(s) for s in shapes)


class MinibatchCKA:
    """Accumulates minibatch linear CKA for all (L_a, L_b) pairs of layers.

    For every batch b of n_b examples and every pair of layers it adds ``n_b * HSIC_1``
    (the unbiased estimator of Song et al. 2012) to float64 sums, so the result is the
    batch-size-weighted mean HSIC: ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with
    each HSIC the weighted mean over batches. It is never clamped: it can be slightly
    negative for unrelated layers, and a layer whose unbiased HSIC with itself is 0 in every
    batch (constant, or varying in too few examples per batch) gives a NaN row (or column)
    together with a :class:`ConstantLayerWarning`.

    Each layer's features are centred per batch before its Gram is formed (robust to large
    channel offsets, "massive activations"). Float32 (or lower precision) activations use
    float32 chunk Grams accumulated in float64; float64 activations stay in float64. Narrow
    layers use an exact feature-space form that never builds an (n, n) Gram.

    The state is sums, not means, so accumulators over disjoint data can be joined with
    :meth:`merge` (or by ``all_reduce`` of :attr:`hsic_ab`, :attr:`hsic_aa`, :attr:`hsic_bb`
    and :attr:`n_examples`), saved with :meth:`state_dict` and resumed with
    :meth:`load_state_dict`.

    Args:
        names_a: Layer names of model A (used in messages and checked against the number of
            tensors per update); None means layers are referred to by index.
        names_b: Layer names of model B.
        device: Where the sums live and the Grams are computed; by default the device of the
            first batch. Activations elsewhere are moved there.
        route: ``"auto"`` (cheapest exact form), ``"gram"`` or ``"feature"``.
        gram_dtype: dtype of the chunk Grams for sub-float64 activations: ``torch.float32``
            (default) or ``torch.float64``.

    Example:
        >>> cka = MinibatchCKA()
        >>> for xa, xb in batches:
        ...     cka.update([f(xa) for f in layers_a], [g(xb) for g in layers_b])
        >>> matrix = cka.compute()  # (L_a, L_b) float64
    """

    def __init__(self, names_a: Sequence[str] | None = None,
                 names_b: Sequence[str] | None = None, *,
                 device: str | torch.device | None = None, route: str = "auto",
                 gram_dtype: torch.dtype = torch.float32) -> None:
        if route not in ("auto", "gram", "feature"):
            msg = f"route must be 'auto', 'gram' or 'feature', got {route!r}"
            raise ValueError(msg)
        if gram_dtype not in (torch.float32, torch.float64):
            msg = f"gram_dtype must be torch.float32 or torch.float64, got {gram_dtype}"
            raise ValueError(msg)
        self.names_a = None if names_a is None else [str(n) for n in names_a]
        self.names_b = None if names_b is None else [str(n) for n in names_b]
        self.device = None if device is None else torch.device(device)
        self.route = route
        self.gram_dtype = gram_dtype
        self._cache: dict = {}
        self.reset()

    def reset(self) -> None:
        """Forget every batch (layer names, device and options are kept)."""
        self.hsic_ab: torch.Tensor | None = None  # (L_a, L_b), sum over batches of n_b HSIC_1
        self.hsic_aa: torch.Tensor | None = None  # (L_a,)
        self.hsic_bb: torch.Tensor | None = None  # (L_b,)
        self.n_examples = 0
        self.n_batches = 0
        self.self_comparison: bool | None = None

    def __repr__(self) -> str:
        shape = "empty" if self.hsic_ab is None else "x".join(map(str, self.hsic_ab.shape))
        return (f"MinibatchCKA({shape}, n_examples={self.n_examples}, "
                f"n_batches={self.n_batches})")

    # -- input handling ---------------------------------------------------------------------
    def _label(self, side: str, i: int) -> str:
        names = self.names_a if side == "A" or self.self_comparison else self.names_b
        if names is not None and i < len(names):
            return f"{names[i]!r} (model {side}, index {i})"
        return f"{i} of model {side}"

    def _prepare(self, feats: Any, arg: str) -> tuple[list[torch.Tensor], list[tuple[int, ...]]]:
        if isinstance(feats, (torch.Tensor, np.ndarray, str, dict)) or not isinstance(
                feats, Sequence):
            hint = " (pass list(d.values()))" if isinstance(feats, dict) else ""
            msg = (f"{arg} must be a list or tuple of (n, ...) tensors, one per layer; got "
                   f"{type(feats).__name__}{hint}")
            raise TypeError(msg)
        if len(feats) == 0:
            msg = f"{arg} is empty; pass at least one layer"
            raise ValueError(msg)
        out, shapes = [], []
        for i, x in enumerate(feats):
            t = torch.as_tensor(x).detach()
            shapes.append(tuple(int(s) for s in t.shape))
            if t.ndim == 0:
                msg = f"{arg}[{i}] is a scalar; each layer must be (n, ...) with n examples"
                raise ValueError(msg)
            if not t.dtype.is_floating_point:
                t = t.to(torch.float32)
            if self.device is not None and t.device != self.device:
                t = t.to(self.device)
            out.append(t.reshape(t.shape[0], -1))
        return out, shapes

    def _check_batch(self, fa: list[torch.Tensor], fb: list[torch.Tensor] | None,
                     raw_a: list[tuple[int, ...]], raw_b: list[tuple[int, ...]] | None) -> None:
        n = fa[0].shape[0]
        for side, f, raw in (("feats_a", fa, raw_a), ("feats_b", fb, raw_b)):
            if f is not None and any(x.shape[0] != n for x in f):
                msg = (f"every layer must have the same number of examples (first axis); got "
                       f"feats_a shapes [{_shapes(raw_a)}]"
                       + (f" and feats_b shapes [{_shapes(raw)}]" if side == "feats_b" else ""))
                raise ValueError(msg)
        if n < 4:
            msg = (f"a batch of {n} examples is too small: the unbiased HSIC needs at least 4 "
                   f"examples per batch (feats_a shapes [{_shapes(raw_a)}]). Use a larger "
                   "batch_size, or merge the last short batch into the previous one")
            raise ValueError(msg)
        is_self = fb is None
        la, lb = len(fa), len(fa) if fb is None else len(fb)
        for names, count, which in ((self.names_a, la, "names_a"),
                                    (None if is_self else self.names_b, lb, "names_b")):
            if names is not None and len(names) != count:
                msg = f"{which} has {len(names)} names but this batch has {count} layers"
                raise ValueError(msg)
        if self.hsic_ab is not None:
            if is_self != self.self_comparison:
                was = "None (self-comparison)" if self.self_comparison else "given"
                msg = (f"feats_b was {was} in the first update; every update must do the same")
                raise ValueError(msg)
            if (la, lb) != tuple(self.hsic_ab.shape):
                msg = (f"this batch has {la} layers for model A and {lb} for model B, but the "
                       f"first update had {self.hsic_ab.shape[0]} and {self.hsic_ab.shape[1]}")
                raise ValueError(msg)

    # -- accumulation -----------------------------------------------------------------------
    @torch.no_grad()
    def update(self, feats_a: Sequence[Any], feats_b: Sequence[Any] | None = None) -> None:
        """Add one batch.

        Args:
            feats_a: One tensor per layer of model A, each (n, ...) with the same n; every
                tensor is flattened per example to (n, d_l). NumPy arrays are accepted.
            feats_b: The same for model B, on the same n examples in the same order; None
                compares model A with itself in one pass (result (L_a, L_a)).

        Raises:
            ValueError: For fewer than 4 examples, mismatched numbers of examples or layers,
                a switch between self- and cross-comparison, or NaN/inf activations (the
                message names the layer). The state is unchanged when it raises.
        """
        fa, shapes_a = self._prepare(feats_a, "feats_a")
        fb, shapes_b = (None, None) if feats_b is None else self._prepare(feats_b, "feats_b")
        self._check_batch(fa, fb, shapes_a, shapes_b)
        if self.device is None:
            self.device = fa[0].device
            fa = [x.to(self.device) for x in fa]
        if fb is not None:
            fb = [x.to(self.device) for x in fb]
        if self.self_comparison is None:
            self.self_comparison = fb is None
        ab, aa, bb, _, _ = batch_hsic(
            fa, fb, gram_dtype=self.gram_dtype, route=self.route, cache=self._cache,
            label_a=lambda i: self._label("A", i), label_b=lambda i: self._label("B", i))
        if self.hsic_ab is None:
            self.hsic_ab, self.hsic_aa, self.hsic_bb = ab, aa, bb
        else:
            self.hsic_ab += ab
            self.hsic_aa += aa
            self.hsic_bb = self.hsic_aa if self.self_comparison else self.hsic_bb + bb
        self.n_examples += int(fa[0].shape[0])
        self.n_batches += 1

    @torch.no_grad()
    def update_grams(self, rows_a: Sequence[torch.Tensor], rows_b: Sequence[torch.Tensor] | None,
                     n: int) -> None:
        """Add one batch given as packed U-centred Grams (from
        :func:`vitlens.similarity.packed_ucentred_gram`, e.g. by a
        :class:`vitlens.capture.GramCapture`).

        Mirrors the tail of the engine's Gram route: one (L_a, N) @ (N, L_b) product gives
        every pair, ``n HSIC_1 = 2 u_K . u_L / (n - 3)``.

        Args:
            rows_a: L_a tensors (N,) float64, N = n(n-1)/2.
            rows_b: L_b tensors, or None for a self-comparison.
            n: The batch size.
        """
        is_self = rows_b is None
        if self.self_comparison is not None and self.self_comparison != is_self:
            msg = "every batch must be a self-comparison, or none"
            raise ValueError(msg)
        dev = self.device if self.device is not None else rows_a[0].device
        ua = torch.stack(list(rows_a)).to(dev)
        ub = ua if is_self else torch.stack(list(rows_b)).to(dev)
        w = 2.0 / (n - 3)
        ab = (ua @ ub.T) * w
        if is_self:
            aa = bb = ab.diagonal().clone()
        else:
            aa = ua.square().sum(dim=1) * w
            bb = ub.square().sum(dim=1) * w
        if self.hsic_ab is None:
            self.device = dev
            self.self_comparison = is_self
            self.hsic_ab, self.hsic_aa, self.hsic_bb = ab, aa, bb
        else:
            if tuple(ab.shape) != tuple(self.hsic_ab.shape):
                msg = (f"this batch has {tuple(ab.shape)} layer pairs but the accumulator "
                       f"{tuple(self.hsic_ab.shape)}")
                raise ValueError(msg)
            self.hsic_ab += ab
            self.hsic_aa += aa
            self.hsic_bb = self.hsic_aa if is_self else self.hsic_bb + bb
        self.n_examples += int(n)
        self.n_batches += 1

    def compute(self) -> torch.Tensor:
        """The minibatch CKA matrix.

        Returns:
            Tensor (L_a, L_b), float64, on :attr:`device`. Rows (columns) of layers whose unbiased
            HSIC with itself was 0 in every batch are NaN, with a :class:`ConstantLayerWarning`.

        Raises:
            RuntimeError: If no batch has been added.
        """
        if self.hsic_ab is None or self.n_examples == 0:
            msg = "no batches yet: call update() with at least one batch before compute()"
            raise RuntimeError(msg)
        ab = self.hsic_ab / self.n_examples
        aa = self.hsic_aa / self.n_examples
        bb = self.hsic_bb / self.n_examples
        self._warn_constant(aa, "A", "row")
        if not self.self_comparison:
            self._warn_constant(bb, "B", "column")
        out = ab / torch.sqrt(aa[:, None] * bb[None, :])
        undefined = (aa <= 0)[:, None] | (bb <= 0)[None, :]  # 0 / 0 or x / 0: NaN, as warned
        return out.masked_fill(undefined, float("nan"))

    def _warn_constant(self, diag: torch.Tensor, side: str, axis: str) -> None:
        # HSIC_1(K, K) >= 0; the feature route can give -1e-17 where the Gram route gives 0
        for i in torch.nonzero(diag <= 0).flatten().tolist():
            where = "row and column" if self.self_comparison else axis
            msg = (f"layer {self._label(side, i)}: its unbiased HSIC with itself was 0 (to "
                   "rounding) in every batch (its U-centred Gram is zero: the layer is "
                   "constant, or varies in too few examples per batch), so its CKA "
                   f"{where} is NaN; use more or larger batches, or leave the layer out")
            warnings.warn(msg, ConstantLayerWarning, stacklevel=3)

    # -- state ------------------------------------------------------------------------------
    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """Add the sums of another accumulator (disjoint batches of the same layers).

        Returns:
            ``self``, which now holds the batches of both.
        """
        if not isinstance(other, MinibatchCKA):
            msg = f"can only merge another MinibatchCKA, got {type(other).__name__}"
            raise TypeError(msg)
        if other.hsic_ab is None:
            return self
        self.load_state_dict(self._combined(other.state_dict()))
        return self

    def all_reduce(self, *, sizes: tuple[int, int] | None = None,
                   self_comparison: bool = False) -> MinibatchCKA:
        """Sum the state over the ranks of ``torch.distributed`` (one ``all_reduce``), in place.

        A no-op in a single process. Returns ``self``.

        Args:
            sizes: ``(L_a, L_b)``: lets a rank that added no batch contribute zeros (with
                ``self_comparison`` saying what the others hold). Without it, such a rank
                is an error.
            self_comparison: For a rank without batches, whether the batches compare a
                model with itself.
        """
        from .. import distributed as vd

        if not vd.is_distributed():
            return self
        st = self.state_dict()
        if self.hsic_ab is None:
            if sizes is None:
                msg = (f"rank {vd.rank()} has no batches to join; give every rank at least one "
                       "batch (a smaller batch_size or fewer ranks)")
                raise RuntimeError(msg)
            la, lb = sizes
            st.update(hsic_ab=torch.zeros(la, lb, dtype=torch.float64),
                      hsic_aa=torch.zeros(la, dtype=torch.float64),
                      hsic_bb=torch.zeros(lb, dtype=torch.float64),
                      self_comparison=self_comparison)
        sums = {k: st[k] for k in ("hsic_ab", "hsic_aa", "hsic_bb", "n_examples", "n_batches")}
        st.update(vd.all_reduce_state_(sums))
        self.load_state_dict(st)
        return self

    def _combined(self, st: dict[str, Any]) -> dict[str, Any]:
        if self.hsic_ab is None:
            return st
        if (tuple(st["hsic_ab"].shape) != tuple(self.hsic_ab.shape)
                or bool(st["self_comparison"]) != self.self_comparison):
            msg = (f"cannot merge a {tuple(st['hsic_ab'].shape)} accumulator (self-comparison: "
                   f"{st['self_comparison']}) into a {tuple(self.hsic_ab.shape)} one "
                   f"(self-comparison: {self.self_comparison})")
            raise ValueError(msg)
        for key, mine in (("names_a", self.names_a), ("names_b", self.names_b)):
            if st.get(key) is not None and mine is not None and list(st[key]) != mine:
                msg = f"cannot merge accumulators with different {key}: {st[key]} vs {mine}"
                raise ValueError(msg)
        mine = self.state_dict()
        for key in ("hsic_ab", "hsic_aa", "hsic_bb"):
            mine[key] = mine[key] + st[key].to(mine[key].device, torch.float64)
        mine["n_examples"] += int(st["n_examples"])
        mine["n_batches"] += int(st["n_batches"])
        return mine

    def state_dict(self) -> dict[str, Any]:
        """The accumulated sums and counts (tensors are copies), for saving or all-reduce."""
        return {
            "version": _STATE_VERSION,
            "hsic_ab": None if self.hsic_ab is None else self.hsic_ab.clone(),
            "hsic_aa": None if self.hsic_aa is None else self.hsic_aa.clone(),
            "hsic_bb": None if self.hsic_bb is None else self.hsic_bb.clone(),
            "n_examples": self.n_examples,
            "n_batches": self.n_batches,
            "self_comparison": self.self_comparison,
            "names_a": self.names_a,
            "names_b": self.names_b,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the state by one from :meth:`state_dict` (tensors move to :attr:`device`)."""
        missing = {"hsic_ab", "hsic_aa", "hsic_bb", "n_examples", "n_batches",
                   "self_comparison"} - set(state)
        if missing:
            msg = f"state dict is missing {sorted(missing)}"
            raise KeyError(msg)
        if state["hsic_ab"] is None:
            self.reset()
            return
        dev = self.device if self.device is not None else torch.as_tensor(state["hsic_ab"]).device
        self.device = dev

        def _t(v: Any) -> torch.Tensor:
            return torch.as_tensor(v).to(dev, torch.float64).clone()

        self.hsic_ab, self.hsic_aa = _t(state["hsic_ab"]), _t(state["hsic_aa"])
        self.self_comparison = bool(state["self_comparison"])
        self.hsic_bb = self.hsic_aa if self.self_comparison else _t(state["hsic_bb"])
        self.n_examples = int(state["n_examples"])
        self.n_batches = int(state["n_batches"])
        for key in ("names_a", "names_b"):
            if state.get(key) is not None and getattr(self, key) is None:
                setattr(self, key, list(state[key]))
