"""The details panel of a ``SimilarityExplorer``: the clicked layer pair, read from the matrix."""

from __future__ import annotations

import html

import numpy as np

#: Shown while no cell is selected.
PLACEHOLDER = "<i>Click a cell to see that layer pair.</i>"


def pair_details(matrix: np.ndarray, rows: list[str], cols: list[str], i: int, j: int) -> str:
    """HTML for cell ``(i, j)`` of the (rows, cols) CKA ``matrix`` on screen.

    Names the pair, its value (``pending`` while NaN) and, for each side, the layer of the
    other model closest to it (``n/a`` while its row or column has no value yet).
    """
    m = np.asarray(matrix, dtype=np.float64)
    row, col = m[i], m[:, j]
    best_b = cols[int(np.nanargmax(row))] if np.isfinite(row).any() else "n/a"
    best_a = rows[int(np.nanargmax(col))] if np.isfinite(col).any() else "n/a"
    v = m[i, j]
    val = "pending" if np.isnan(v) else f"{v:.4f}"
    return ("<div style='font-family:sans-serif;font-size:13px;line-height:1.5;padding-left:8px'>"
            f"<b>{html.escape(rows[i])}</b> × <b>{html.escape(cols[j])}</b><br>"
            f"CKA = <b class='vitlens-selected-value'>{val}</b><br>"
            f"closest to {html.escape(rows[i])} in B: {html.escape(best_b)}<br>"
            f"closest to {html.escape(cols[j])} in A: {html.escape(best_a)}</div>")


__all__ = ["PLACEHOLDER", "pair_details"]
