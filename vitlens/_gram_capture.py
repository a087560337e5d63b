"""Gram work inside the forward hooks: each layer is reduced as soon as it is computed.

With ``token_mode="flatten"`` (or ``"spatial"``) a layer of a big model is wide: ViT-B/16
blocks are 197 x 768 = 151,296 numbers per image, the first stage of a ResNet-50 802,816.
Holding every captured layer until the batch's forward pass ends costs
``batch x sum(widths)`` floats (17 GB for ViT-B/16 at paper density and batch 256). Here the
hook centres the layer and reduces it to its packed U-centred Gram, ``n(n-1)/2`` float64
numbers, while the activation is fresh; the activation itself is then released by the model
as usual. Peak memory becomes the forward pass's own plus ``L x n(n-1)/2`` float64.

The per-layer arithmetic is the similarity engine's own Gram route (the same functions, in
the same order), so the sums are those :meth:`MinibatchCKA.update` would accumulate for the
same batch; ``tests/test_cache.py`` checks this against ``update``.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import torch

from .capture import Capture
from .errors import CaptureError
from .similarity import MinibatchCKA
from .similarity._engine import _exact_fp32_matmul, _gram_rows, _triu

__all__ = ["GramCapture", "accumulate_rows", "gram_route_applies"]

_REDUCIBLE_MODES = ("flatten", "spatial")


def gram_route_applies(token_mode: str) -> bool:
    """Whether layers are wide per example, so the Gram route is the cheap exact one."""
    return token_mode in _REDUCIBLE_MODES


class _Reducing(dict):
    """A dict that stores ``reduce(name, value)`` instead of ``value``."""

    def __init__(self, reduce) -> None:
        super().__init__()
        self._reduce = reduce

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, self._reduce(name, value))


class GramCapture(Capture):
    """A :class:`~vitlens.capture.Capture` whose :meth:`run` returns, per layer, the packed
    strict upper triangle (N,) float64 of the layer's U-centred Gram, N = n(n-1)/2.

    Args:
        model, layers, token_mode: As for :class:`~vitlens.capture.Capture`.
        gram_dtype: Chunk-Gram dtype (the engine's ``gram_dtype``).
    """

    def __init__(self, model: torch.nn.Module, layers: Any, *, token_mode: str,
                 gram_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(model, layers, token_mode=token_mode, check_finite=False)
        # The hook reduces the activation before the model can change it in place (timm's
        # ResNet adds the shortcut into the last norm's output): no defensive clone needed.
        self.points = [dataclasses.replace(p, clone=False) for p in self.points]
        self.gram_dtype = gram_dtype
        self._iu_cache: dict = {}

    def _reduce(self, name: str, t: torch.Tensor) -> torch.Tensor:
        x = t.reshape(t.shape[0], -1)
        if x.shape[0] < 4:
            msg = f"layer {name!r} has {x.shape[0]} examples in this batch; CKA needs 4"
            raise CaptureError(msg)
        if not x.dtype.is_floating_point:
            x = x.float()
        iu = _triu(x.shape[0], x.device, self._iu_cache)
        # the forward may run under autocast: the Gram must not
        with torch.autocast(x.device.type, enabled=False), _exact_fp32_matmul():
            try:
                rows, _ = _gram_rows([x], self.gram_dtype, lambda _i: repr(name), iu)
            except ValueError as err:
                raise CaptureError(str(err)) from err
        return rows[0]

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; returns ``{layer: (N,) float64 packed U-centred Gram}``."""
        if not self._handles:
            msg = "GramCapture.run() must be called inside 'with GramCapture(...) as cap:'"
            raise CaptureError(msg)
        self._store, self._fired = _Reducing(self._reduce), {}
        self._thread = threading.get_ident()  # the forward pass below is this capture's
        with torch.no_grad():
            self.model(x)
        return self.collect()


def accumulate_rows(engine: MinibatchCKA, rows_a: list[torch.Tensor],
                    rows_b: list[torch.Tensor] | None, n: int) -> None:
    """Add one batch, given as packed U-centred Gram rows, to ``engine``'s sums.

    Mirrors the tail of the engine's Gram route: one (L_a, N) @ (N, L_b) product gives
    every pair, ``n HSIC_1 = 2 u_K . u_L / (n - 3)``.

    Args:
        engine: The accumulator (its state is updated in place).
        rows_a: L_a tensors (N,) float64 from :class:`GramCapture`.
        rows_b: L_b tensors, or None for a self-comparison.
        n: The batch size.
    """
    is_self = rows_b is None
    if engine.self_comparison is not None and engine.self_comparison != is_self:
        msg = "every batch must be a self-comparison, or none"
        raise ValueError(msg)
    dev = engine.device if engine.device is not None else rows_a[0].device
    ua = torch.stack(rows_a).to(dev)
    ub = ua if is_self else torch.stack(rows_b).to(dev)
    w = 2.0 / (n - 3)
    ab = (ua @ ub.T) * w
    if is_self:
        aa = bb = ab.diagonal().clone()
    else:
        aa = ua.square().sum(dim=1) * w
        bb = ub.square().sum(dim=1) * w
    if engine.hsic_ab is None:
        engine.device = dev
        engine.self_comparison = is_self
        engine.hsic_ab, engine.hsic_aa, engine.hsic_bb = ab, aa, bb
    else:
        if tuple(ab.shape) != tuple(engine.hsic_ab.shape):
            msg = (f"this batch has {tuple(ab.shape)} layer pairs but the accumulator "
                   f"{tuple(engine.hsic_ab.shape)}")
            raise ValueError(msg)
        engine.hsic_ab += ab
        engine.hsic_aa += aa
        engine.hsic_bb = engine.hsic_aa if is_self else engine.hsic_bb + bb
    engine.n_examples += int(n)
    engine.n_batches += 1
