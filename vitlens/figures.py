"""Write Altair charts to PNG and SVG through vl-convert (no browser, works offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def inline_data(df) -> dict[str, Any]:
    """``df`` as Vega-Lite inline values, so a chart of any size renders as it is.

    Altair refuses DataFrames over 5,000 rows when a chart is displayed or saved (its
    ``max_rows`` data transformer); charts built from inline values are not transformed, so
    they need no global setting. Values are sanitised the way Altair does it (NaN to null,
    NumPy scalars to Python numbers).
    """
    import altair as alt

    return alt.utils.data.to_values(df)


def save_chart(chart, stem: str | os.PathLike, *, formats: tuple[str, ...] = ("png", "svg"),
               scale: float = 2.0) -> list[Path]:
    """Save ``chart`` as ``<stem>.png`` and ``<stem>.svg``; returns the written paths."""
    import vl_convert as vlc

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    spec = chart.to_json(format="vega-lite")
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "png":
            path.write_bytes(vlc.vegalite_to_png(spec, scale=scale))
        elif fmt == "svg":
            path.write_text(vlc.vegalite_to_svg(spec))
        else:
            msg = f"unsupported figure format {fmt!r}; use 'png' or 'svg'"
            raise ValueError(msg)
        written.append(path)
    return written
