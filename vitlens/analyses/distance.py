"""Mean attention distance per head (PAPER.md Fig 3, 4, C.5, C.6).

For head h and query patch i the distance is ``sum_j a_ij * d_ij``, where ``d_ij`` is the
Euclidean pixel distance between the centres of patches i and j (grid distance times patch
size). It is averaged over the query patches and over the images. Prefix (CLS,
distillation) tokens are excluded as queries and as keys.
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


def patch_distances(grid_size: int | tuple[int, int], patch_size: int | tuple[int, int],
                    device: torch.device | str | None = None) -> torch.Tensor:
    """(S, S) float64 pixel distances between patch centres, S = h * w, row-major order."""
    h, w = pair(grid_size)
    ph, pw = pair(patch_size)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device) * ph,
                            torch.arange(w, dtype=torch.float64, device=device) * pw,
                            indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1)  # (S, 2)
    return torch.cdist(pos, pos)


def _check_attention(attn: torch.Tensor, grid_size: tuple[int, int],
                     num_prefix_tokens: int) -> None:
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        msg = (f"attention must be (B, H, N, N) probabilities; got shape {tuple(attn.shape)}. "
               "Add a batch axis for a single image: attn[None]")
        raise ValueError(msg)
    n = attn.shape[-1]
    h, w = grid_size
    if n != num_prefix_tokens + h * w:
        msg = (f"attention has N={n} tokens but a {h}x{w} grid with {num_prefix_tokens} prefix "
               f"tokens needs {num_prefix_tokens + h * w}; pass the model's grid_size "
               "(patch_embed.grid_size) and num_prefix_tokens")
        raise ValueError(msg)


def _check_positive_ints(value: Any, what: str) -> tuple[int, int]:
    def _ok(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool) and v > 0

    items = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2 or not all(_ok(v) for v in items):
        msg = f"{what} must be a positive int or a pair (h, w) of positive ints; got {value!r}"
        raise ValueError(msg)
    return int(items[0]), int(items[1])


def _check_probabilities(attn: torch.Tensor, num_prefix_tokens: int, renormalize: bool) -> None:
    """Finite, non-negative rows that sum to 1 (float32 softmax: within 1e-3)."""
    shape = tuple(attn.shape)
    if not (attn.dtype.is_floating_point):
        msg = (f"attention must hold floating-point probabilities; got dtype {attn.dtype} "
               f"(shape {shape})")
        raise ValueError(msg)
    if attn.numel() == 0:
        msg = f"attention is empty (shape {shape}); pass at least one image and one head"
        raise ValueError(msg)
    a = attn.detach().to(torch.float64)
    finite = torch.isfinite(a)
    if not bool(finite.all()):
        n_nan, n_inf = int(torch.isnan(a).sum()), int(torch.isinf(a).sum())
        msg = (f"attention holds {n_nan} NaN and {n_inf} inf values (shape {shape}); it must "
               "be finite softmax probabilities: check the model for float16 overflow")
        raise ValueError(msg)
    lo = float(a.min())
    if lo < 0.0:
        msg = (f"attention holds negative values (min {lo:.4g}, shape {shape}); pass "
               "probabilities after the softmax, not attention logits (scores)")
        raise ValueError(msg)
    sums = a.sum(dim=-1)  # (B, H, N)
    tol = 1e-2 if attn.dtype in (torch.float16, torch.bfloat16) else 1e-3
    err = (sums - 1.0).abs()
    worst = int(err.argmax())
    if float(err.flatten()[worst]) > tol:
        b, h, i = np.unravel_index(worst, tuple(sums.shape))
        msg = (f"attention rows must sum to 1 over the keys (softmax probabilities, within "
               f"{tol:g}); they sum to between {float(sums.min()):.6g} and "
               f"{float(sums.max()):.6g} (image {b}, head {h}, query {i}: "
               f"{float(sums[b, h, i]):.6g}; shape {shape}). Pass the full attention "
               "probabilities, prefix tokens included (num_prefix_tokens says how many), "
               "not logits or a slice")
        raise ValueError(msg)
    if renormalize:
        p = num_prefix_tokens
        spatial = a[..., p:, p:].sum(dim=-1)
        if bool((spatial <= 0).any()):
            n_zero = int((spatial <= 0).sum())
            msg = (f"renormalize=True, but {n_zero} spatial queries give no attention to any "
                   f"patch (all of it to the {p} prefix tokens), so their renormalised "
                   "distance is undefined; use renormalize=False")
            raise ValueError(msg)


def distance_sums(attn: torch.Tensor, dist: torch.Tensor, num_prefix_tokens: int,
                  renormalize: bool = False) -> torch.Tensor:
    """(H,) float64: ``sum_b sum_i sum_j a_bhij d_ij`` over images and spatial queries.

    Divide by ``B * S`` (S spatial tokens) for the mean distance.
    """
    p = num_prefix_tokens
    a = attn[..., p:, p:].to(torch.float64)  # (B, H, S, S): spatial queries and keys
    if renormalize:
        a = a / a.sum(dim=-1, keepdim=True)
    b, h, s, _ = a.shape
    return (a.reshape(b, h, s * s) @ dist.to(a.device).reshape(s * s)).sum(dim=0)


def mean_attention_distance(attn: Any, grid_size: int | tuple[int, int],
                            patch_size: int | tuple[int, int], num_prefix_tokens: int = 0, *,
                            renormalize: bool = False) -> Any:
    """Per-head mean attention distance in pixels.

    ``d_h = mean_{b, i} sum_j a_bhij * d_ij`` over images b and spatial query patches i, with
    ``d_ij`` the pixel distance between the centres of patches i and j.

    Prefix tokens are dropped as queries and as keys. By default the remaining attention
    to spatial keys is *not* renormalised (as in the paper's and the common
    implementations): attention a query pays to the CLS token simply does not count, so a
    head attending mostly to CLS has a small distance. ``renormalize=True`` divides each
    query's spatial attention by its sum instead (the distance given that a head looks at
    patches).

    Args:
        attn: (B, H, N, N) attention probabilities (torch or NumPy), N = prefix + h * w.
        grid_size: (h, w) patches, or an int for a square grid.
        patch_size: Patch size in pixels, (ph, pw) or an int.
        num_prefix_tokens: Prefix tokens at the front (CLS 1, DeiT 2, GAP ViT 0).
        renormalize: Renormalise each query's attention over the spatial keys.

    Returns:
        (H,) float64 mean distances, a NumPy array for NumPy input, else a torch tensor.

    Raises:
        ValueError: the shape is not (B, H, N, N); N does not match the grid and prefix; a
            size or prefix count is not a positive (non-negative) int; the attention holds
            NaN, inf or negative values, or rows that do not sum to 1 within 1e-3 (1e-2 for
            float16/bfloat16); or, with ``renormalize=True``, a query gives no attention to
            any patch. Each message names the values found.
    """
    is_numpy = isinstance(attn, np.ndarray)
    t = torch.as_tensor(attn)
    grid = _check_positive_ints(grid_size, "grid_size")
    _check_positive_ints(patch_size, "patch_size")
    if (not isinstance(num_prefix_tokens, int | np.integer) or isinstance(num_prefix_tokens, bool)
            or num_prefix_tokens < 0):
        msg = f"num_prefix_tokens must be an int >= 0; got {num_prefix_tokens!r}"
        raise ValueError(msg)
    num_prefix_tokens = int(num_prefix_tokens)
    _check_attention(t, grid, num_prefix_tokens)
    _check_probabilities(t, num_prefix_tokens, renormalize)
    sums = distance_sums(t, patch_distances(grid, patch_size, t.device), num_prefix_tokens,
                         renormalize)
    out = sums / (t.shape[0] * grid[0] * grid[1])
    return out.cpu().numpy() if is_numpy else out


class AttentionDistanceResult(Result):
    """Mean attention distance (pixels) of every head of every analysed block.

    Arrays: ``distance`` (L, H) float64, ``count`` () the number of (image, query) pairs.
    Meta: ``model``, ``blocks``, ``patch_size``, ``grid_size``, ``num_prefix_tokens``,
    ``renormalize``, ``n_images``.
    """

    array_names = ("distance", "count")

    @property
    def distance(self) -> np.ndarray:
        return self.arrays["distance"]

    @property
    def blocks(self) -> list[int]:
        return [int(b) for b in self.meta["blocks"]]

    @property
    def n_heads(self) -> int:
        return int(self.distance.shape[1])

    def __repr__(self) -> str:
        return (f"AttentionDistanceResult({self.meta.get('model')}: {len(self.blocks)} blocks x "
                f"{self.n_heads} heads, n_images={self.meta.get('n_images')})")

    def sorted(self) -> np.ndarray:
        """(L, H) distances sorted ascending within each block (the paper's x-axis)."""
        return np.sort(self.distance, axis=1)

    def merge(self, other: AttentionDistanceResult) -> AttentionDistanceResult:
        """The result over the union of both image sets (exact: weighted by counts)."""
        check_same(self.meta, other.meta, ("model", "blocks", "patch_size", "grid_size",
                                           "num_prefix_tokens", "renormalize"), "attention distance")
        ca, cb = self.arrays["count"], other.arrays["count"]
        meta = dict(self.meta, n_images=self.meta["n_images"] + other.meta["n_images"])
        return AttentionDistanceResult({"distance": weighted_merge(self.distance, ca,
                                                                   other.distance, cb),
                                        "count": np.asarray(ca + cb)}, meta)

    def to_dataframe(self):
        """Long form: block, head, distance, rank (0 = the most local head of its block)."""
        import pandas as pd

        d = self.distance
        ranks = np.argsort(np.argsort(d, axis=1, kind="stable"), axis=1, kind="stable")
        rows = [(blk, h, float(d[i, h]), int(ranks[i, h]))
                for i, blk in enumerate(self.blocks) for h in range(d.shape[1])]
        return pd.DataFrame(rows, columns=["block", "head", "distance", "rank"])

    def chart(self, *, kind: str = "sorted", blocks: Iterable[int] | None = None,
              title: str | None = None, width: int = 320, height: int = 240):
        """Paper-style scatter of the heads.

        Args:
            kind: ``"sorted"`` (Fig 3: heads sorted per block on x, one colour per block)
                or ``"blocks"`` (Fig 4/C.5: block on x, every head a point).
            blocks: Blocks to show with ``"sorted"`` (default: the two lowest and the two
                highest, as in the paper; all when there are at most four).
        """
        import altair as alt

        df = self.to_dataframe()
        model = self.meta.get("model", "model")
        y = alt.Y("distance:Q", title="Mean distance (pixels)")
        tip = ["block:O", "head:O", alt.Tooltip("distance:Q", format=".2f"), "rank:O"]
        if kind == "blocks":
            chart = alt.Chart(df).mark_circle(size=40, opacity=0.95, stroke="white",
                                              strokeWidth=0.8).encode(
                x=alt.X("block:O", title="Block"), y=y,
                color=alt.Color("rank:O", title="Sorted head", scale=alt.Scale(scheme="viridis")),
                tooltip=tip)
            return chart.properties(width=width, height=height,
                                    title=title or f"Mean attention distance: {model}")
        if kind != "sorted":
            msg = f"kind={kind!r}; choose 'sorted' (Fig 3) or 'blocks' (Fig 4)"
            raise ValueError(msg)
        shown = list(blocks) if blocks is not None else self._default_blocks()
        unknown = [b for b in shown if b not in self.blocks]
        if unknown:
            msg = f"blocks {unknown} are not in this result (it has {self.blocks})"
            raise ValueError(msg)
        df = df[df["block"].isin(shown)].assign(label=lambda t: "block " + t["block"].astype(str))
        order = [f"block {b}" for b in shown]
        base = alt.Chart(df).encode(
            x=alt.X("rank:O", title="Sorted attention head"), y=y,
            color=alt.Color("label:N", title=None, sort=order,
                            scale=alt.Scale(scheme="tableau10")),
            tooltip=tip)
        # Dark, solid lines and outlined points: blocks that overlap stay readable.
        chart = (base.mark_line(opacity=0.9, strokeWidth=2.2)
                 + base.mark_circle(size=55, opacity=1.0, stroke="white", strokeWidth=1))
        return chart.properties(width=width, height=height,
                                title=title or f"Mean attention distance: {model}")

    def _default_blocks(self) -> list[int]:
        b = self.blocks
        return b if len(b) <= 4 else [b[0], b[1], b[-2], b[-1]]


def attention_distance(model: str | nn.Module, images: Any, *,
                       blocks: int | Iterable[int] | None = None, n_images: int | None = None,
                       batch_size: int = 32, renormalize: bool = False, device: Any = None,
                       progress: bool = True) -> AttentionDistanceResult:
    """Mean attention distance of every head, streamed over images.

    Attention probabilities are recomputed block by block in a pre-hook (see
    :class:`AttentionCapture`) and reduced on the spot to float64 sums; no map is stored.

    Args:
        model: A ViT-style timm model, a timm name or ``"vitlens/<zoo name>"``.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        blocks: Block indices (``None``: all).
        n_images: Use the first ``n_images`` images (``None``: all; the paper used 5,000).
        batch_size: Images per forward pass.
        renormalize: See :func:`mean_attention_distance` (default: no renormalisation).
        device: ``"cpu"``, ``"cuda"``...; by default CUDA when available.
        progress: Show a progress bar.

    Returns:
        An :class:`AttentionDistanceResult` with ``distance`` of shape (L, H).

    Raises:
        NotApplicableError: the model has no timm attention blocks (e.g. a ResNet).
    """
    if isinstance(model, nn.Module):
        attention_blocks(model)  # fail before reading any image
    run = image_run([model], images, n_images=n_images, batch_size=batch_size, device=device,
                    what="attention distance")
    vit = run.model
    from ..models.layers import layer_catalog

    catalog = layer_catalog(vit)
    if catalog.grid_size is None or catalog.patch_size is None:
        msg = f"{type(vit).__name__} has no patch grid (patch_embed.grid_size); cannot measure distances"
        raise ValueError(msg)
    npt = int(getattr(vit, "num_prefix_tokens", 0))
    dist = patch_distances(catalog.grid_size, catalog.patch_size, run.device)
    grid = catalog.grid_size
    state = SumState()

    def reduce(block: int, probs: torch.Tensor, _v: torch.Tensor) -> None:
        _check_attention(probs, grid, npt)
        state.add(f"sum.{block}", distance_sums(probs, dist, npt, renormalize))

    with AttentionCapture(vit, blocks, reduce=reduce, stop_early=True) as cap:
        for idx, (x,) in run.iterate(progress, f"attention distance {run.labels[0]}"):
            check_input_grid(x, grid, catalog.patch_size, "attention distance")
            cap.run(x)
            state.add("count", len(idx) * grid[0] * grid[1])
        chosen = cap.blocks
    state.all_reduce()  # under torchrun: join the ranks' sums
    count = state.numpy("count")
    distance = np.stack([state.numpy(f"sum.{b}") for b in chosen]) / count
    meta = {"model": run.labels[0], "blocks": chosen, "patch_size": list(catalog.patch_size),
            "grid_size": list(grid), "num_prefix_tokens": npt, "renormalize": renormalize,
            "n_images": run.n, "images": getattr(run.images, "name", "images")}
    return AttentionDistanceResult({"distance": distance, "count": count}, meta)
