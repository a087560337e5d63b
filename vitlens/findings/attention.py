"""Verdicts for mean attention distance: Fig 3, 4, 5, C.5 (notebook 02).

Thresholds, fixed before any result was seen:

- Fig 3/4 depth trend: Spearman's rho between block index and the block's mean head
  distance at least :data:`MIN_DEPTH_RHO`.
- Fig 3 local and global heads low, only global heads high: the spread (max - min head
  distance) of the lowest block at least :data:`MIN_SPREAD_RATIO` times that of the highest.
- Fig 5: Spearman's rho between a head subset's mean distance and its CKA with the early
  ResNet layers (mean over those layers) at most :data:`MAX_SUBSET_RHO` (a monotone fall).
- C.5: the most local head of block 0 of the small-data ViT lies at least
  :data:`MIN_LOCAL_SHIFT_PX` pixels farther than that of the full-data ViT.
"""

from __future__ import annotations

import numpy as np

from ._core import Finding, finding, fmt, spearman

__all__ = ["MAX_SUBSET_RHO", "MIN_DEPTH_RHO", "MIN_LOCAL_SHIFT_PX", "MIN_SPREAD_RATIO",
           "attention_distance"]

MIN_DEPTH_RHO = 0.5
MIN_SPREAD_RATIO = 1.5
MAX_SUBSET_RHO = -0.8
MIN_LOCAL_SHIFT_PX = 1.0

_WHY_GLOBAL = ("we think local heads need large-scale pretraining (the paper's point): our small "
               "ViT, trained briefly on a small synthetic dataset, has only global heads, in "
               "every block (compare their distances with uniform attention's)")


def uniform_distance(grid_size, patch_size) -> float:
    """Mean attention distance (pixels) of a head attending uniformly to every patch."""
    from ..analyses.distance import patch_distances

    return float(patch_distances(tuple(grid_size), tuple(patch_size)).mean())


def attention_distance(distance, head_subsets=None, small_data=None) -> list[Finding]:
    """Fig 3, 4 (and 5, C.5 when given).

    Args:
        distance: :class:`~vitlens.analyses.AttentionDistanceResult` of the ViT (all blocks).
        head_subsets: :class:`~vitlens.analyses.HeadSubsetResult` of its block 0 vs a ResNet.
        small_data: :class:`~vitlens.analyses.AttentionDistanceResult` of the same ViT
            trained on less data (C.5).
    """
    d = np.asarray(distance.distance, np.float64)  # (L, H)
    blocks = np.asarray(distance.blocks, np.float64)
    per_block = np.nanmean(d, axis=1)
    rho = spearman(blocks, per_block)
    try:
        uniform = uniform_distance(distance.meta["grid_size"], distance.meta["patch_size"])
        ref = f"; uniform attention: {fmt(uniform, 1)} px"
    except (KeyError, TypeError, ValueError):
        ref = ""
    rows = [finding(
        "Fig 3, 4", "attention becomes more global with depth",
        "Spearman rho, block index vs mean head distance", rho, f">= {MIN_DEPTH_RHO}",
        rho >= MIN_DEPTH_RHO,
        f"mean distance: lowest block {fmt(per_block[0], 1)} px, highest "
        f"{fmt(per_block[-1], 1)} px{ref}", why_not=_WHY_GLOBAL)]
    spread = np.nanmax(d, axis=1) - np.nanmin(d, axis=1)
    ratio = spread[0] / spread[-1] if spread[-1] > 0 else float("inf")
    rows.append(finding(
        "Fig 3", "low layers mix local and global heads; high layers are all global",
        "head-distance spread (max - min), lowest block / highest block", ratio,
        f">= {MIN_SPREAD_RATIO}", ratio >= MIN_SPREAD_RATIO,
        f"lowest block {fmt(np.nanmin(d[0]), 1)}-{fmt(np.nanmax(d[0]), 1)} px, highest "
        f"{fmt(np.nanmin(d[-1]), 1)}-{fmt(np.nanmax(d[-1]), 1)} px{ref}", why_not=_WHY_GLOBAL))
    if head_subsets is not None:
        cka = np.nanmean(np.asarray(head_subsets.cka, np.float64), axis=1)  # (S,)
        sd = np.asarray(head_subsets.subset_distance, np.float64)
        srho = spearman(sd, cka)
        rows.append(finding(
            "Fig 5", "CKA with early ResNet layers falls as the heads become more global",
            "Spearman rho, head-subset mean distance vs its CKA with early ResNet layers",
            srho, f"<= {MAX_SUBSET_RHO}", srho <= MAX_SUBSET_RHO,
            f"most local subset {fmt(sd[0], 1)} px: CKA {fmt(cka[0])}; most global "
            f"{fmt(sd[-1], 1)} px: CKA {fmt(cka[-1])}",
            why_not="when the heads' distances are nearly equal (no local heads), their order "
                    "carries no signal"))
    if small_data is not None:
        small = np.asarray(small_data.distance, np.float64)
        shift = float(np.nanmin(small[0]) - np.nanmin(d[0]))
        rows.append(finding(
            "C.5", "with less pretraining data, the lowest block learns fewer local heads "
            "(large ViTs; a small ViT still learns them)",
            "min head distance in block 0: small-data ViT - full-data ViT (px)", shift,
            f">= {MIN_LOCAL_SHIFT_PX}", shift >= MIN_LOCAL_SHIFT_PX,
            f"{small_data.meta.get('model')}: {fmt(np.nanmin(small[0]), 1)} px, "
            f"{distance.meta.get('model')}: {fmt(np.nanmin(d[0]), 1)} px",
            why_not="the paper sees this in large ViTs only (a small B/32 still learns local "
                    "heads from little data), and our ViT is small"))
    return rows
