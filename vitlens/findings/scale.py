"""Verdicts for dataset scale and fine-tuning: Fig 12, App. G (notebook 07).

Thresholds, fixed before any result was seen:

- Fig 12 low vs high: for the model with the least data (the first row), mean per-block CKA
  with the full-data model over the lower half of the blocks minus the upper half at least
  :data:`MIN_LOW_HIGH_GAP`.
- Fig 12 data helps high layers: the top block's CKA with the full-data model rises strictly
  with the amount of data (Spearman's rho between row order and it at least
  :data:`MIN_DATA_RHO`, i.e. 1: with three fractions a rho of 0.5 still allowed an inversion).
- App. G preserved: mean CKA (before vs after fine-tuning) over the lowest third of the
  blocks, on the fine-tuning domain, at least :data:`MIN_PRESERVED_CKA`.
- App. G domains: mean change (1 - CKA) over blocks, distant domain minus near domain,
  above :data:`MIN_DOMAIN_CHANGE`.
"""

from __future__ import annotations

import numpy as np

from ._core import Finding, finding, fmt, halves, nanmean, spearman

__all__ = ["MIN_DATA_RHO", "MIN_DOMAIN_CHANGE", "MIN_LOW_HIGH_GAP", "MIN_PRESERVED_CKA",
           "data_scale_and_finetuning"]

MIN_LOW_HIGH_GAP = 0.05
MIN_DATA_RHO = 1.0
MIN_PRESERVED_CKA = 0.8
MIN_DOMAIN_CHANGE = 0.01


def _row(result, label: str) -> np.ndarray:
    if label not in result.rows:
        msg = f"no row {label!r} in this result; it has rows {result.rows}"
        raise KeyError(msg)
    return np.asarray(result.cka, np.float64)[result.rows.index(label)]


def data_scale_and_finetuning(data_scale=None, finetune=None, *, near: str | None = None,
                              distant: str | None = None) -> list[Finding]:
    """Fig 12 and App. G.

    Args:
        data_scale: :class:`~vitlens.analyses.DataScaleResult` with rows ordered from the
            least to the most data (e.g. 3%, 10%, 30%).
        finetune: :class:`~vitlens.analyses.FinetuneResult` with one row per image domain.
        near, distant: Its row labels for images like the pretraining data and for the
            distant domain the model was fine-tuned on (default: the first and last row).
    """
    rows: list[Finding] = []
    if data_scale is not None:
        cka = np.asarray(data_scale.cka, np.float64)  # (R, B)
        lo, hi = halves(cka.shape[1])
        least = cka[0]
        gap = nanmean(least[lo]) - nanmean(least[hi])
        rows.append(finding(
            "Fig 12", "low layers stay similar even at small data scale; high layers do not",
            f"per-block CKA with the full-data ViT ({data_scale.rows[0]} data): lower half - "
            "upper half", gap, f">= {MIN_LOW_HIGH_GAP}", gap >= MIN_LOW_HIGH_GAP,
            "per block: " + ", ".join(fmt(v, 2) for v in least),
            why_not="at small scale the lower blocks differ from the full-data model as much "
                    "as the upper ones"))
        top = cka[:, -1]
        rho = spearman(np.arange(len(top)), top)
        rows.append(finding(
            "Fig 12", "high layers need more data to match the full-data model",
            "Spearman rho, amount of data vs top block's CKA with the full-data ViT", rho,
            f">= {MIN_DATA_RHO} (a strict rise)", rho >= MIN_DATA_RHO - 1e-12,
            ", ".join(f"{r}: {fmt(v)}" for r, v in zip(data_scale.rows, top, strict=True)),
            why_not="the top block does not become more similar to the full-data model with "
                    "more data"))
    if finetune is not None:
        near = near if near is not None else finetune.rows[0]
        distant = distant if distant is not None else finetune.rows[-1]
        dn, dd = _row(finetune, near), _row(finetune, distant)
        k = max(1, len(dd) // 3)
        low = nanmean(dd[:k])
        rows.append(finding(
            "App. G", "fine-tuning preserves the lower blocks",
            f"mean CKA before vs after fine-tuning, lowest {k} blocks ({distant})", low,
            f">= {MIN_PRESERVED_CKA}", low >= MIN_PRESERVED_CKA,
            "per block: " + ", ".join(fmt(v, 2) for v in dd),
            why_not="fine-tuning moved even the lowest blocks"))
        change = nanmean(1 - dd) - nanmean(1 - dn)
        rows.append(finding(
            "App. G", "fine-tuning changes representations more on a distant domain",
            f"mean change (1 - CKA) over blocks: {distant} - {near}", change,
            f"> {MIN_DOMAIN_CHANGE}", change > MIN_DOMAIN_CHANGE,
            f"{near} {fmt(nanmean(1 - dn))}, {distant} {fmt(nanmean(1 - dd))}",
            why_not="the paper compares fine-tuning on a natural task with fine-tuning on a "
                    "distant one; the zoo has one fine-tuned model (on the distant style), and "
                    "measuring its change on images of each style asks a different question"))
    return rows
