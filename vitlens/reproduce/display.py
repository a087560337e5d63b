"""Compact, static SVG charts for notebooks: they display anywhere, offline, and stay stable.

:func:`static_charts` registers and enables an Altair renderer that converts each chart to
SVG with vl-convert (no browser, no CDN), without per-mark ARIA labels and with coordinates
cut to two decimals. The SVG is a few times smaller than Altair's own ``"svg"`` renderer
output, and nbval can compare it between runs.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["compact_svg", "static_charts"]

_DECIMALS = re.compile(r"(\d\.\d{2})\d+")


def compact_svg(svg: str) -> str:
    """Cut every decimal number in an SVG text to two decimals (sub-pixel detail)."""
    return _DECIMALS.sub(r"\1", svg)


def _renderer(spec: dict, **metadata: Any) -> dict[str, str]:
    import altair as alt
    from altair.utils.mimebundle import spec_to_mimebundle

    spec = dict(spec)
    spec["config"] = {**spec.get("config", {}), "aria": False}
    bundle = spec_to_mimebundle(spec, format="svg", mode="vega-lite",
                                vega_version=alt.VEGA_VERSION,
                                vegaembed_version=alt.VEGAEMBED_VERSION,
                                vegalite_version=alt.VEGALITE_VERSION, **metadata)
    return {"image/svg+xml": compact_svg(bundle["image/svg+xml"])}


def static_charts() -> None:
    """Show Altair charts as compact static SVG from now on (and lift the 5,000-row limit).

    For interactive charts (tooltips, zoom) use ``alt.renderers.enable("jupyter",
    offline=True)`` instead.
    """
    import altair as alt

    if "vitlens-svg" not in alt.renderers.names():
        alt.renderers.register("vitlens-svg", _renderer)
    alt.renderers.enable("vitlens-svg")
    alt.data_transformers.disable_max_rows()
