"""Verdicts for spatial localization: Fig 9, 10, D.1-D.3 (notebook 05).

The statistic is :class:`~vitlens.analyses.LocalizationResult`'s ``peak_at_own_rate``: the
share of interior tokens whose CKA map over input patches peaks at their own patch.

Thresholds, fixed before any result was seen:

- Fig 9: the CLS ViT's rate at least :data:`MIN_OWN_RATE`.
- Fig 10, D.2/D.3: the CLS ViT's rate exceeds the GAP ViT's and the ResNet's by at least
  :data:`MIN_RATE_GAP` each ("much less localized").
"""

from __future__ import annotations

from ._core import Finding, finding, fmt

__all__ = ["MIN_OWN_RATE", "MIN_RATE_GAP", "localization"]

MIN_OWN_RATE = 0.5
MIN_RATE_GAP = 0.25

_WHY = {
    "Fig 10, D.2": "we think our GAP ViT is too shallow to spread the small, randomly placed "
                   "object to every token: its top tokens are still local features of their own "
                   "patch (see also notebook 06: its single tokens are worse than their mean). "
                   "It also saw other training images than the CLS ViT (zoo cards), so the "
                   "comparison mixes pooling with data",
    "Fig 10, D.3": "the ResNet's last unit keeps positions tied to their own region",
}


def _describe(result) -> str:
    s = result.summary
    return (f"{result.meta.get('model')} {result.meta.get('layer')}: rate "
            f"{fmt(s['peak_at_own_rate'], 2)}, own-patch CKA {fmt(s['own_mean'])} vs "
            f"elsewhere {fmt(s['other_mean'])}")


def localization(cls_vit, gap_vit=None, resnet=None) -> list[Finding]:
    """Fig 9, 10 and D.1-D.3.

    Args:
        cls_vit: :class:`~vitlens.analyses.LocalizationResult` of a high layer of a CLS ViT.
        gap_vit: The same for a ViT trained with global average pooling.
        resnet: The same for a high ResNet layer (a token is one spatial position).
    """
    rate = float(cls_vit.summary["peak_at_own_rate"])
    rows = [finding(
        "Fig 9, D.1", "interior tokens of a CLS ViT's high layer peak at their own patch",
        "share of interior tokens peaking at their own patch (CLS ViT)", rate,
        f">= {MIN_OWN_RATE}", rate >= MIN_OWN_RATE, _describe(cls_vit),
        why_not="the CLS ViT's high-layer tokens no longer single out their own patch")]
    for other, fig, name in ((gap_vit, "Fig 10, D.2", "a GAP ViT"),
                             (resnet, "Fig 10, D.3", "a ResNet")):
        if other is None:
            continue
        gap = rate - float(other.summary["peak_at_own_rate"])
        rows.append(finding(
            fig, f"{name} is much less localized than the CLS ViT",
            f"peak-at-own-patch rate, CLS ViT - {name[2:]}", gap, f">= {MIN_RATE_GAP}",
            gap >= MIN_RATE_GAP, _describe(other),
            why_not=_WHY[fig]))
    return rows
