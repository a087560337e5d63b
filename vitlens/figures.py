"""Write Altair charts to PNG and SVG through vl-convert (no browser, works offline)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The figure formats :func:`save_chart` writes.
FORMATS = ("png", "svg")


def inline_data(df) -> dict[str, Any]:
    """``df`` as Vega-Lite inline values, so a chart of any size renders as it is.

    Altair refuses DataFrames over 5,000 rows when a chart is displayed or saved (its
    ``max_rows`` data transformer); charts built from inline values are not transformed, so
    they need no global setting. Values are sanitised the way Altair does it (NaN to null,
    NumPy scalars to Python numbers).
    """
    import altair as alt

    return alt.utils.data.to_values(df)


def chart_paths(stem: str | os.PathLike, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """The files :func:`save_chart` writes for ``stem``: ``<stem>.<format>`` for each format.

    A suffix of ``stem`` that is a figure format (``"cka.png"``) is replaced; any other is
    part of the name (``"cka_lr0.01"`` gives ``cka_lr0.01.png``, never ``cka_lr0.png``).

    Raises:
        ValueError: a format other than :data:`FORMATS`, or no format.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        msg = f"unsupported figure formats {bad or list(formats)}; use some of {list(FORMATS)}"
        raise ValueError(msg)
    stem = Path(stem)
    if stem.suffix.lower() in {f".{f}" for f in FORMATS}:
        stem = stem.with_suffix("")
    return [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]


def render_chart(chart, formats: tuple[str, ...] = FORMATS, *, scale: float = 2.0
                 ) -> dict[str, bytes]:
    """The bytes of ``chart`` in each format (PNG at ``scale``), rendered by vl-convert.

    Raises:
        ValueError: an unsupported format.
    """
    import vl_convert as vlc

    chart_paths("chart", formats)  # checks the formats
    spec = chart.to_json(format="vega-lite")
    return {fmt: (vlc.vegalite_to_png(spec, scale=scale) if fmt == "png"
                  else vlc.vegalite_to_svg(spec).encode("utf-8")) for fmt in formats}


def save_chart(chart, stem: str | os.PathLike, *, formats: tuple[str, ...] = FORMATS,
               scale: float = 2.0) -> list[Path]:
    """Save ``chart`` as ``<stem>.png`` and ``<stem>.svg``; returns the written paths.

    The names are those of :func:`chart_paths`: ``stem`` keeps any dot in it
    (``"figs/cka_lr0.01"`` writes ``figs/cka_lr0.01.png``), and a ``.png`` or ``.svg``
    suffix is dropped (``"figs/cka.png"`` writes ``figs/cka.png`` and ``figs/cka.svg``).

    Like ``matplotlib``'s ``savefig`` and Altair's ``Chart.save``, this replaces files of
    those names: the caller chose them. Every format is rendered before any file is
    written, and each file is written to a temporary file of its own and moved into place
    (a link at that name is replaced, never written through); a new file gets the
    permissions the umask gives, a replaced one keeps its own. ``vitlens cka --out`` and
    ``vitlens reproduce`` write through :class:`vitlens.outputs.OutputFolder` instead, which
    replaces only files vitlens wrote.

    Raises:
        ValueError: an unsupported format (before anything is written).
    """
    from ._files import write_atomic

    paths = chart_paths(stem, formats)
    data = render_chart(chart, formats, scale=scale)
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for fmt, path in zip(formats, paths, strict=True):
        write_atomic(path, lambda f, b=data[fmt]: f.write(b))
    return paths
