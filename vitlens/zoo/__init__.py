"""The bundled offline zoo: small timm models trained on :func:`vitlens.datasets.synthetic`.

``names()`` lists the models and ``card(name)`` returns a model's card (architecture,
parameter count, dataset, steps, wall time and measured ``test_accuracy``). Load a model with
``vitlens.load_model("vitlens/vit-cls")`` or :func:`vitlens.zoo.registry.load`. Importing this
package is cheap: torch, timm and the training code load only when needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._specs import SPECS, ZooNameError, canonical, read_card

__all__ = ["ZooNameError", "card", "create", "load", "names", "registry"]


def names() -> list[str]:
    """Names of the zoo models, e.g. ``["vit-cls", "vit-gap", ...]``."""
    return list(SPECS)


def card(name: str) -> dict[str, Any]:
    """The model card of a zoo model (``"vit-cls"`` or ``"vitlens/vit-cls"``).

    Raises:
        ZooNameError: (``KeyError``/``ValueError``) unknown name, with the list and close matches.
        FileNotFoundError: the model has not been trained.
    """
    return read_card(canonical(name))


def __getattr__(attr: str) -> Any:
    if attr == "registry":
        return importlib.import_module(".registry", __name__)
    if attr in ("create", "load"):
        return getattr(importlib.import_module(".registry", __name__), attr)
    msg = f"module {__name__!r} has no attribute {attr!r}"
    raise AttributeError(msg)
