"""Removing a skip connection (Fig 8): the within-model CKA splits into two groups of layers.

A ViT trained without the residual adds of block i (``vitlens/vit-noskip-<i>``) shows a
within-model CKA heatmap with two blocks: the layers before block i and those after it.
:func:`block_split` finds where that split lies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..results.similarity import SimilarityResult
from ..similarity.run import cka

__all__ = ["SkipStructureResult", "block_split", "skip_removal_structure", "split_contrast"]


def split_contrast(matrix: np.ndarray, split: int) -> float:
    """Mean within-group CKA minus mean between-group CKA for groups [0, split), [split, L).

    Within-group pairs exclude the diagonal (a layer with itself); NaN entries are ignored.
    """
    m = np.asarray(matrix, dtype=np.float64)
    L = m.shape[0]
    within = np.zeros_like(m, dtype=bool)
    within[:split, :split] = True
    within[split:, split:] = True
    np.fill_diagonal(within, False)
    between = np.zeros_like(m, dtype=bool)
    between[:split, split:] = True
    between[split:, :split] = True
    if not 0 < split < L or not within.any():
        return float("nan")
    return float(np.nanmean(m[within]) - np.nanmean(m[between]))


def block_split(matrix: Any, layer_names: Sequence[str] | None = None, *,
                min_size: int = 2) -> int:
    """Where a within-model CKA matrix splits into two contiguous groups of layers.

    Every split s (first group ``[0, s)``, second ``[s, L)``, each at least ``min_size``
    layers) is scored by :func:`split_contrast`; the best-scoring s is returned.

    Args:
        matrix: (L, L) within-model CKA (symmetrised before scoring).
        layer_names: Names of the L layers (checked against the matrix size).
        min_size: Smallest group.

    Returns:
        The index of the first layer of the second group.

    Raises:
        ValueError: a non-square matrix, a name count that does not match, or fewer than
            ``2 * min_size`` layers.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        msg = f"block_split needs a square within-model CKA matrix, got shape {m.shape}"
        raise ValueError(msg)
    L = m.shape[0]
    if layer_names is not None and len(layer_names) != L:
        msg = f"{len(layer_names)} layer names for a {L}x{L} matrix"
        raise ValueError(msg)
    if L < 2 * max(min_size, 1):
        msg = f"a {L}x{L} matrix cannot split into two groups of at least {min_size} layers"
        raise ValueError(msg)
    m = (m + m.T) / 2
    scores = [split_contrast(m, s) for s in range(max(min_size, 1), L - max(min_size, 1) + 1)]
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return int(np.argmax(scores)) + max(min_size, 1)


def _noskip_block(model: Any) -> int | None:
    if isinstance(model, str):
        found = re.search(r"noskip-(\d+)$", model)
        return int(found.group(1)) if found else None
    for i, blk in enumerate(getattr(model, "blocks", [])):
        if type(blk).__name__ == "NoSkipBlock":
            return i
    return None


def skip_removal_structure(result: SimilarityResult | str | nn.Module, images: Any = None, *,
                           layers: Any = "all", noskip_block: int | None = None,
                           min_size: int = 2, batch_size: int = 64,
                           device: str | torch.device | None = None, progress: bool = True,
                           n_images: int | None = None) -> SkipStructureResult:
    """Within-model CKA of a ViT without skip connections in one block, and its split.

    Args:
        result: A within-model :class:`SimilarityResult`, or a model (e.g.
            ``"vitlens/vit-noskip-3"``) whose within-model CKA is computed on ``images``.
        images: Images for the CKA (needed when ``result`` is a model).
        layers: Layer selector for the CKA (``"all"``: norms, attention, MLP, blocks).
        noskip_block: The block without skips, recorded for comparison (read from the zoo
            name or the model's ``NoSkipBlock`` when omitted).
        min_size: Smallest group for :func:`block_split`.

    Returns:
        A :class:`SkipStructureResult` (a :class:`SimilarityResult` with the split).
    """
    if isinstance(result, SimilarityResult):
        sim = result
        if sim.layers_a != sim.layers_b:
            msg = "skip_removal_structure needs a within-model result (the same layers on both axes)"
            raise ValueError(msg)
    else:
        if images is None:
            msg = "pass images= to compute the within-model CKA of the model"
            raise ValueError(msg)
        if noskip_block is None:
            noskip_block = _noskip_block(result)
        sim = cka(result, images, layers_a=layers, batch_size=batch_size, device=device,
                  progress=progress, n_images=n_images)
    names = sim.layers_a
    split = block_split(sim.matrix, names, min_size=min_size)
    meta = dict(sim.meta)
    meta.update(split_index=split, split_layer=names[split],
                split_block=_split_block(sim, split),
                contrast=split_contrast((sim.matrix + sim.matrix.T) / 2, split),
                noskip_block=noskip_block)
    extra = {k: v for k, v in sim.arrays.items() if k != "matrix"}
    return SkipStructureResult(sim.matrix, names, names, meta, **extra)


def _split_block(sim: SimilarityResult, split: int) -> int | None:
    """The block index of the split layer: from the run's layer catalog (``blocks_a``), else
    from a timm ViT name such as ``blocks.3.attn`` (a result built by hand)."""
    blocks = sim.meta.get("blocks_a")
    if blocks:
        return blocks[split]
    parts = str(sim.layers_a[split]).split(".")
    return int(parts[1]) if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit() else None


class SkipStructureResult(SimilarityResult):
    """Within-model CKA with the two-group split found by :func:`block_split`.

    ``meta`` adds ``split_index`` (first layer of the second group), ``split_layer``,
    ``split_block``, ``contrast`` (within minus between mean CKA) and ``noskip_block``.
    """

    @property
    def split_index(self) -> int:
        return int(self.meta["split_index"])

    @property
    def contrast(self) -> float:
        return float(self.meta["contrast"])

    def __repr__(self) -> str:
        return (f"SkipStructureResult({self.meta.get('model_a')}: {len(self.layers_a)} layers, "
                f"split before {self.meta['split_layer']!r}, contrast {self.contrast:.3f}, "
                f"skips removed in block {self.meta.get('noskip_block')})")

    def chart(self, *, title: str | None = None, width: int | None = None,
              height: int | None = None, scheme: str = "magma", size: int | None = None):
        """The heatmap (Fig 8) with the split marked by white lines."""
        import altair as alt

        heat = super().chart(title=title, width=width, height=height, scheme=scheme, size=size)
        at = self.meta["split_layer"]
        lines = alt.Chart({"values": [{"layer_a": at, "layer_b": at}]})
        # the same fields, sorts and explicit domains as the heatmap keep network order
        x = alt.X("layer_b:N", sort=self.layers_b, bandPosition=0,
                  scale=alt.Scale(domain=self.layers_b))
        y = alt.Y("layer_a:N", sort=list(reversed(self.layers_a)), bandPosition=1,
                  scale=alt.Scale(domain=list(reversed(self.layers_a))))
        vline = lines.mark_rule(color="white", strokeWidth=2).encode(x=x)
        hline = lines.mark_rule(color="white", strokeWidth=2).encode(y=y)
        nb = self.meta.get("noskip_block")
        removed = f" (skips removed in block {nb})" if nb is not None else ""
        t = title or f"CKA: {self.meta.get('model_a')}{removed}; split before {at}"
        return alt.layer(heat, vline, hline).properties(title=t)
