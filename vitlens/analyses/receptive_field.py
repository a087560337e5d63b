"""Effective receptive fields (Luo et al. 2017; PAPER.md Fig 6, C.1-C.4).

For a layer with feature map F (per image), the ERF is the input gradient of the centre
location of F, summed over F's channels, in absolute value:

    ERF(y, x) = mean_{images} mean_{input channels c} | d (sum_k F[centre, k]) / d input[c, y, x] |

- The input is the preprocessed image (after timm's resize and normalisation), so the map
  has the model's input size (H, W).
- "Centre" is the spatial position (h // 2, w // 2) of the layer's (h, w) grid: for even
  sizes the lower-right of the four central positions. For ViT/Mixer tokens it is the patch
  token at that grid position (prefix tokens are never the centre).
- ``where="after"`` takes the layer's output (for a block: after the residual add).
  ``where="before"`` takes, for a block or unit, the sum of its branch outputs without the
  skip path: ViT ``ls1(attn) + ls2(mlp)`` (= block output - block input), Mixer token
  mixing + channel mixing, ResNet/ResNetV2 the branch right before the add (see
  :mod:`vitlens.analyses._blocks`). For a block without a skip path it is the block output.

The result keeps the raw mean |gradient| (float64); charts normalise each map by its maximum.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import Capture
from ..capture.activations import resolved
from ..capture.residual import canonical, residual_catalog
from ..figures import inline_data
from ..models.catalog import BLOCK_KINDS, LayerCatalog, LayerPoint
from ..results.base import Result, chart_size
from ._run import SumState, check_same, frozen_parameters, image_run, weighted_merge

WHERE = ("after", "before", "both")


def centre_sum(t: torch.Tensor, point: LayerPoint, grid: tuple[int, int] | None) -> torch.Tensor:
    """Sum over images and channels of the feature at the centre position: a scalar."""
    point = resolved(t, point, grid)
    if point.layout in ("nchw", "nhwc"):
        t = canonical(t, point)
        h, w = t.shape[2], t.shape[3]
        return t[:, :, h // 2, w // 2].sum()
    if point.layout in ("tokens", "tokens_t"):
        t = canonical(t, point)
        npt = point.num_prefix_tokens
        n = t.shape[1] - npt
        if grid is None or grid[0] * grid[1] != n:
            side = int(round(n**0.5))
            if side * side != n:
                msg = f"layer {point.name!r} has {n} spatial tokens, not a known grid"
                raise ValueError(msg)
            grid = (side, side)
        h, w = grid
        return t[:, npt + (h // 2) * w + w // 2].sum()
    msg = (f"layer {point.name!r} is a vector per image (no spatial positions), so it has no "
           "centre location; pick a layer with a feature map or tokens")
    raise ValueError(msg)


class ERFResult(Result):
    """Effective receptive fields: one (H, W) map per (layer, where) entry.

    Arrays: ``erf`` (K, H, W) float64 mean |gradient| (not normalised), ``count`` () images.
    Meta: ``model``, ``layers`` (K names), ``where`` (K of "after"/"before"), ``n_images``.
    """

    array_names = ("erf", "count")

    @property
    def erf(self) -> np.ndarray:
        return self.arrays["erf"]

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def where(self) -> list[str]:
        return list(self.meta["where"])

    def __repr__(self) -> str:
        k, h, w = self.erf.shape
        return (f"ERFResult({self.meta.get('model')}: {k} maps of {h}x{w}, "
                f"n_images={self.meta.get('n_images')})")

    def map(self, layer: str, where: str = "after", *, normalize: bool = False) -> np.ndarray:
        """The (H, W) map of one layer; ``normalize`` divides it by its maximum."""
        for k, (name, w) in enumerate(zip(self.layers, self.where, strict=True)):
            if name == layer and w == where:
                m = self.erf[k]
                return m / m.max() if normalize and m.max() > 0 else m
        msg = f"no ERF for ({layer!r}, {where!r}); this result has {list(zip(self.layers, self.where, strict=True))}"
        raise KeyError(msg)

    def normalized(self) -> np.ndarray:
        """(K, H, W) maps divided by their own maximum (for display)."""
        peak = self.erf.reshape(len(self.erf), -1).max(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.erf / np.where(peak > 0, peak, np.nan)[:, None, None]

    def merge(self, other: ERFResult) -> ERFResult:
        """The result over the union of both image sets (exact: weighted by counts)."""
        check_same(self.meta, other.meta, ("model", "layers", "where"), "ERF")
        ca, cb = self.arrays["count"], other.arrays["count"]
        meta = dict(self.meta, n_images=self.meta["n_images"] + other.meta["n_images"])
        return ERFResult({"erf": weighted_merge(self.erf, ca, other.erf, cb),
                          "count": np.asarray(ca + cb)}, meta)

    def to_dataframe(self, *, max_side: int | None = None):
        """Long form: layer, where, row, col, erf, normalized (optionally average-pooled)."""
        import pandas as pd

        maps, norm = self.erf, self.normalized()
        if max_side is not None:
            maps, norm = _pool(maps, max_side), _pool(norm, max_side)
        k, h, w = maps.shape
        kk, rr, cc = np.meshgrid(np.arange(k), np.arange(h), np.arange(w), indexing="ij")
        return pd.DataFrame({
            "layer": np.asarray(self.layers, dtype=object)[kk.ravel()],
            "where": np.asarray(self.where, dtype=object)[kk.ravel()],
            "row": rr.ravel(), "col": cc.ravel(),
            "erf": maps.ravel(), "normalized": norm.ravel()})

    def chart(self, *, layers: Iterable[str] | None = None, max_side: int = 64,
              width: int | None = None, height: int | None = None, title: str | None = None,
              size: int | None = None):
        """Fig 6-style grid of heatmaps, one per layer (columns) and where (rows), each
        normalised by its own maximum; maps larger than ``max_side`` are average-pooled
        (``width``/``height``: each panel's, 110 by default; ``size=`` sets both)."""
        import altair as alt

        width, height = chart_size(width, height, size, 110)

        df = self.to_dataframe(max_side=max_side)
        order = list(dict.fromkeys(self.layers))
        if layers is not None:
            order = [layer for layer in layers if layer in order]
            df = df[df["layer"].isin(order)]
        return alt.Chart(inline_data(df)).mark_rect().encode(
            x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None),
            color=alt.Color("normalized:Q", title="ERF / max",
                            scale=alt.Scale(scheme="greys", reverse=True, domain=[0, 1])),
            tooltip=["layer:N", "where:N", "row:O", "col:O",
                     alt.Tooltip("erf:Q", format=".3g")],
        ).properties(width=width, height=height).facet(
            column=alt.Column("layer:N", sort=order, title=None),
            row=alt.Row("where:N", sort=["after", "before"], title=None),
        ).properties(title=title or f"Effective receptive fields: {self.meta.get('model')}")


def _pool(maps: np.ndarray, max_side: int) -> np.ndarray:
    k, h, w = maps.shape
    f = max(1, -(-max(h, w) // max_side))
    if f == 1:
        return maps
    hh, ww = h // f * f, w // f * f
    return maps[:, :hh, :ww].reshape(k, hh // f, f, ww // f, f).mean(axis=(2, 4))


def _plan(model: nn.Module, layers: Any, wheres: list[str]
          ) -> tuple[LayerCatalog, list[tuple[str, str, list[str]]]]:
    """(catalog, entries): each entry is (layer, where, capture points summed for it)."""
    from ..models.layers import layer_catalog

    catalog = layer_catalog(model)
    subs = []
    if "before" in wheres:
        catalog, subs = residual_catalog(model, catalog)
    names = catalog.select(layers if layers is not None else "blocks")
    entries: list[tuple[str, str, list[str]]] = []
    for where in wheres:
        for name in names:
            if where == "after":
                entries.append((name, where, [name]))
                continue
            mine = [s for s in subs if s.block_name == name]
            if catalog[name].kind not in BLOCK_KINDS or not mine:
                blocks = catalog.select("blocks")
                msg = (f"where='before' needs block or unit layers (the residual add is inside "
                       f"them); {name!r} is not one. Choose from {blocks[:6]}"
                       f"{'...' if len(blocks) > 6 else ''}")
                raise ValueError(msg)
            points = [name] if not all(s.skip for s in mine) else [s.branch for s in mine]
            entries.append((name, where, points))
    return catalog, entries


def effective_receptive_field(model: str | nn.Module, images: Any, *, layers: Any = None,
                              where: str = "after", n_images: int | None = None,
                              batch_size: int = 8, device: Any = None,
                              progress: bool = True) -> ERFResult:
    """Effective receptive field of each layer (see the module docstring for the definition).

    One forward pass per batch keeps the graph; each (layer, where) entry then takes one
    backward pass to the input image. Parameters are frozen meanwhile (gradients are taken
    w.r.t. the input only).

    Args:
        model: A timm model (module or name) with a :func:`vitlens.layer_catalog`.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        layers: A layer selector (``None``: every block/unit; any catalog name with a
            spatial layout works for ``"after"``).
        where: ``"after"`` the residual add, ``"before"`` it, or ``"both"``.
        n_images: Images to average (``None``: 32, as in the paper, or all if fewer).
        batch_size: Images per forward/backward pass.
        device: ``"cpu"``, ``"cuda"``...; by default CUDA when available.
        progress: Show a progress bar.

    Returns:
        An :class:`ERFResult` with ``erf`` of shape (K, H, W), H x W the model's input size.

    Raises:
        NotApplicableError: ``where`` includes "before" for a model without a known
            residual structure.
        ValueError: an unknown ``where``, or "before" for a layer that is not a block.
    """
    if where not in WHERE:
        msg = f"where={where!r}; choose 'after', 'before' or 'both'"
        raise ValueError(msg)
    wheres = ["after", "before"] if where == "both" else [where]
    if isinstance(model, nn.Module):
        _plan(model, layers, wheres)  # fail before reading any image
    run = image_run([model], images, n_images=n_images, batch_size=batch_size, device=device,
                    default_n=32, what="the effective receptive field")
    catalog, entries = _plan(run.model, layers, wheres)
    needed = list(dict.fromkeys(p for _, _, pts in entries for p in pts))
    state = SumState()
    with Capture(run.model, needed, token_mode=None, grad=True, catalog=catalog) as cap, \
            frozen_parameters(run.model):
        for idx, (x,) in run.iterate(progress, f"ERF {run.labels[0]}"):
            x = x.detach().clone().requires_grad_(True)
            feats = cap.run(x)
            for k, (_, _, pts) in enumerate(entries):
                scalar = sum(centre_sum(feats[p], catalog[p], catalog.grid_size) for p in pts)
                (grad,) = torch.autograd.grad(scalar, x, retain_graph=k < len(entries) - 1,
                                              allow_unused=True)
                if grad is None:  # the centre does not depend on the input at all
                    grad = torch.zeros_like(x)
                state.add(f"erf.{k}", grad.abs().mean(dim=1).sum(dim=0))  # (H, W)
            state.add("count", len(idx))
            del feats
    state.all_reduce()  # under torchrun: join the ranks' sums
    count = state.numpy("count")
    erf = np.stack([state.numpy(f"erf.{k}") for k in range(len(entries))]) / count
    meta = {"model": run.labels[0], "layers": [e[0] for e in entries],
            "where": [e[1] for e in entries], "n_images": run.n,
            "images": getattr(run.images, "name", "images"),
            "definition": "mean over images and input channels of |d sum_k F[centre, k] / d x|",
            "centre": "grid position (h // 2, w // 2)"}
    return ERFResult({"erf": erf, "count": count}, meta)

