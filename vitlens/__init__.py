"""vitlens: look inside vision models from a notebook.

Correct, fast minibatch CKA and the analyses of Raghu et al. (2021), *Do Vision Transformers
See Like Convolutional Neural Networks?*, for any timm model, with live Jupyter widgets.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .capture import TOKEN_MODES, Capture
from .errors import (
    CaptureError,
    ImageError,
    NotApplicableError,
    VitlensError,
    WeightsUnavailableError,
)
from .models import LayerCatalog, LayerPoint, layer_catalog, load_model

_LAZY = {
    "cka": ("vitlens.api", "cka"),
    "SimilarityResult": ("vitlens.results.similarity", "SimilarityResult"),
    "Result": ("vitlens.results", "Result"),
    "load_result": ("vitlens.results", "load_result"),
}
_SUBMODULES = ("similarity", "datasets", "zoo", "analyses", "widgets", "results", "cli")

__all__ = [
    "TOKEN_MODES",
    "Capture",
    "CaptureError",
    "ImageError",
    "LayerCatalog",
    "LayerPoint",
    "NotApplicableError",
    "Result",
    "SimilarityResult",
    "VitlensError",
    "WeightsUnavailableError",
    "__version__",
    "analyses",
    "cka",
    "datasets",
    "layer_catalog",
    "load_model",
    "load_result",
    "similarity",
    "widgets",
    "zoo",
]


def __getattr__(name: str) -> Any:
    # Heavy or optional parts (Altair, widgets, analyses) load on first use.
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"vitlens.{name}")
    msg = f"module 'vitlens' has no attribute {name!r}"
    raise AttributeError(msg)
