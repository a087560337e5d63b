"""Spatial localization (Fig 9, 10, D.1-D.3): does the token at p still describe patch p?

For the token at grid position p of a layer, CKA *across images* between its representation
(n, C) and the raw preprocessed input patch at every grid position q (n, 3 * ph * pw) gives a
(gh, gw) map per p. Interior tokens of a CLS-trained ViT peak at their own patch; a GAP ViT
and a ResNet are much less localized.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..distributed import resolve_device
from ..errors import NotApplicableError
from ..figures import inline_data
from ..models.labels import model_label
from ..models.layers import layer_catalog
from ..results.base import Result, chart_size
from ..similarity import StackedCKA
from ..similarity.run import ESTIMATOR, CKARun
from ._run import images_and_count, load

__all__ = ["LocalizationResult", "input_patches", "localization"]


def input_patches(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Cut preprocessed images into a grid of patches.

    Args:
        x: (n, C, H, W) preprocessed images.
        grid: (gh, gw); H and W must be multiples of gh and gw.

    Returns:
        (n, gh, gw, C * ph * pw) raw pixels of each cell, with ph = H / gh, pw = W / gw.

    Raises:
        ValueError: the grid does not divide the image.
    """
    n, c, h, w = x.shape
    gh, gw = grid
    if gh < 1 or gw < 1 or h % gh or w % gw:
        msg = (f"mismatched grids: a {gh}x{gw} feature grid does not divide the {h}x{w} input "
               "into equal patches; choose a layer (or input size) whose grid divides the image")
        raise ValueError(msg)
    ph, pw = h // gh, w // gw
    p = x.reshape(n, c, gh, ph, gw, pw).permute(0, 2, 4, 1, 3, 5)
    return p.reshape(n, gh, gw, c * ph * pw)


def _positions(positions: Iterable[tuple[int, int]] | None, grid: tuple[int, int]) -> np.ndarray:
    gh, gw = grid
    if positions is None:
        return np.array([(i, j) for i in range(gh) for j in range(gw)], dtype=np.int64)
    pos = np.asarray(list(positions), dtype=np.int64).reshape(-1, 2)
    if len(pos) == 0:
        msg = "positions is empty; pass (row, col) grid positions or None for all"
        raise ValueError(msg)
    bad = [tuple(p) for p in pos.tolist() if not (0 <= p[0] < gh and 0 <= p[1] < gw)]
    if bad:
        msg = f"positions {bad} lie outside the {gh}x{gw} token grid of this layer"
        raise ValueError(msg)
    return pos


def localization(model: str | nn.Module, images: Any, *, layer: str,
                 positions: Iterable[tuple[int, int]] | None = None,
                 n_images: int | None = None, batch_size: int = 64,
                 device: str | torch.device | None = None,
                 progress: bool = True) -> LocalizationResult:
    """CKA between each token of ``layer`` and every raw input patch, across images.

    A ViT "token" is a spatial token (prefix tokens excluded); for a CNN it is all channels
    at one location of the feature map, and the input is cut into as many cells as the
    map has locations. Uses minibatch CKA (unbiased HSIC, float64): the token features of
    every position p are the row sets and the patches of every q the column sets; each
    batch's U-centred Grams of all of them come from batched products and every P x Q pair
    from one matrix product, accumulated as :class:`vitlens.similarity.MinibatchCKA` sums
    (``meta`` notes the estimator). The cost grows with P x Q: on very large feature maps
    (a CNN's first stage at 224 px has 56 x 56 positions) pass a few ``positions``.

    Args:
        model: A timm name, ``"vitlens/<zoo name>"`` or a module.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        layer: The layer name (see :func:`vitlens.layer_catalog`), e.g. ``"blocks.5"``.
        positions: (row, col) token positions; all grid positions by default.
        n_images: Use only the first ``n_images`` images.
        batch_size: Images per batch (at least 4).
        device: Torch device; CUDA when available by default.
        progress: Show a progress bar.

    Returns:
        A :class:`LocalizationResult` with ``maps`` of shape (P, gh, gw).

    Raises:
        NotApplicableError: the layer has no spatial grid (a pooled vector or a 1x1 map).
        ValueError: the layer's grid does not divide the input, or positions are off-grid.
        ImageError: fewer than 4 images.
    """
    dev = resolve_device(device)
    mod = load(model, dev)
    point = layer_catalog(mod)[layer]
    if point.layout == "vector":
        msg = (f"layer {layer!r} is a pooled vector per image, so it has no token grid to "
               "localize; pick a token or feature-map layer")
        raise NotApplicableError(msg)
    src, n = images_and_count(images, n_images, what="localization")
    state: dict[str, Any] = {}

    def features(xs: tuple, feats: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Token CKA's stacks: the chosen tokens (P, b, C) and every input patch (Q, b, D)."""
        x, tok = xs[0], feats["model"][layer]  # (b, 3, H, W), (b, gh, gw, C)
        if "grid" not in state:
            grid = (int(tok.shape[1]), int(tok.shape[2]))
            if grid[0] * grid[1] < 2:
                msg = (f"layer {layer!r} has a {grid[0]}x{grid[1]} map: with one position there "
                       "is nothing to localize; pick an earlier layer or a larger input")
                raise NotApplicableError(msg)
            state.update(grid=grid, pos=_positions(positions, grid), x_shape=tuple(x.shape))
        grid, pos = state["grid"], state["pos"]
        patches = input_patches(x, grid)  # (b, gh, gw, D)
        rows = torch.as_tensor(pos, device=tok.device)
        fa = tok[:, rows[:, 0], rows[:, 1]].transpose(0, 1)  # (P, b, C)
        fb = patches.flatten(1, 2).transpose(0, 1)  # (Q, b, D)
        return fa, fb

    def engine(_fa: torch.Tensor, _fb: torch.Tensor) -> StackedCKA:
        grid, pos = state["grid"], state["pos"]
        names_b = [f"patch {i},{j}" for i in range(grid[0]) for j in range(grid[1])]
        return StackedCKA([f"token {i},{j}" for i, j in pos], names_b, device=dev)

    run = CKARun.joint({"model": mod}, src, rows={"model": [layer]}, cols={"model": [layer]},
                       token_mode="spatial", batch_size=batch_size, device=dev, n_images=n,
                       features=features, engine=engine, desc=f"localization {layer}")
    run.run(progress)  # under torchrun: each rank's batches, then one all_reduce
    grid, pos, x = state["grid"], state["pos"], state["x_shape"]
    maps = run.matrix().reshape(len(pos), *grid)
    meta = {"model": model_label(model), "layer": layer, "grid": list(grid), "n_images": n,
            "batch_size": batch_size, "estimator": ESTIMATOR,
            "images": getattr(src, "name", "images"),
            "input_size": [int(x[2]), int(x[3])]}
    return LocalizationResult.build(maps, pos, meta)


class LocalizationResult(Result):
    """Per-token localization maps.

    Attributes:
        maps: (P, gh, gw) CKA between the token at ``positions[k]`` and the input patch at
            every grid cell.
        positions: (P, 2) (row, col) of each token.
        summary: ``peak_at_own_rate`` (interior tokens whose map peaks at their own patch),
            ``own_mean`` and ``other_mean`` (mean CKA at the own patch and elsewhere, over
            interior tokens) and ``n_interior``.
    """

    array_names = ("maps", "positions")

    @classmethod
    def build(cls, maps: np.ndarray, positions: np.ndarray,
              meta: dict[str, Any]) -> LocalizationResult:
        obj = cls({"maps": np.asarray(maps, np.float64),
                   "positions": np.asarray(positions, np.int64)}, meta)
        obj.meta["summary"] = obj._summarise()
        return obj

    from_maps = build  # the older name

    @property
    def maps(self) -> np.ndarray:
        return self.arrays["maps"]

    @property
    def positions(self) -> np.ndarray:
        return self.arrays["positions"]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.maps.shape[1:])  # type: ignore[return-value]

    @property
    def summary(self) -> dict[str, float]:
        return dict(self.meta["summary"])

    def own(self) -> np.ndarray:
        """(P,) CKA of each token with its own patch."""
        return self.maps[np.arange(len(self.positions)), self.positions[:, 0], self.positions[:, 1]]

    def peaks(self) -> np.ndarray:
        """(P, 2) grid position of each map's maximum (NaN values ignored; -1 if all NaN)."""
        flat = self.maps.reshape(len(self.maps), -1)
        out = np.full((len(flat), 2), -1, np.int64)
        ok = ~np.isnan(flat).all(axis=1)
        if ok.any():
            arg = np.nanargmax(flat[ok], axis=1)
            out[ok] = np.stack(np.unravel_index(arg, self.grid), axis=1)
        return out

    def interior(self) -> np.ndarray:
        """(P,) whether each token lies off the grid border."""
        gh, gw = self.grid
        r, c = self.positions[:, 0], self.positions[:, 1]
        return (r > 0) & (r < gh - 1) & (c > 0) & (c < gw - 1)

    def _summarise(self) -> dict[str, float]:
        inner = self.interior()
        peaks = self.peaks()
        own = self.own()
        flat = self.maps.reshape(len(self.maps), -1)
        mask = np.ones_like(flat, dtype=bool)
        mask[np.arange(len(flat)), self.positions[:, 0] * self.grid[1] + self.positions[:, 1]] = False
        others = np.array([np.nanmean(f[m]) if np.isfinite(f[m]).any() else np.nan
                           for f, m in zip(flat, mask, strict=True)])
        hit = (peaks == self.positions).all(axis=1)
        k = int(inner.sum())
        return {
            "peak_at_own_rate": float(hit[inner].mean()) if k else float("nan"),
            "own_mean": float(np.nanmean(own[inner])) if k else float("nan"),
            "other_mean": float(np.nanmean(others[inner])) if k else float("nan"),
            "n_interior": k,
            "peak_at_own_rate_all": float(hit.mean()),
        }

    def __repr__(self) -> str:
        s = self.summary
        return (f"LocalizationResult({self.meta.get('model')} {self.meta.get('layer')}: "
                f"{len(self.positions)} tokens on a {self.grid[0]}x{self.grid[1]} grid, "
                f"peak at own patch {s['peak_at_own_rate']:.2f}, own {s['own_mean']:.3f} vs "
                f"other {s['other_mean']:.3f})")

    def to_dataframe(self):
        """Long form: token_row, token_col, patch_row, patch_col, cka, own, interior."""
        import pandas as pd

        P, gh, gw = self.maps.shape
        k, qr, qc = np.meshgrid(np.arange(P), np.arange(gh), np.arange(gw), indexing="ij")
        k, qr, qc = k.ravel(), qr.ravel(), qc.ravel()
        tr, tc = self.positions[k, 0], self.positions[k, 1]
        return pd.DataFrame({
            "token_row": tr, "token_col": tc, "patch_row": qr, "patch_col": qc,
            "cka": self.maps.ravel(), "own": (tr == qr) & (tc == qc),
            "interior": self.interior()[k],
        })

    def chart(self, *, positions: Iterable[tuple[int, int]] | None = None, columns: int = 3,
              width: int | None = None, height: int | None = None, scheme: str = "viridis",
              size: int | None = None):
        """Heatmaps over input patches for a few tokens (Fig 10), own patch outlined.

        Args:
            positions: Tokens to show; by default up to 9 spread over the grid.
            columns: Panels per row.
            width, height: Each panel's, 110 by default (``size=`` sets both).
        """
        import altair as alt

        width, height = chart_size(width, height, size, 110)

        df = self.to_dataframe()
        if positions is None:
            chosen = _spread(self.positions, self.grid)
        else:
            chosen = [tuple(int(v) for v in p) for p in positions]
        keys = {tuple(p) for p in self.positions.tolist()}
        missing = [p for p in chosen if p not in keys]
        if missing:
            msg = f"positions {missing} are not in this result; it holds {len(keys)} tokens"
            raise ValueError(msg)
        sel = df[[(r, c) in set(chosen) for r, c in zip(df.token_row, df.token_col, strict=True)]]
        sel = sel.assign(token=[f"token ({r}, {c})" for r, c in
                                zip(sel.token_row, sel.token_col, strict=True)])
        order = [f"token ({r}, {c})" for r, c in chosen]
        x = alt.X("patch_col:O", title="patch column", axis=alt.Axis(labels=False, ticks=False))
        y = alt.Y("patch_row:O", title="patch row", axis=alt.Axis(labels=False, ticks=False))
        s = self.summary
        title = (f"{self.meta.get('model', '')} {self.meta.get('layer', '')}: peak at own "
                 f"patch {s['peak_at_own_rate']:.0%} of interior tokens")
        base = alt.Chart(inline_data(sel)).encode(x=x, y=y)
        heat = base.mark_rect().encode(
            color=alt.Color("cka:Q", title="CKA", scale=alt.Scale(scheme=scheme)),
            tooltip=["token:N", "patch_row:O", "patch_col:O",
                     alt.Tooltip("cka:Q", format=".3f")])
        own = base.transform_filter(alt.datum.own).mark_rect(
            fill=None, stroke="red", strokeWidth=2)
        return alt.layer(heat, own).properties(width=width, height=height).facet(
            facet=alt.Facet("token:N", sort=order, title=None), columns=columns,
        ).properties(title=title)

def _spread(positions: np.ndarray, grid: tuple[int, int]) -> list[tuple[int, int]]:
    """Up to 9 held positions, spread evenly over the grid."""
    gh, gw = grid
    held = [tuple(p) for p in positions.tolist()]
    rows = sorted({int(round(v)) for v in np.linspace(0, gh - 1, min(3, gh))})
    cols = sorted({int(round(v)) for v in np.linspace(0, gw - 1, min(3, gw))})
    want = [(r, c) for r in rows for c in cols if (r, c) in held]
    return want or held[:9]
