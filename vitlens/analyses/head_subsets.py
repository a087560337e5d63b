"""Local vs global attention heads against a CNN (PAPER.md Fig 5).

The heads of one ViT block are sorted by mean attention distance. Subsets of heads are taken
from the most local to the most global (sliding windows of ``subset_size`` consecutive heads
in sorted order), and each subset's output (its per-head attention outputs ``a @ v``,
concatenated over heads, every token, flattened per image) is compared by minibatch CKA with
early layers of a CNN. The paper finds the CKA falls as the heads become more global.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import AttentionCapture, attention_blocks, resolve_blocks
from ..models.layers import layer_catalog
from ..results.base import Result
from ..similarity.run import CKARun
from ._run import SumState, image_run
from .distance import AttentionDistanceResult, distance_sums, patch_distances


class HeadSubsetResult(Result):
    """CKA of head subsets (rows, local to global) with CNN layers (columns).

    Arrays: ``cka`` (S, L) float64, ``subset_distance`` (S,) mean distance of each subset's
    heads (pixels), ``head_distance`` (H,) every head's mean distance, ``subsets`` (S, k)
    head indices. Meta: ``vit``, ``cnn``, ``block``, ``cnn_layers``, ``subset_size``,
    ``stride``, ``n_images``, ``batch_size``.
    """

    array_names = ("cka", "subset_distance", "head_distance", "subsets")

    @property
    def cka(self) -> np.ndarray:
        return self.arrays["cka"]

    @property
    def subset_distance(self) -> np.ndarray:
        return self.arrays["subset_distance"]

    @property
    def subsets(self) -> np.ndarray:
        return self.arrays["subsets"]

    @property
    def cnn_layers(self) -> list[str]:
        return list(self.meta["cnn_layers"])

    def __repr__(self) -> str:
        return (f"HeadSubsetResult({self.meta.get('vit')} block {self.meta.get('block')} vs "
                f"{self.meta.get('cnn')}: {len(self.subsets)} subsets x {len(self.cnn_layers)} "
                f"layers, n_images={self.meta.get('n_images')})")

    def to_dataframe(self):
        """Long form: subset, heads, mean_distance, cnn_layer, cka."""
        import pandas as pd

        rows = [{"subset": s, "heads": ",".join(str(int(h)) for h in self.subsets[s]),
                 "mean_distance": float(self.subset_distance[s]), "cnn_layer": layer,
                 "cka": float(self.cka[s, j])}
                for s in range(len(self.subsets)) for j, layer in enumerate(self.cnn_layers)]
        return pd.DataFrame(rows, columns=["subset", "heads", "mean_distance", "cnn_layer", "cka"])

    def chart(self, *, title: str | None = None, width: int = 340, height: int = 240):
        """Fig 5: CKA against the subset's mean attention distance, one line per CNN layer."""
        import altair as alt

        df = self.to_dataframe()
        base = alt.Chart(df).encode(
            x=alt.X("mean_distance:Q", title="Mean distance of the head subset (pixels)",
                    scale=alt.Scale(zero=False)),
            y=alt.Y("cka:Q", title="CKA"),
            color=alt.Color("cnn_layer:N", title=f"{self.meta.get('cnn')} layer",
                            sort=self.cnn_layers),
            tooltip=["heads:N", alt.Tooltip("mean_distance:Q", format=".2f"), "cnn_layer:N",
                     alt.Tooltip("cka:Q", format=".4f")])
        return (base.mark_line() + base.mark_point(filled=True)).properties(
            width=width, height=height,
            title=title or (f"{self.meta.get('vit')} block {self.meta.get('block')} head "
                            f"subsets vs {self.meta.get('cnn')}"))


def head_subsets(distances: Sequence[float], subset_size: int, stride: int = 1) -> np.ndarray:
    """(S, subset_size) head indices: sliding windows over the heads sorted by distance."""
    d = np.asarray(distances, dtype=np.float64)
    h = len(d)
    if not 1 <= subset_size <= h:
        msg = f"subset_size={subset_size} must be between 1 and the number of heads ({h})"
        raise ValueError(msg)
    if stride < 1:
        msg = f"stride={stride} must be at least 1"
        raise ValueError(msg)
    order = np.argsort(d, kind="stable")
    starts = range(0, h - subset_size + 1, stride)
    return np.stack([order[i:i + subset_size] for i in starts])


def _default_cnn_layers(cnn: nn.Module) -> list[str]:
    catalog = layer_catalog(cnn)
    blocks = catalog.select("blocks")
    early = blocks[:max(1, len(blocks) // 3)]
    return (["stem"] if "stem" in catalog else []) + early


def _head_distances(run, block: int, progress: bool) -> np.ndarray:
    vit = run.models[0]
    catalog = layer_catalog(vit)
    npt = int(getattr(vit, "num_prefix_tokens", 0))
    dist = patch_distances(catalog.grid_size, catalog.patch_size, run.device)
    state = SumState()

    def reduce(_b: int, probs: torch.Tensor, _v: torch.Tensor) -> None:
        state.add("sum", distance_sums(probs, dist, npt))
        state.add("count", probs.shape[0] * (probs.shape[-1] - npt))

    with AttentionCapture(vit, [block], reduce=reduce, stop_early=True) as cap:
        for _idx, xs in run.iterate(progress, f"head distances, block {block}"):
            cap.run(xs[0])
    state.all_reduce()  # under torchrun: join the ranks' sums
    return state.numpy("sum") / state.numpy("count")


class _HeadSubsetCapture:
    """Per-head attention outputs (a @ v) of one block, one feature per head subset: a
    capture for :meth:`vitlens.similarity.run.CKARun.joint` (``layers`` are the names)."""

    def __init__(self, vit: nn.Module, block: int, subsets: np.ndarray, names: list[str]) -> None:
        self.block, self.subsets, self.layers = block, subsets, names
        self.cap = AttentionCapture(vit, [block], reduce=self._head_outputs, stop_early=True)

    @staticmethod
    def _head_outputs(_b: int, probs: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return probs @ v  # (B, H, N, d)

    def __enter__(self) -> _HeadSubsetCapture:
        self.cap.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cap.__exit__(*exc)

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.cap.run(x)[self.block]
        n = out.shape[0]
        return {name: out[:, list(s)].transpose(1, 2).reshape(n, -1)
                for name, s in zip(self.layers, self.subsets, strict=True)}


def head_subset_cka(vit: str | nn.Module, cnn: str | nn.Module, images: Any, *, block: int = 0,
                    cnn_layers: Any = None, subset_size: int | None = None, stride: int = 1,
                    head_distances: Any = None, n_images: int | None = None,
                    batch_size: int = 64, device: Any = None,
                    progress: bool = True) -> HeadSubsetResult:
    """CKA between subsets of one ViT block's heads (local to global) and CNN layers.

    Args:
        vit: A ViT-style timm model (module or name).
        cnn: The model to compare with (a ResNet in the paper; any catalogued model works).
        images: Anything :func:`vitlens.datasets.as_images` accepts; both models see the
            same images, each with its own preprocessing.
        block: The ViT block whose heads are split (the paper: block 0).
        cnn_layers: CNN layer selector (default: its stem and the first third of its
            blocks/units).
        subset_size: Heads per subset (default: a third of the heads, at least 1).
        stride: Step between consecutive windows in the sorted head order.
        head_distances: (H,) mean distances of the block's heads, or an
            :class:`AttentionDistanceResult` that contains the block; by default they are
            measured on the same images first (a cheap pass that stops after the block).
        n_images: Use the first ``n_images`` images (``None``: all).
        batch_size: Images per batch (at least 4, for the unbiased HSIC).
        device: ``"cpu"``, ``"cuda"``...; by default CUDA when available.
        progress: Show progress bars.

    Returns:
        A :class:`HeadSubsetResult`; ``cka[s, j]`` is subset ``s`` vs CNN layer ``j``.
    """
    if isinstance(vit, nn.Module):
        attention_blocks(vit)  # fail before reading any image
    run = image_run([vit, cnn], images, n_images=n_images, batch_size=batch_size,
                    device=device, min_images=4, what="head-subset CKA")
    vit_m, cnn_m = run.models
    depth = len(attention_blocks(vit_m))
    (block,) = resolve_blocks(block, depth)
    heads = int(vit_m.blocks[block].attn.num_heads)
    if head_distances is None:
        dist = _head_distances(run, block, progress)
    elif isinstance(head_distances, AttentionDistanceResult):
        if block not in head_distances.blocks:
            msg = f"head_distances holds blocks {head_distances.blocks}, not block {block}"
            raise ValueError(msg)
        dist = head_distances.distance[head_distances.blocks.index(block)]
    else:
        dist = np.asarray(head_distances, dtype=np.float64)
    if dist.shape != (heads,):
        msg = f"head_distances has shape {dist.shape} but block {block} has {heads} heads"
        raise ValueError(msg)
    size = subset_size if subset_size is not None else max(1, heads // 3)
    subsets = head_subsets(dist, size, stride)
    layers = (layer_catalog(cnn_m).select(cnn_layers) if cnn_layers is not None
              else _default_cnn_layers(cnn_m))
    names = ["heads " + ",".join(str(int(h)) for h in s) for s in subsets]
    heads_cap = _HeadSubsetCapture(vit_m, block, subsets, names)
    cka_run = CKARun.joint({"vit": vit_m, "cnn": cnn_m}, run.images, rows={"vit": None},
                           cols={"cnn": layers}, captures={"vit": heads_cap},
                           token_mode="flatten", batch_size=batch_size, device=run.device,
                           n_images=run.n, desc=f"head subsets vs {run.labels[1]}")
    cka = cka_run.run(progress).matrix()
    meta = {"vit": run.labels[0], "cnn": run.labels[1], "block": block, "cnn_layers": layers,
            "subset_size": size, "stride": stride, "n_images": run.n, "batch_size": batch_size,
            "feature": "per-head attention outputs (a @ v) of the subset, all tokens, flattened",
            "images": getattr(run.images, "name", "images")}
    return HeadSubsetResult({"cka": cka, "subset_distance": dist[subsets].mean(axis=1),
                             "head_distance": dist, "subsets": subsets}, meta)
