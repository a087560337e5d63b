"""Gram work inside the forward hooks: each layer is reduced as soon as it is computed.

With ``token_mode="flatten"`` (or ``"spatial"``) a layer of a big model is wide: ViT-B/16
blocks are 197 x 768 = 151,296 numbers per image, the first stage of a ResNet-50 802,816.
Holding every captured layer until the batch's forward pass ends costs
``batch x sum(widths)`` floats (17 GB for ViT-B/16 at paper density and batch 256). Here the
hook centres the layer and reduces it to its packed U-centred Gram, ``n(n-1)/2`` float64
numbers, while the activation is fresh; the activation itself is then released by the model
as usual. Peak memory becomes the forward pass's own plus ``L x n(n-1)/2`` float64.

The per-layer arithmetic is the similarity engine's own Gram route
(:func:`vitlens.similarity.packed_ucentred_gram`), so the sums are those
:meth:`MinibatchCKA.update` would accumulate for the same batch;
:meth:`MinibatchCKA.update_grams` adds them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import CaptureError
from ..similarity import packed_ucentred_gram
from .activations import Capture

__all__ = ["GramCapture", "gram_route_applies"]

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
                 gram_dtype: torch.dtype = torch.float32, catalog: Any = None) -> None:
        super().__init__(model, layers, token_mode=token_mode, check_finite=False,
                         catalog=catalog)
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
        try:
            return packed_ucentred_gram(x, gram_dtype=self.gram_dtype, label=name,
                                        cache=self._iu_cache)
        except ValueError as err:
            raise CaptureError(str(err)) from err

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; returns ``{layer: (N,) float64 packed U-centred Gram}``."""
        self._claim("run")  # the forward pass below is this capture's
        self._store, self._fired = _Reducing(self._reduce), {}
        with torch.no_grad():
            self.model(x)
        return self.collect()
