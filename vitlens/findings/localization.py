"""Verdicts for spatial localization: Fig 9, 10, D.1-D.3 (notebook 05).

The statistic is the *localization contrast* of a high layer: for each interior token, the CKA
between its representation and its own input patch minus the mean CKA with every other input
patch, averaged over the interior tokens (its spread over tokens is in the note). It replaces
the share of tokens whose map peaks at their own patch, which saturates (a random-init ViT
scores 1.0) and, on the ResNet's 4x4 map, can only take the values 0, .25, .5, .75 and 1.

Rules, fixed before the zoo v2 results were seen:

- Fig 9: the CLS ViT's contrast at least :data:`MIN_CONTRAST`.
- Fig 10, D.2/D.3: the CLS ViT's contrast exceeds the GAP ViT's and the ResNet's by at least
  :data:`MIN_CONTRAST_GAP` each ("much less localized").
"""

from __future__ import annotations

import numpy as np

from ._core import Finding, finding, fmt

__all__ = ["MIN_CONTRAST", "MIN_CONTRAST_GAP", "contrast", "localization"]

MIN_CONTRAST = 0.05
MIN_CONTRAST_GAP = 0.05

_WHY = {
    "Fig 9, D.1": "the top blocks of our CLS ViT attend globally (notebook 02), so its high-layer "
                  "tokens mix and keep little of their own patch; random-init ViTs, whose tokens "
                  "stay mostly their own patch embedding, score far higher (the control column)",
    "Fig 10, D.2": "the CLS ViT's own tokens are barely localized (Fig 9), so there is no "
                   "localization for the GAP ViT to lack",
    "Fig 10, D.3": "the CLS ViT's own tokens are barely localized (Fig 9), so there is no "
                   "localization for the ResNet to lack",
}


def contrast(result) -> tuple[float, float]:
    """(mean, std) over interior tokens of own-patch CKA minus the mean CKA elsewhere."""
    maps = np.asarray(result.maps, np.float64)
    flat = maps.reshape(len(maps), -1)
    gw = result.grid[1]
    own_idx = result.positions[:, 0] * gw + result.positions[:, 1]
    own = flat[np.arange(len(flat)), own_idx]
    mask = np.ones_like(flat, dtype=bool)
    mask[np.arange(len(flat)), own_idx] = False
    rest = np.array([np.nanmean(f[m]) if np.isfinite(f[m]).any() else np.nan
                     for f, m in zip(flat, mask, strict=True)])
    c = (own - rest)[result.interior()]
    c = c[np.isfinite(c)]
    if not c.size:
        return float("nan"), float("nan")
    return float(c.mean()), float(c.std())


def _describe(result) -> str:
    m, sd = contrast(result)
    s = result.summary
    return (f"{result.meta.get('model')} {result.meta.get('layer')}: contrast {fmt(m)} "
            f"(std over interior tokens {fmt(sd)}); own-patch CKA {fmt(s['own_mean'])} vs "
            f"elsewhere {fmt(s['other_mean'])}; peak at own patch {fmt(s['peak_at_own_rate'], 2)}")


def localization(cls_vit, gap_vit=None, resnet=None) -> list[Finding]:
    """Fig 9, 10 and D.1-D.3.

    Args:
        cls_vit: :class:`~vitlens.analyses.LocalizationResult` of a high layer of a CLS ViT.
        gap_vit: The same for a ViT trained with global average pooling.
        resnet: The same for a high ResNet layer (a token is one spatial position).
    """
    c_cls = contrast(cls_vit)[0]
    rows = [finding(
        "Fig 9, D.1", "interior tokens of a CLS ViT's high layer are localized at their own patch",
        "localization contrast: own-patch CKA - mean CKA elsewhere (CLS ViT, interior tokens)",
        c_cls, f">= {MIN_CONTRAST}", c_cls >= MIN_CONTRAST, _describe(cls_vit),
        why_not=_WHY["Fig 9, D.1"])]
    for other, fig, name in ((gap_vit, "Fig 10, D.2", "a GAP ViT"),
                             (resnet, "Fig 10, D.3", "a ResNet")):
        if other is None:
            continue
        gap = c_cls - contrast(other)[0]
        rows.append(finding(
            fig, f"{name} is much less localized than the CLS ViT",
            f"localization contrast, CLS ViT - {name[2:]}", gap, f">= {MIN_CONTRAST_GAP}",
            gap >= MIN_CONTRAST_GAP, _describe(other), why_not=_WHY[fig]))
    return rows
