"""Activation capture: forward hooks that live only inside a context manager.

>>> with Capture(model, ["blocks.0", "blocks.11"], token_mode="cls") as cap:
...     feats = cap.run(x)          # {"blocks.0": (n, C), "blocks.11": (n, C)}

Hooks are registered on ``__enter__`` and removed in a ``finally`` on exit, also when the
forward pass raises. One forward pass per batch captures every requested layer, under
``torch.no_grad`` (``Capture(..., grad=True)`` keeps the graph, for receptive fields).
The hooks act only on forward passes in the thread that entered the ``with`` block (or that
last called :meth:`Capture.run`), so a widget computing in a background thread and another
using the same model in the kernel's thread do not see each other's batches.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..errors import CaptureError
from ..models.catalog import LayerCatalog, LayerPoint, get_module
from ..models.layers import catalog_for
from .hooks import HookSet

TOKEN_MODES = ("flatten", "cls", "mean", "tokens", "spatial")


def resolved(x: torch.Tensor, point: LayerPoint,
             grid: tuple[int, int] | None = None) -> LayerPoint:
    """``point`` with an ``"auto"`` layout replaced by the one ``x`` has.

    By rank (4: a map, 3: tokens, 2: vectors). When the point knows its channel count, a map
    is NCHW or NHWC by where the channels are (if both axes fit, the model's declared format,
    ``map_layout``), and tokens must have them last. Tokens keep the point's prefix tokens
    only if the count says they are there: CaiT's blocks carry no CLS token though the model
    has one (it joins in the class-attention blocks).

    Args:
        grid: The model's patch grid, if known.

    Raises:
        CaptureError: the layout cannot be told (a rank other than 2-4, channels on neither
            axis of a map, or tokens whose channels are not last).
    """
    if point.layout != "auto":
        return point
    c, shape = point.channels, tuple(x.shape)
    layout = {4: "nchw", 3: "tokens", 2: "vector"}.get(x.dim())
    if layout is None:
        msg = (f"module {point.name!r} produced a tensor of shape {shape}; token modes "
               "other than 'flatten' need (n, C, H, W), (n, H, W, C), (n, N, C) or (n, C)")
        raise CaptureError(msg)
    if c is not None and x.dim() == 4:
        first, last = shape[1] == c, shape[3] == c
        if not (first or last):
            msg = (f"layer {point.name!r} has {c} channels but a map of shape {shape}, with "
                   "neither axis 1 (NCHW) nor axis 3 (NHWC) of that size, so its layout is "
                   "unknown; use token_mode='flatten'")
            raise CaptureError(msg)
        layout = point.map_layout if first and last else "nchw" if first else "nhwc"
    elif c is not None and x.dim() == 3 and shape[2] != c:
        msg = (f"layer {point.name!r} has {c} channels but tokens of shape {shape}; its layout "
               "is unknown; use token_mode='flatten'")
        raise CaptureError(msg)
    npt = _prefix_tokens(shape[1], point.num_prefix_tokens, grid) if layout == "tokens" else 0
    return dataclasses.replace(point, layout=layout, num_prefix_tokens=npt)


def _prefix_tokens(n: int, npt: int, grid: tuple[int, int] | None) -> int:
    """How many of ``n`` tokens are prefix tokens, given the model's ``npt``."""
    if npt == 0:
        return 0
    if grid is not None:
        cells = grid[0] * grid[1]
        return npt if n == cells + npt else 0 if n == cells else npt
    square = lambda k: k >= 1 and round(k**0.5) ** 2 == k  # noqa: E731
    return 0 if square(n) and not square(n - npt) else npt


def has_cls_token(point: LayerPoint) -> bool:
    """Whether ``token_mode="cls"`` applies: a token layout with a prefix token."""
    return point.layout == "tokens" and point.num_prefix_tokens >= 1


def _as_tokens(x: torch.Tensor, point: LayerPoint) -> tuple[torch.Tensor, int]:
    """Bring an activation to (n, N, C) with its prefix-token count, or (n, C) vectors."""
    if point.layout == "tokens":
        return x, point.num_prefix_tokens
    if point.layout == "tokens_t":
        return x.transpose(1, 2), 0
    if point.layout == "nchw":
        return x.flatten(2).transpose(1, 2), 0
    if point.layout == "nhwc":
        return x.flatten(1, 2), 0
    return x, 0


def _grid_of(x: torch.Tensor, point: LayerPoint, n_spatial: int,
             grid: tuple[int, int] | None) -> tuple[int, int]:
    if point.layout == "nchw":
        return int(x.shape[2]), int(x.shape[3])
    if point.layout == "nhwc":
        return int(x.shape[1]), int(x.shape[2])
    if grid is not None and grid[0] * grid[1] == n_spatial:
        return grid
    side = int(round(n_spatial**0.5))
    if side * side != n_spatial:
        msg = (f"layer {point.name!r} has {n_spatial} spatial tokens, which is not a known grid; "
               "use token_mode='flatten', 'mean' or 'tokens'")
        raise CaptureError(msg)
    return side, side


def _mean_float64(spatial: torch.Tensor) -> torch.Tensor:
    """(n, N, C) -> (n, C) token mean in float64: a float32 mean over many tokens loses the
    small differences between examples when a channel has a large offset ("massive
    activations"), and CKA accumulates in float64 anyway. MPS has no float64, so MPS tensors
    are averaged on the CPU."""
    if spatial.device.type == "mps":
        spatial = spatial.cpu()
    return spatial.to(torch.float64).mean(dim=1)


def apply_token_mode(x: torch.Tensor, point: LayerPoint, token_mode: str,
                     grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Reduce one captured activation according to ``token_mode``.

    Returns:
        ``flatten``: (n, D) all tokens (prefix included) or the whole map, flattened.
        ``cls``: (n, C) the first prefix token. ``mean``: (n, C) the mean over spatial tokens
        (prefix tokens excluded) or spatial positions, in float64. ``tokens``: (n * N_spatial, C), each
        spatial token an example. ``spatial``: (n, H, W, C), the grid kept.
    """
    n = x.shape[0]
    if token_mode == "flatten":
        return x.reshape(n, -1)
    point = resolved(x, point, grid)
    if x.dim() == 2:
        if token_mode == "mean":
            return x
        msg = f"layer {point.name!r} is a vector per example; token_mode={token_mode!r} needs tokens"
        raise CaptureError(msg)
    tokens, npt = _as_tokens(x, point)
    if token_mode == "cls":
        if npt < 1:
            msg = (f"layer {point.name!r} has no CLS/prefix token (num_prefix_tokens=0); use "
                   "token_mode='mean' (average pooling) or 'flatten'")
            raise CaptureError(msg)
        return tokens[:, 0]
    spatial = tokens[:, npt:]
    if token_mode == "mean":
        return _mean_float64(spatial)
    if token_mode == "tokens":
        return spatial.reshape(-1, spatial.shape[-1])
    if token_mode == "spatial":
        h, w = _grid_of(x, point, spatial.shape[1], grid)
        return spatial.reshape(n, h, w, spatial.shape[-1])
    msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
    raise ValueError(msg)


class Capture(HookSet):
    """Capture the named layers of ``model`` in one forward pass per batch.

    Args:
        model: A timm model (or any model with a :func:`vitlens.layer_catalog`).
        layers: A selector for :meth:`LayerCatalog.select` (``"blocks"``, ``"all"``, a kind,
            or names).
        token_mode: One of :data:`TOKEN_MODES`, or ``None`` to keep raw activations.
        grad: Keep the autograd graph (no ``no_grad``, no detach).
        check_finite: Raise :class:`CaptureError` on NaN or inf activations.
    """

    def __init__(self, model: nn.Module, layers: str | Iterable[str] | None = "blocks", *,
                 token_mode: str | None = "flatten", grad: bool = False,
                 check_finite: bool = True, catalog: LayerCatalog | None = None) -> None:
        if token_mode is not None and token_mode not in TOKEN_MODES:
            msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
            raise ValueError(msg)
        super().__init__(model)
        self.catalog = catalog or catalog_for(model, layers)
        self.layers: list[str] = self.catalog.select(layers)
        if token_mode == "cls":
            self.layers = _cls_layers(self.catalog, self.layers, layers)
        self.points: list[LayerPoint] = [self.catalog[name] for name in self.layers]
        self.token_mode = token_mode
        self.grad = grad
        self.check_finite = check_finite
        self._store: dict[str, torch.Tensor] = {}
        self._fired: dict[str, int] = {}

    def _hook_for(self, point: LayerPoint):
        def store(t: torch.Tensor) -> None:
            if not self._ours():
                return  # another thread's forward pass of the same model: not ours
            if not isinstance(t, torch.Tensor):
                msg = f"layer {point.name!r} produced {type(t).__name__}, not a tensor"
                raise CaptureError(msg)
            if not self.grad:
                t = t.detach()
            if point.clone:  # the model changes this tensor in place after the hook
                t = t.clone()
            if self.token_mode is not None:
                t = apply_token_mode(t, point, self.token_mode, self.catalog.grid_size)
            self._store[point.name] = t
            self._fired[point.name] = self._fired.get(point.name, 0) + 1

        if point.hook == "input":
            def pre_hook(_module, args):
                store(args[0])
            return pre_hook, True

        def fwd_hook(_module, _args, output):
            store(output[0] if isinstance(output, tuple) else output)
        return fwd_hook, False

    def _register(self) -> None:
        for point in self.points:
            module = get_module(self.model, point.module)
            hook, is_pre = self._hook_for(point)
            self._add_hook(module, hook, pre=is_pre)

    def _cleared(self) -> None:
        self._store = {}

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; returns ``{layer: activation}`` in the requested layer order.

        Raises:
            CaptureError: a layer did not fire exactly once, or (with ``check_finite``) holds
                NaN or inf values.
        """
        self._claim("run")  # the forward pass below is this capture's
        self._store, self._fired = {}, {}
        if self.grad:
            self.model(x)
        else:
            with torch.no_grad():
                self.model(x)
        return self.collect()

    def collect(self) -> dict[str, torch.Tensor]:
        """The activations stored by the last forward pass (checks every layer fired once)."""
        missing = [name for name in self.layers if name not in self._fired]
        if missing:
            msg = (f"requested layers never fired during the forward pass: {missing}. The model's "
                   "forward does not run these modules (a custom forward?).")
            raise CaptureError(msg)
        repeated = [name for name in self.layers if self._fired[name] > 1]
        if repeated:
            msg = f"layers fired more than once per forward pass (a reused module?): {repeated}"
            raise CaptureError(msg)
        out = {name: self._store[name] for name in self.layers}
        if self.check_finite:
            for name, t in out.items():
                if not torch.isfinite(t).all():
                    msg = (f"non-finite activations (NaN or inf) at layer {name!r}, shape "
                           f"{tuple(t.shape)}. Check the input images and the model weights.")
                    raise CaptureError(msg)
        self._store = {}
        return out


def _cls_layers(catalog: LayerCatalog, names: list[str], spec: object) -> list[str]:
    """With ``token_mode="cls"``: a group selector (``"all"``, a kind) skips the points that
    have no CLS token, with a warning naming them; named points without one are an error."""
    lacking = [n for n in names if catalog[n].layout != "auto" and not has_cls_token(catalog[n])]
    if not lacking:
        return names
    explicit = [n for n in ([spec] if isinstance(spec, str) else list(spec or []))
                if n in lacking]
    if explicit or len(lacking) == len(names):
        which = explicit or lacking
        msg = (f"token_mode='cls' needs a CLS/prefix token, and layers {which} have no CLS "
               "token (patch embeddings, conv maps, pooled vectors); use token_mode='mean' (average "
               "pooling) or 'flatten', or select layers after the CLS token is added")
        raise CaptureError(msg)
    warnings.warn(f"token_mode='cls': skipping layers without a CLS token: {lacking}",
                  UserWarning, stacklevel=3)
    return [n for n in names if n not in lacking]


def capture_layers(model: nn.Module, x: torch.Tensor, layers: str | Sequence[str] | None,
                   token_mode: str | None = "flatten") -> dict[str, torch.Tensor]:
    """Convenience: one batch, one forward pass, hooks removed afterwards."""
    with Capture(model, layers, token_mode=token_mode) as cap:
        return cap.run(x)
