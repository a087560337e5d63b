"""``HeatmapView``: a canvas matrix with labelled axes, a colour scale, hover and click."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as T

from ._base import decode_array, encode_array, esm_source
from ._static import StaticPicture

_HERE = Path(__file__).parent


class HeatmapView(StaticPicture, anywidget.AnyWidget):
    """A matrix drawn on a canvas: rows and columns labelled, colour legend, hover readout.

    Clicking a cell sets :attr:`selected` to ``[row, col]`` (synced back to Python, so
    ``view.observe(callback, "selected")`` reacts to clicks). NaN cells are drawn as
    "pending", so a matrix that fills in batch by batch can be pushed as it grows.

    Args:
        matrix: (rows, cols) values, or ``None`` for an empty view.
        row_labels, col_labels: Names of the rows and columns (default ``0, 1, ...``).
        **kwargs: Any public trait (``title``, ``row_title``, ``vmin``, ...).

    Example:
        >>> view = HeatmapView(result.matrix, row_labels=result.layers_a,
        ...                    col_labels=result.layers_b, value_label="CKA")
    """

    _esm = esm_source("heatmap.js")
    _css = _HERE / "heatmap.css"

    # --- public traits ---
    row_labels = T.List(T.Unicode(), help="names of the rows (top to bottom, or bottom up "
                        "with origin='lower')").tag(sync=True)
    col_labels = T.List(T.Unicode(), help="names of the columns").tag(sync=True)
    title = T.Unicode("").tag(sync=True)
    row_title = T.Unicode("").tag(sync=True)
    col_title = T.Unicode("").tag(sync=True)
    value_label = T.Unicode("value", help="what a cell holds, in the legend and readout").tag(sync=True)
    vmin = T.Float(None, allow_none=True, help="colour scale low end; None: data min").tag(sync=True)
    vmax = T.Float(None, allow_none=True, help="colour scale high end; None: data max").tag(sync=True)
    colormap = T.Enum(("magma", "viridis", "blues", "rdbu"), "magma").tag(sync=True)
    origin = T.Enum(("upper", "lower"), "upper", help="'lower' puts row 0 at the bottom").tag(sync=True)
    size = T.Int(400, help="side of the matrix area in CSS pixels").tag(sync=True)
    selected = T.List(T.Int(), default_value=None, allow_none=True, minlen=2, maxlen=2,
                      help="[row, col] of the clicked cell, or None").tag(sync=True)
    message = T.Unicode("", help="a note drawn over the matrix (status or error)").tag(sync=True)

    # --- internal traits: the matrix as binary ---
    _data = T.Bytes(b"").tag(sync=True)
    _dtype = T.Unicode("float32").tag(sync=True)
    _shape = T.List(T.Int(), default_value=[0, 0]).tag(sync=True)
    _version = T.Int(0).tag(sync=True)

    def __init__(self, matrix: Any = None, *, row_labels: list[str] | None = None,
                 col_labels: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if matrix is not None:
            self.set_matrix(matrix, row_labels, col_labels)

    def set_matrix(self, matrix: Any, row_labels: list[str] | None = None,
                   col_labels: list[str] | None = None) -> None:
        """Send a new (rows, cols) matrix; NaN entries show as not yet computed.

        The selection follows its labels: with the same labels it stays where it is; with
        new labels it moves to the cell with the same row and column labels, and is
        cleared when the new labels have no such cell (or name it twice). A click on
        ``(CLS, blocks.1.mlp)`` never turns into another pair by keeping its index.

        Raises:
            ValueError: the matrix is not 2-D, or the labels do not match its shape.
        """
        arr = np.asarray(matrix, dtype=np.float64)
        if arr.ndim != 2:
            msg = f"HeatmapView needs a 2-D (rows, cols) matrix; got shape {arr.shape}"
            raise ValueError(msg)
        rows = list(row_labels) if row_labels is not None else None
        cols = list(col_labels) if col_labels is not None else None
        if rows is None:
            rows = self.row_labels if len(self.row_labels) == arr.shape[0] else _numbered(arr.shape[0])
        if cols is None:
            cols = self.col_labels if len(self.col_labels) == arr.shape[1] else _numbered(arr.shape[1])
        if (len(rows), len(cols)) != arr.shape:
            msg = (f"{len(rows)} row labels and {len(cols)} column labels do not match the "
                   f"matrix shape {arr.shape}")
            raise ValueError(msg)
        data, dtype, shape = encode_array(arr, "float32")
        rows, cols = [str(r) for r in rows], [str(c) for c in cols]
        sel = self._same_cell(rows, cols)
        with self.hold_sync():
            self.row_labels, self.col_labels = rows, cols
            self._data, self._dtype, self._shape = data, dtype, shape
            if sel != self.selected:  # checked against the new shape
                self.selected = sel
            self._version += 1

    def _same_cell(self, rows: list[str], cols: list[str]) -> list[int] | None:
        """The selected cell's index under new labels: same labels, same cell, else None."""
        if self.selected is None:
            return None
        i, j = self.selected
        old_r, old_c = list(self.row_labels), list(self.col_labels)
        if rows == old_r and cols == old_c:
            return [i, j]
        if i >= len(old_r) or j >= len(old_c):
            return None
        r, c = old_r[i], old_c[j]
        if rows.count(r) != 1 or cols.count(c) != 1:
            return None
        return [rows.index(r), cols.index(c)]

    def clear(self) -> None:
        """Remove the matrix and its labels (an empty view)."""
        with self.hold_sync():
            self.selected = None
            self._data, self._shape = b"", [0, 0]
            self.row_labels, self.col_labels = [], []
            self._version += 1

    @property
    def matrix(self) -> np.ndarray:
        """The matrix as the browser has it (float32 values, NaN where pending)."""
        return decode_array(self._data, self._dtype, self._shape)

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._shape[0]), int(self._shape[1])

    @property
    def selected_labels(self) -> tuple[str, str] | None:
        """``(row label, column label)`` of the selected cell, or ``None``."""
        if self.selected is None:
            return None
        i, j = self.selected
        return self.row_labels[i], self.col_labels[j]

    @property
    def selected_value(self) -> float | None:
        if self.selected is None:
            return None
        i, j = self.selected
        return float(self.matrix[i, j])

    @T.validate("selected")
    def _check_selected(self, proposal: dict) -> list[int] | None:
        sel = proposal["value"]
        if sel is None:
            return None
        i, j = (int(v) for v in sel)
        rows, cols = self.shape
        if not (0 <= i < rows and 0 <= j < cols):
            msg = f"selected cell {[i, j]} is outside the {rows}x{cols} matrix"
            raise T.TraitError(msg)
        return [i, j]

    def _picture(self) -> Any:
        """The matrix with its title, axis titles, some labels and the colour legend."""
        from PIL import Image

        from ._static import _font, canvas, colourize, empty_picture, legend, value_range

        rows, cols = self.shape
        if not rows or not cols:
            return empty_picture(self.message or "no matrix yet", self.size, self.size // 2)
        m = self.matrix.astype(np.float64)
        lo, hi = value_range(m, self.vmin, self.vmax)
        colours = colourize(m[::-1] if self.origin == "lower" else m, lo, hi, self.colormap)
        side = max(120, int(self.size))
        cells = Image.fromarray(colours).resize((side, side), Image.NEAREST)
        left, bottom = 150, 150
        img, draw, y0 = canvas(left + side + 120, side + bottom + 8, self.title)
        img.paste(cells, (left, y0 + 4))
        font = _font(10)
        step_r, step_c = max(1, -(-rows * 12 // side)), max(1, -(-cols * 12 // side))
        for i in range(0, rows, step_r):
            r = rows - 1 - i if self.origin == "lower" else i
            yy = y0 + 4 + (r + 0.5) * side / rows
            draw.text((left - 4, yy), _short(str(self.row_labels[i])), fill=(50, 50, 50),
                      font=font, anchor="rm")
        labels = Image.new("RGB", (bottom - 18, side), (255, 255, 255))
        from PIL import ImageDraw

        ld = ImageDraw.Draw(labels)
        for j in range(0, cols, step_c):
            ld.text((bottom - 20, (j + 0.5) * side / cols), _short(str(self.col_labels[j])),
                    fill=(50, 50, 50), font=font, anchor="rm")
        labels = labels.rotate(90, expand=True)
        img.paste(labels, (left, y0 + side + 6))
        draw.text((left + side // 2 - 40, y0 + side + bottom - 10), self.col_title,
                  fill=(20, 20, 20), font=_font(11))
        if self.row_title:
            strip = Image.new("RGB", (side, 16), (255, 255, 255))
            ImageDraw.Draw(strip).text((side // 2 - 40, 1), self.row_title, fill=(20, 20, 20),
                                       font=_font(11))
            img.paste(strip.rotate(90, expand=True), (left - 146, y0 + 4))
        legend(draw, left + side + 16, y0 + 4, min(200, side - 40), lo, hi, self.colormap,
               self.value_label)
        if self.message:
            draw.text((left + 8, y0 + 10), self.message, fill=(120, 0, 30), font=_font(12))
        return img

    def __repr__(self) -> str:
        rows, cols = self.shape
        return f"HeatmapView({rows}×{cols}, selected={self.selected})"


def _short(label: str, most: int = 22) -> str:
    """A label cut from the front (the end names the layer), marked with an ellipsis."""
    return label if len(label) <= most else "…" + label[-(most - 1):]


def _numbered(n: int) -> list[str]:
    return [str(i) for i in range(n)]
