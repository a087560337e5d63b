"""Verdicts for dataset scale and fine-tuning: Fig 12, App. G (notebook 07).

Thresholds, fixed before any result was seen:

Both Fig 12 rows read the per-block CKA averaged over training seeds (``DataScaleResult.cka``:
each seed's fractions against that seed's full-data model).

- Fig 12 low vs high: for the model with the least data (the first row), mean per-block CKA
  with the full-data model over the lower half of the blocks minus the upper half at least
  :data:`MIN_LOW_HIGH_GAP`.
- Fig 12 data helps high layers: the top block's CKA with the full-data model rises by at
  least :data:`MIN_TOP_RISE` from the least to the most data, and strictly with the amount of
  data (Spearman's rho between row order and it at least :data:`MIN_DATA_RHO`, i.e. 1: with
  three fractions a rho of 0.5 still allowed an inversion). The rise carries the margin: the
  order of near-equal values (random-init CKAs differ by about 0.001) is noise. Judged only
  over at least :data:`MIN_SCALE_SEEDS` training seeds: with one seed per fraction the order
  was decided by the seed (docs/ZOO.md 3i: seed 0's 60% model fell below its 30% one, seed 1's
  rose strictly).
- App. G preserved: mean CKA (before vs after fine-tuning) over the lowest third of the
  blocks, for the fine-tune on the near domain (the paper's App. G model is fine-tuned on
  natural images, ImageNet after JFT), on that domain's images, at least
  :data:`MIN_PRESERVED_CKA`; the distant fine-tune's value is given in the note.
- App. G domains: mean change (1 - CKA) over blocks, the fine-tune on the distant domain
  (measured on its images) minus the fine-tune on the near domain (on its images), above
  :data:`MIN_DOMAIN_CHANGE`.
"""

from __future__ import annotations

import numpy as np

from ._core import Finding, finding, fmt, halves, nanmean, spearman

__all__ = ["MIN_DATA_RHO", "MIN_DOMAIN_CHANGE", "MIN_LOW_HIGH_GAP", "MIN_PRESERVED_CKA",
           "MIN_SCALE_SEEDS", "MIN_TOP_RISE",
           "data_scale_and_finetuning"]

MIN_LOW_HIGH_GAP = 0.05
MIN_DATA_RHO = 1.0
MIN_TOP_RISE = 0.05
MIN_SCALE_SEEDS = 3
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
            least to the most data (e.g. 3%, 10%, 30%, 60%), over at least
            :data:`MIN_SCALE_SEEDS` training seeds for the rise to be judged.
        finetune: :class:`~vitlens.analyses.FinetuneResult` with a row for the fine-tune on a
            near domain and one for the fine-tune on a distant domain, each measured on its
            own domain's images (``finetune_similarity(before, {near: ..., distant: ...},
            images_by_domain)``).
        near, distant: Its row labels (default: the first and the last row).
    """
    rows: list[Finding] = []
    if data_scale is not None:
        cka = np.asarray(data_scale.cka, np.float64)  # (R, B), the mean over training seeds
        per_seed = np.asarray(data_scale.per_seed, np.float64)[:, :, -1]  # (S, R), top block
        n_seeds = per_seed.shape[0]
        lo, hi = halves(cka.shape[1])
        least = cka[0]
        gap = nanmean(least[lo]) - nanmean(least[hi])
        rows.append(finding(
            "Fig 12", "low layers stay similar even at small data scale; high layers do not",
            f"per-block CKA with the full-data ViT ({data_scale.rows[0]} data"
            + (f", mean over {n_seeds} training seeds" if n_seeds > 1 else "")
            + "): lower half - upper half",
            gap, f">= {MIN_LOW_HIGH_GAP}", gap >= MIN_LOW_HIGH_GAP,
            "per block: " + ", ".join(fmt(v, 2) for v in least),
            why_not="at small scale the lower blocks differ from the full-data model as much "
                    "as the upper ones"))
        top = cka[:, -1]
        rho = spearman(np.arange(len(top)), top)
        rise = float(top[-1] - top[0])
        enough = n_seeds >= MIN_SCALE_SEEDS
        seeds_note = "; ".join(
            f"seed {k}: " + ", ".join(fmt(v) for v in row) for k, row in enumerate(per_seed))
        rows.append(finding(
            "Fig 12", "high layers need more data to match the full-data model",
            f"top block's CKA with the full-data ViT, mean over {n_seeds} training seed"
            f"{'s' if n_seeds != 1 else ''}: {data_scale.rows[-1]} data - "
            f"{data_scale.rows[0]}", rise,
            f">= {MIN_TOP_RISE}, with a strict rise (Spearman rho(data, CKA) = {MIN_DATA_RHO:g}), "
            f"over >= {MIN_SCALE_SEEDS} training seeds",
            rise >= MIN_TOP_RISE and rho >= MIN_DATA_RHO - 1e-12 and enough,
            f"Spearman rho {fmt(rho, 2)}; mean "
            + ", ".join(f"{r}: {fmt(v)}" for r, v in zip(data_scale.rows, top, strict=True))
            + (f"; {seeds_note}" if n_seeds > 1 else "")
            + ("" if enough else f"; fewer than {MIN_SCALE_SEEDS} training seeds: not judged"),
            why_not="the top block does not become steadily more similar to the full-data "
                    "model with more data, averaged over the training seeds"))
    if finetune is not None:
        near = near if near is not None else finetune.rows[0]
        distant = distant if distant is not None else finetune.rows[-1]
        dn, dd = _row(finetune, near), _row(finetune, distant)
        k = max(1, len(dd) // 3)
        low, low_d = nanmean(dn[:k]), nanmean(dd[:k])
        rows.append(finding(
            "App. G", "fine-tuning preserves the lower blocks",
            f"mean CKA before vs after fine-tuning, lowest {k} blocks ({near})", low,
            f">= {MIN_PRESERVED_CKA}", low >= MIN_PRESERVED_CKA,
            "per block: " + ", ".join(fmt(v, 2) for v in dn) + f"; {distant} (not the "
            f"verdict's): lowest {k} {fmt(low_d)}, per block "
            + ", ".join(fmt(v, 2) for v in dd),
            why_not="fine-tuning moved even the lowest blocks"))
        change = nanmean(1 - dd) - nanmean(1 - dn)
        rows.append(finding(
            "App. G", "fine-tuning changes representations more on a distant domain",
            f"mean change (1 - CKA) over blocks: {distant} - {near}", change,
            f"> {MIN_DOMAIN_CHANGE}", change > MIN_DOMAIN_CHANGE,
            f"{near} {fmt(nanmean(1 - dn))}, {distant} {fmt(nanmean(1 - dd))}",
            why_not="fine-tuning on the distant domain changed the representations no more "
                    "than fine-tuning on the near one"))
    return rows
