"""Local attention mass per head: a content-independent measure of attention locality.

The paper's mean attention distance mixes two things: where a head looks *relative to the
query* (local or global), and where the image content is. A head that seeks the object reads
as the uniform-attention distance when objects sit at random positions, like a global head.
The local ratio measures locality directly: for each interior query patch (every patch with a
full 3x3 neighbourhood), the attention mass on its 3x3 Chebyshev neighbourhood (itself
included), over the spatial keys only (prefix tokens dropped, rows renormalised), divided by
what uniform attention puts there (9 / S for S spatial tokens). Uniform attention and
random-init ViTs score 1; a head that attends only to its neighbours scores S / 9 (7.1 on an
8x8 grid). It is averaged over interior queries and images.

Because both statistics are linear in the attention map, the local ratio (and the mean
distance) of the image-averaged map equals the image average of the per-image values.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.catalog import pair
from ..results.base import Result
from ._run import SumState, check_input_grid, check_same, image_run, weighted_merge
from .attention import AttentionCapture, attention_blocks

__all__ = ["AttentionLocalityResult", "attention_locality", "local_attention_sums",
           "neighbourhood"]


def neighbourhood(grid_size: int | tuple[int, int], radius: int = 1,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(near, interior)``: (S, S) float64 1 where the Chebyshev grid distance is at most
    ``radius``, and (S,) bool for queries whose whole neighbourhood lies inside the grid."""
    h, w = pair(grid_size)
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], 1)
    near = ((pos[:, None] - pos[None]).abs().amax(-1) <= radius).to(torch.float64)
    interior = ((pos[:, 0] >= radius) & (pos[:, 0] < h - radius) & (pos[:, 1] >= radius)
                & (pos[:, 1] < w - radius))
    if not interior.any():
        msg = f"a {h}x{w} grid has no interior query for a neighbourhood of radius {radius}"
        raise ValueError(msg)
    return near, interior


def local_attention_sums(attn: torch.Tensor, near: torch.Tensor, interior: torch.Tensor,
                         num_prefix_tokens: int) -> torch.Tensor:
    """(H,) float64: the summed local mass over images and interior queries.

    Args:
        attn: (B, H, N, N) attention probabilities.
        near, interior: From :func:`neighbourhood`.
        num_prefix_tokens: Leading tokens (CLS, ...) dropped as queries and keys.
    """
    p = num_prefix_tokens
    a = attn[..., p:, p:].to(torch.float64)
    if a.shape[-1] != near.shape[0]:
        msg = (f"attention has {a.shape[-1]} spatial tokens after {p} prefix tokens, but the "
               f"grid has {near.shape[0]}")
        raise ValueError(msg)
    a = a[:, :, interior]  # (B, H, Si, S)
    a = a / a.sum(-1, keepdim=True)  # over the spatial keys only
    return (a * near[interior]).sum(-1).sum((0, 2))


class AttentionLocalityResult(Result):
    """Local attention ratio of every head of every analysed block.

    Arrays: ``local_ratio`` (L, H) float64 (1 = uniform attention), ``count`` () the number of
    (image, interior query) pairs. Meta: ``model``, ``blocks``, ``grid_size``, ``radius``,
    ``num_prefix_tokens``, ``uniform_mass``, ``n_images``.
    """

    array_names = ("local_ratio", "count")

    @property
    def local_ratio(self) -> np.ndarray:
        return self.arrays["local_ratio"]

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.meta["blocks"]]

    def __repr__(self) -> str:
        r = self.local_ratio
        return (f"AttentionLocalityResult({self.meta.get('model')}: {r.shape[0]} blocks x "
                f"{r.shape[1]} heads, n_images={self.meta.get('n_images')})")

    def local_heads(self, threshold: float = 2.0) -> np.ndarray:
        """(L,) the number of heads per block whose local ratio is at least ``threshold``."""
        return (self.local_ratio >= threshold).sum(1)

    def merge(self, other: AttentionLocalityResult) -> AttentionLocalityResult:
        """The result over the union of both image sets (exact: weighted by counts)."""
        check_same(self.meta, other.meta, ("model", "blocks", "grid_size", "radius",
                                           "num_prefix_tokens"), "attention locality")
        ca, cb = self.arrays["count"], other.arrays["count"]
        meta = dict(self.meta, n_images=self.meta["n_images"] + other.meta["n_images"])
        ratio = weighted_merge(self.local_ratio, ca, other.local_ratio, cb)
        return AttentionLocalityResult({"local_ratio": ratio, "count": np.asarray(ca + cb)},
                                       meta)

    def to_dataframe(self):
        """Long form: block, head, local_ratio."""
        import pandas as pd

        r = self.local_ratio
        rows = [(blk, h, float(r[i, h])) for i, blk in enumerate(self.blocks)
                for h in range(r.shape[1])]
        return pd.DataFrame(rows, columns=["block", "head", "local_ratio"])

    def chart(self, *, title: str | None = None, width: int = 320, height: int = 220):
        """Every head's local ratio by block, with uniform attention (1) as a rule."""
        import altair as alt

        df = self.to_dataframe()
        base = alt.Chart(df).encode(x=alt.X("block:O", title="block"))
        points = base.mark_point(filled=True, size=60, opacity=0.85, color="#1f4e9c").encode(
            y=alt.Y("local_ratio:Q", title="local attention mass / uniform's",
                    scale=alt.Scale(type="log")),
            tooltip=["block", "head", alt.Tooltip("local_ratio:Q", format=".2f")])
        rule = alt.Chart({"values": [{"y": 1.0}]}).mark_rule(
            strokeDash=[4, 3], color="#666").encode(y="y:Q")
        label = title or f"Local attention (3x3 neighbourhood): {self.meta.get('model')}"
        return (points + rule).properties(width=width, height=height, title=label)


def attention_locality(model: str | nn.Module, images: Any, *,
                       blocks: int | Iterable[int] | None = None, n_images: int | None = None,
                       batch_size: int = 32, radius: int = 1, device: Any = None,
                       progress: bool = True) -> AttentionLocalityResult:
    """Local attention ratio of every head (see the module docstring), streamed over images.

    Args:
        model: A ViT-style timm model, a timm name or ``"vitlens/<zoo name>"``.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        blocks: Block indices (``None``: all).
        n_images: Use the first ``n_images`` images (``None``: all).
        batch_size: Images per forward pass.
        radius: Chebyshev radius of the neighbourhood (1: 3x3).
        device: ``"cpu"``, ``"cuda"``...; by default CUDA when available.
        progress: Show a progress bar.

    Raises:
        NotApplicableError: the model has no timm attention blocks (e.g. a ResNet).
    """
    if isinstance(model, nn.Module):
        attention_blocks(model)  # fail before reading any image
    run = image_run([model], images, n_images=n_images, batch_size=batch_size, device=device,
                    what="attention locality")
    vit = run.model
    from ..models.layers import layer_catalog

    catalog = layer_catalog(vit)
    grid = catalog.grid_size
    if grid is None:
        msg = f"{type(vit).__name__} has no patch grid (patch_embed.grid_size)"
        raise ValueError(msg)
    npt = int(getattr(vit, "num_prefix_tokens", 0))
    near, interior = neighbourhood(grid, radius, run.device)
    state = SumState()

    def reduce(block: int, probs: torch.Tensor, _v: torch.Tensor) -> None:
        state.add(f"sum.{block}", local_attention_sums(probs, near, interior, npt))

    with AttentionCapture(vit, blocks, reduce=reduce, stop_early=True) as cap:
        for idx, (x,) in run.iterate(progress, f"attention locality {run.labels[0]}"):
            check_input_grid(x, grid, catalog.patch_size, "attention locality")
            cap.run(x)
            state.add("count", len(idx) * int(interior.sum()))
        chosen = cap.blocks
    state.all_reduce()
    count = state.numpy("count")
    uniform = float(near[interior].sum(1).mean()) / near.shape[0]  # 9 / S
    ratio = np.stack([state.numpy(f"sum.{b}") for b in chosen]) / count / uniform
    meta = {"model": run.labels[0], "blocks": chosen, "grid_size": list(grid), "radius": radius,
            "num_prefix_tokens": npt, "uniform_mass": uniform, "n_images": run.n,
            "images": getattr(run.images, "name", "images")}
    return AttentionLocalityResult({"local_ratio": ratio, "count": count}, meta)
