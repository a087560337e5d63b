"""Verdicts for effective receptive fields: Fig 6, C.1-C.4 (notebook 03).

Measures, on each (H, W) ERF map m (mean |gradient|, any scale):

- *extent*: the radius of gyration of m (the RMS distance of the gradient mass from its
  centroid) divided by that of a uniform map over the same pixels: about 0 for a point,
  1 for a map spread evenly over the image.
- *centre concentration*: the mean of m inside the ViT's centre patch (the patch of the
  token whose gradient is taken) over its mean elsewhere.

For comparisons involving the ViT the extent excludes the centre patch (the same pixels for
both models), so the residual-path peak, judged on its own, does not hide how far the field
reaches.

Thresholds, fixed before any result was seen:

- Fig 6 ResNet growth: Spearman's rho between unit index and extent at least
  :data:`MIN_GROWTH_RHO`.
- Fig 6 ViT wider early: extent of ViT block 0 over extent of the first ResNet unit at least
  :data:`MIN_EARLY_RATIO`.
- Fig 6 ViT global midway: extent at the ViT's middle block at least :data:`MIN_GLOBAL_EXTENT`.
- Fig 6/C.4 residual peak: centre concentration after the add over before it (geometric mean
  over blocks) at least :data:`MIN_PEAK_RATIO`.
"""

from __future__ import annotations

import numpy as np

from ._core import Finding, finding, fmt, spearman

__all__ = ["MIN_EARLY_RATIO", "MIN_GLOBAL_EXTENT", "MIN_GROWTH_RHO", "MIN_PEAK_RATIO",
           "centre_box", "centre_concentration", "extent", "receptive_fields"]

MIN_GROWTH_RHO = 0.8
MIN_EARLY_RATIO = 1.0
MIN_GLOBAL_EXTENT = 0.7
MIN_PEAK_RATIO = 2.0


def centre_box(shape: tuple[int, int], patch_size: int) -> np.ndarray:
    """(H, W) bool mask of the patch holding the centre token (grid position (g//2, g//2))."""
    h, w = shape
    mask = np.zeros((h, w), bool)
    r0, c0 = (h // patch_size) // 2 * patch_size, (w // patch_size) // 2 * patch_size
    mask[r0:r0 + patch_size, c0:c0 + patch_size] = True
    return mask


def _gyration(weights: np.ndarray, keep: np.ndarray) -> float:
    h, w = weights.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                         indexing="ij")
    m = np.where(keep, np.abs(np.asarray(weights, np.float64)), 0.0)
    total = m.sum()
    if not total > 0:
        return float("nan")
    cy, cx = (m * yy).sum() / total, (m * xx).sum() / total
    return float(np.sqrt((m * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / total))


def extent(erf_map: np.ndarray, exclude: np.ndarray | None = None) -> float:
    """Radius of gyration of ``erf_map`` over that of a uniform map (pixels in ``exclude``
    are left out of both)."""
    keep = np.ones(erf_map.shape, bool) if exclude is None else ~exclude
    ref = _gyration(np.ones(erf_map.shape), keep)
    return _gyration(erf_map, keep) / ref


def centre_concentration(erf_map: np.ndarray, box: np.ndarray) -> float:
    """Mean of the map inside ``box`` over its mean outside."""
    m = np.abs(np.asarray(erf_map, np.float64))
    out = m[~box].mean()
    return float(m[box].mean() / out) if out > 0 else float("nan")


def _maps(result, where: str) -> list[np.ndarray]:
    return [np.asarray(m) for m, w in zip(result.erf, result.where, strict=True) if w == where]


def receptive_fields(vit_erf, resnet_erf, *, patch_size: int = 8) -> list[Finding]:
    """Fig 6 and C.1-C.4.

    Args:
        vit_erf: :class:`~vitlens.analyses.ERFResult` of the ViT's blocks with
            ``where="both"`` (after and before the residual add).
        resnet_erf: :class:`~vitlens.analyses.ERFResult` of the ResNet's units (``"after"``).
        patch_size: The ViT's patch size in input pixels (8 for the zoo, 16 for ViT-B/16).
    """
    v_after, v_before = _maps(vit_erf, "after"), _maps(vit_erf, "before")
    r_after = _maps(resnet_erf, "after")
    if not v_after or not r_after:
        msg = "both ERF results need maps measured after the add (where='after' or 'both')"
        raise ValueError(msg)
    box = centre_box(v_after[0].shape, patch_size)
    r_ext = [extent(m) for m in r_after]
    rho = spearman(np.arange(len(r_ext)), r_ext)
    rows = [finding(
        "Fig 6, C.1", "ResNet receptive fields are local and grow gradually",
        "Spearman rho, ResNet unit index vs ERF extent", rho, f">= {MIN_GROWTH_RHO}",
        rho >= MIN_GROWTH_RHO,
        f"extent from {fmt(r_ext[0], 2)} (first unit) to {fmt(r_ext[-1], 2)} (last)",
        why_not="the ResNet's ERF extent does not grow steadily with depth")]
    v0, r0 = extent(v_after[0], box), extent(r_after[0], box)
    ratio = v0 / r0 if r0 > 0 else float("nan")
    rows.append(finding(
        "Fig 6, C.2", "ViT receptive fields are wider than ResNet's early on",
        "ERF extent (centre patch excluded), ViT block 0 / first ResNet unit", ratio,
        f">= {MIN_EARLY_RATIO}", ratio >= MIN_EARLY_RATIO,
        f"ViT {fmt(v0, 2)}, ResNet {fmt(r0, 2)}",
        why_not="the ViT's first block reaches no farther than the ResNet's first unit"))
    mid = len(v_after) // 2
    vm = extent(v_after[mid], box)
    rows.append(finding(
        "Fig 6, C.2", "ViT receptive fields become global midway through the network",
        f"ERF extent (centre patch excluded) of ViT block {mid} (1 = uniform)", vm,
        f">= {MIN_GLOBAL_EXTENT}", vm >= MIN_GLOBAL_EXTENT,
        "extent by block: " + ", ".join(fmt(extent(m, box), 2) for m in v_after),
        why_not="the middle block's ERF is still concentrated near the centre"))
    if v_before:
        ca = np.array([centre_concentration(m, box) for m in v_after])
        cb = np.array([centre_concentration(m, box) for m in v_before])
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(ca / cb)
        peak = float(np.exp(np.nanmean(logs))) if np.isfinite(logs).any() else float("nan")
        rows.append(finding(
            "Fig 6, C.4", "ViT ERFs peak strongly at the centre patch through the residual "
            "path; before the add the peak is gone",
            "centre-patch concentration after / before the add (geometric mean over blocks)",
            peak, f">= {MIN_PEAK_RATIO}", peak >= MIN_PEAK_RATIO,
            "after: " + ", ".join(fmt(c, 1) for c in ca) + "; before: "
            + ", ".join(fmt(c, 1) for c in cb),
            why_not="the branch alone concentrates on the centre patch about as much as the "
                    "residual sum"))
    return rows
