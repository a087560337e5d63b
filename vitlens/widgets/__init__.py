"""Live Jupyter widgets: anywidget views and ipywidgets explorers built on them.

Views (each a Python class beside its own plain-ESM ``.js`` and ``.css``, no CDN import):
:class:`HeatmapView` and :class:`ImageAttentionView`. Line and bar charts whose selections
come back to Python use Altair's ``JupyterChart`` in offline mode (:mod:`.charts`).

Explorers are one line to open, and can start from a precomputed result:

>>> vitlens.widgets.SimilarityExplorer("vitlens/vit-cls", "vitlens/resnet")
>>> vitlens.widgets.AttentionExplorer("vitlens/vit-cls")
"""

from __future__ import annotations

import importlib
from typing import Any

from ._base import decode_array, encode_array
from .heatmap import HeatmapView
from .image_attention import ImageAttentionView

_LAZY = {
    "SimilarityExplorer": ".similarity_explorer",
    "AttentionExplorer": ".attention_explorer",
    "LocalizationExplorer": ".localization_explorer",
    "ResidualExplorer": ".residual_explorer",
}

__all__ = [
    "AttentionExplorer",
    "HeatmapView",
    "ImageAttentionView",
    "LocalizationExplorer",
    "ResidualExplorer",
    "SimilarityExplorer",
    "decode_array",
    "encode_array",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
