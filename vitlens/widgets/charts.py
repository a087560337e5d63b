"""Line and bar charts whose selection comes back to Python: Altair's ``JupyterChart``.

``JupyterChart`` is switched to offline mode on first use, so its Vega JavaScript comes from
the installed ``vl-convert`` package and never from a CDN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_OFFLINE = False


def jupyter_chart(chart: Any) -> Any:
    """Wrap an Altair chart in an offline ``alt.JupyterChart`` (selections sync to Python)."""
    global _OFFLINE
    import altair as alt

    if not _OFFLINE:
        alt.JupyterChart.enable_offline()
        _OFFLINE = True
    return alt.JupyterChart(chart, debounce_wait=0)


def selected_values(jchart: Any, name: str, field: str) -> list[Any]:
    """The values of ``field`` in point selection ``name`` of a JupyterChart ([] if empty)."""
    sel = getattr(jchart.selections, name, None)
    if sel is None or not sel.value:
        return []
    return [row[field] for row in sel.value if field in row]


def heads_by_distance_chart(distances: Any, *, layer: int = 0, head: int = -1,
                            width: int = 280, height: int = 170):
    """Bars of one block's heads sorted by mean attention distance (Fig 3, one block).

    All blocks are in the data; the params ``layer`` and ``head`` pick the block shown and
    the highlighted head, so moving a slider only sets a param (``jchart.params.layer = 3``)
    and never rebuilds the chart. Clicking a bar selects its head (point selection
    ``head_sel`` on field ``head``).

    Args:
        distances: (L, H) mean attention distance of every head of every block, in pixels.
        layer: The block shown first.
        head: The head highlighted first (-1: none).
    """
    import altair as alt
    import pandas as pd

    d = np.atleast_2d(np.asarray(distances, dtype=np.float64))
    rows = []
    for blk, row in enumerate(d):
        for rank, h in enumerate(np.argsort(row, kind="stable")):
            rows.append((blk, int(h), rank, float(row[h])))
    df = pd.DataFrame(rows, columns=["block", "head", "rank", "distance"])
    p_layer = alt.param(name="layer", value=int(layer))
    p_head = alt.param(name="head", value=int(head))
    sel = alt.selection_point(name="head_sel", fields=["head"], on="click", clear="dblclick")
    return alt.Chart(df).mark_bar().encode(
        # One bar per head, labelled with the head, sorted by distance (most local first).
        x=alt.X("head:N", title="head (most local first)",
                sort=alt.EncodingSortField(field="distance", order="ascending"),
                axis=alt.Axis(labelAngle=0, labelFontSize=11)),
        y=alt.Y("distance:Q", title="mean distance (px)", scale=alt.Scale(domain=[0, float(np.nanmax(d)) or 1.0])),
        color=alt.condition("datum.head == head", alt.value("#ff2d55"), alt.value("#4c78a8")),
        opacity=alt.condition(sel, alt.value(1.0), alt.value(0.6)),
        tooltip=["block:O", "head:O", alt.Tooltip("distance:Q", format=".2f")],
    ).add_params(p_layer, p_head, sel).transform_filter("datum.block == layer").properties(
        width=width, height=height, title="heads sorted by mean attention distance")


def curves_chart(x_labels: Sequence[str], series: dict[str, Sequence[float]], *,
                 x_title: str, y_title: str, title: str = "", current: int | None = None,
                 width: int = 360, height: int = 180, log_y: bool = False):
    """Per-block (or per-layer) curves with a clickable x position.

    Clicking a point selects its x index (point selection ``x_sel`` on field ``index``).

    Args:
        x_labels: Names of the x positions, in order.
        series: ``{name: values}``; NaN values are left out.
        current: An x index to mark with a rule.
    """
    import altair as alt
    import pandas as pd

    rows = [(i, str(x_labels[i]), name, float(v))
            for name, vals in series.items() for i, v in enumerate(vals) if np.isfinite(v)]
    df = pd.DataFrame(rows, columns=["index", "label", "series", "value"])
    sel = alt.selection_point(name="x_sel", fields=["index"], on="click", clear="dblclick")
    x = alt.X("index:Q", title=x_title, axis=alt.Axis(tickMinStep=1))
    y = alt.Y("value:Q", title=y_title, scale=alt.Scale(type="log" if log_y else "linear"))
    base = alt.Chart(df).encode(x=x, y=y, color=alt.Color("series:N", title=None))
    layers = [base.mark_line(opacity=0.6),
              base.mark_circle(size=45).encode(
                  tooltip=["label:N", "series:N", alt.Tooltip("value:Q", format=".4f")],
                  opacity=alt.condition(sel, alt.value(1.0), alt.value(0.5))).add_params(sel)]
    if current is not None:
        rule = pd.DataFrame({"index": [current]})
        layers.append(alt.Chart(rule).mark_rule(color="#ff2d55").encode(x="index:Q"))
    return alt.layer(*layers).properties(width=width, height=height, title=title)


def on_point_select(jchart: Any, name: str, field: str, callback: Any) -> None:
    """Call ``callback(values)`` whenever the browser changes point selection ``name``.

    Observes the chart's synced selection state, so it survives replacing ``jchart.chart``.
    ``values`` are the selected values of ``field`` (``[]`` when cleared).
    """
    def handler(change: dict) -> None:
        raw = (change["new"] or {}).get(name)
        if raw is None:
            return
        signal = raw.get("value") or {}
        points = signal.get("vlPoint", {}).get("or", []) if isinstance(signal, dict) else []
        callback([p[field] for p in points if isinstance(p, dict) and field in p])

    jchart.observe(handler, "_vl_selections")


def browser_select(jchart: Any, name: str, field: str, values: Sequence[Any]) -> None:
    """Set a point selection the way the browser does (for tests and scripted demos)."""
    points = [{field: v} for v in values]
    state = dict(jchart._vl_selections)
    state[name] = {"value": {"vlPoint": {"or": points}} if points else {},
                   "store": [{"unit": "", "fields": [{"field": field, "type": "E"}],
                              "values": [v]} for v in values]}
    jchart._vl_selections = state
