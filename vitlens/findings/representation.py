"""Verdicts for representation structure: Fig 1, 2, B.1 (notebook 01) and App. H (notebook 08).

Thresholds, fixed before any result was seen:

- Fig 1 uniformity: mean off-diagonal within-model CKA, ViT minus ResNet, above
  :data:`UNIFORM_MARGIN`.
- Fig 1 low vs high layers: mean CKA between the lowest and the highest quarter of the
  layers, ViT minus ResNet, above :data:`LOW_HIGH_MARGIN`.
- Fig 2 ordering: Spearman's rho between a ResNet layer's depth and the depth of its
  best-matching ViT layer, at least :data:`MIN_ORDER_RHO`.
- Fig 2 top third: best-match CKA (max over ResNet layers) of the ViT's lower two thirds
  minus that of its top third, above :data:`TOP_THIRD_MARGIN`.
- App. H blocks: the Mixer's within-model CKA split into two contiguous groups
  (:func:`vitlens.analyses.block_split`), within-group minus between-group mean CKA at least
  :data:`MIXER_BLOCK_CONTRAST`.
- App. H closeness: Mixer's best-match CKA with the ViT minus that with the ResNet above 0.
"""

from __future__ import annotations

import re

import numpy as np

from ._core import Finding, finding, fmt, nanmean, offdiag_mean, spearman

__all__ = ["LOW_HIGH_MARGIN", "MIN_ORDER_RHO", "MIXER_BLOCK_CONTRAST", "TOP_THIRD_MARGIN",
           "UNIFORM_MARGIN", "mixer", "representation_structure"]

UNIFORM_MARGIN = 0.05
LOW_HIGH_MARGIN = 0.05
MIN_ORDER_RHO = 0.5
TOP_THIRD_MARGIN = 0.05
MIXER_BLOCK_CONTRAST = 0.10

_WHY_SMALL = ("we think it takes scale: the paper's uniform ViTs are L/16 and H/14 pretrained on "
              "JFT-300M, while ours has 6 blocks of width 64 and its representation changes "
              "with depth (see the heatmap); note that random-init ViTs are far more uniform "
              "(the control column), so uniformity alone would not be evidence of training")


def _square(result, what: str) -> np.ndarray:
    m = np.asarray(result.matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        msg = f"{what} must be a within-model (square) CKA matrix, got shape {m.shape}"
        raise ValueError(msg)
    return (m + m.T) / 2


_BLOCK_OUTPUT = re.compile(r"^(blocks\.\d+|stages\.\d+\.blocks\.\d+|stages\.\d+)$")


def _block_outputs(matrix: np.ndarray, layers) -> np.ndarray:
    """The rows and columns of block (or unit) outputs, e.g. ``blocks.3``,
    ``stages.1.blocks.0``; the whole matrix when the names say nothing."""
    keep = [i for i, name in enumerate(layers) if _BLOCK_OUTPUT.match(str(name))]
    return matrix[np.ix_(keep, keep)] if len(keep) >= 2 else matrix


def low_high_similarity(matrix: np.ndarray) -> float:
    """Mean CKA between the lowest and the highest quarter of the layers (at least one each)."""
    n = matrix.shape[0]
    q = max(1, n // 4)
    return nanmean(matrix[:q, n - q:])


def best_match_depth(cross: np.ndarray) -> np.ndarray:
    """(L_b,) relative depth in [0, 1] of the best-matching row layer for each column layer."""
    m = np.where(np.isfinite(cross), cross, -np.inf)
    idx = np.argmax(m, axis=0).astype(np.float64)
    idx[~np.isfinite(cross).any(axis=0)] = np.nan
    return idx / max(cross.shape[0] - 1, 1)


def representation_structure(vit_within, resnet_within, cross) -> list[Finding]:
    """Fig 1, 2 and B.1: within- and cross-model CKA of a ViT and a ResNet.

    Args:
        vit_within: :class:`~vitlens.SimilarityResult` of the ViT with itself (layers in
            depth order, e.g. ``layers_a="all"``).
        resnet_within: The same for the ResNet.
        cross: ViT (rows, ``layers_a``) against ResNet (columns, ``layers_b``).

    Returns:
        Four :class:`Finding` rows (two for Fig 1, two for Fig 2).
    """
    v, r = _square(vit_within, "vit_within"), _square(resnet_within, "resnet_within")
    x = np.asarray(cross.matrix, np.float64)
    rows = []
    uv, ur = offdiag_mean(v), offdiag_mean(r)
    bv, br = (offdiag_mean(_block_outputs(v, vit_within.layers_a)),
              offdiag_mean(_block_outputs(r, resnet_within.layers_a)))
    rows.append(finding(
        "Fig 1", "ViT layers are uniformly similar to each other; ResNet layers are not",
        "mean off-diagonal within-model CKA over all capture points (the paper's layer set), "
        "ViT - ResNet", uv - ur, f"> {UNIFORM_MARGIN}",
        uv - ur > UNIFORM_MARGIN, f"ViT {fmt(uv)}, ResNet {fmt(ur)}; on block outputs only "
        f"(not the verdict's): ViT {fmt(bv)}, ResNet {fmt(br)}, difference {fmt(bv - br)}",
        why_not=_WHY_SMALL))
    lv, lr = low_high_similarity(v), low_high_similarity(r)
    rows.append(finding(
        "Fig 1", "ViT's lowest and highest layers are similar; ResNet's are not",
        "mean CKA between lowest and highest quarter of layers, ViT - ResNet", lv - lr,
        f"> {LOW_HIGH_MARGIN}", lv - lr > LOW_HIGH_MARGIN, f"ViT {fmt(lv)}, ResNet {fmt(lr)}",
        why_not=_WHY_SMALL))
    depth = best_match_depth(x)
    own = np.linspace(0, 1, x.shape[1])
    rho = spearman(own, depth)
    lo, hi = np.array_split(depth, 2)
    rows.append(finding(
        "Fig 2, B.1", "lower ResNet layers match lower ViT layers (lower half ~ lowest quarter, "
        "upper half ~ the next third)",
        "Spearman rho, ResNet layer depth vs depth of its best-matching ViT layer", rho,
        f">= {MIN_ORDER_RHO}", rho >= MIN_ORDER_RHO,
        f"best-match relative ViT depth: ResNet lower half {fmt(nanmean(lo), 2)}, upper half "
        f"{fmt(nanmean(hi), 2)} (paper: about 0-0.25 and 0.25-0.6)",
        why_not="the best-matching ViT layer does not move up with ResNet depth"))
    best = np.nanmax(np.where(np.isfinite(x), x, np.nan), axis=1)  # (L_vit,)
    cut = x.shape[0] - max(1, x.shape[0] // 3)
    low2, top = nanmean(best[:cut]), nanmean(best[cut:])
    rows.append(finding(
        "Fig 2, B.1", "the top third of ViT layers matches no ResNet layer",
        "best-match CKA with ResNet: ViT lower two thirds - top third", low2 - top,
        f"> {TOP_THIRD_MARGIN}", low2 - top > TOP_THIRD_MARGIN,
        f"lower two thirds {fmt(low2)}, top third {fmt(top)}",
        why_not="the top layers of both of our models are dominated by the same 10-class "
                "decision on an easy task, on which the ResNet is almost perfect, so they match "
                "each other (for the zoo, label CKA of the top third: ViT 0.41, ResNet 0.73); "
                "with the class means removed the reversal goes but no gap appears (0.019, "
                "docs/ZOO.md 3u): beyond the class decision our ViT's top layers carry nothing "
                "measurable that the ResNet's lack, whereas the paper's carry information R50's "
                "do not"))
    return rows


def mixer(comparison) -> list[Finding]:
    """App. H: the Mixer's within-model structure and its closeness to ViT vs ResNet.

    Args:
        comparison: A :class:`~vitlens.analyses.MixerComparisonResult`.
    """
    from ..analyses.skip import block_split, split_contrast

    within = _square(comparison.within, "the Mixer's within-model CKA")
    rows = []
    try:
        split = block_split(within)
        contrast = split_contrast(within, split)
        where = f"best split before layer {split} of {within.shape[0]}"
    except ValueError as err:
        contrast, where = float("nan"), str(err)
    rows.append(finding(
        "App. H", "the Mixer's within-model CKA shows distinct blocks",
        "two-group block contrast of Mixer within-model CKA (within - between mean)", contrast,
        f">= {MIXER_BLOCK_CONTRAST}", contrast >= MIXER_BLOCK_CONTRAST,
        f"{where}; mean off-diagonal CKA {fmt(offdiag_mean(within))}",
        why_not="the Mixer's layers form one uniform group rather than distinct blocks"))
    s = comparison.summary
    diff = float(s["best_match_vit"]) - float(s["best_match_resnet"])
    rows.append(finding(
        "App. H", "the Mixer is closer to ViT than to ResNet",
        "mean best-match CKA of Mixer layers, with ViT - with ResNet", diff, "> 0", diff > 0,
        f"with ViT {fmt(s['best_match_vit'])}, with ResNet {fmt(s['best_match_resnet'])}",
        why_not="the Mixer's layers find closer matches in the ResNet"))
    return rows
