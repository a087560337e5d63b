"""The explicit list of vitlens's result classes, by the name a result file records.

A result file stores its class name (``result_type``). :func:`result_class` finds the class
in :data:`RESULT_TYPES`, importing its module on first use, so reading a CKA matrix does not
import every analysis, and the results package never imports the analyses at import time.
A new result class is added here (and its module named), nowhere else. Subclasses defined
outside vitlens register themselves when their module is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RESULT_TYPES", "register", "result_class"]

#: result_type -> "module:attribute"
RESULT_TYPES: dict[str, str] = {
    "SimilarityResult": "vitlens.results.similarity:SimilarityResult",
    "AttentionDistanceResult": "vitlens.analyses.distance:AttentionDistanceResult",
    "HeadSubsetResult": "vitlens.analyses.head_subsets:HeadSubsetResult",
    "ERFResult": "vitlens.analyses.receptive_field:ERFResult",
    "ResidualResult": "vitlens.analyses.residual:ResidualResult",
    "LocalizationResult": "vitlens.analyses.localization:LocalizationResult",
    "ProbeResult": "vitlens.analyses._probe_result:ProbeResult",
    "BlockCKAResult": "vitlens.analyses.scale:BlockCKAResult",
    "DataScaleResult": "vitlens.analyses.scale:DataScaleResult",
    "FinetuneResult": "vitlens.analyses.finetune:FinetuneResult",
    "MixerComparisonResult": "vitlens.analyses.mixer:MixerComparisonResult",
    "SkipStructureResult": "vitlens.analyses.skip:SkipStructureResult",
}

_EXTRA: dict[str, type] = {}  # classes defined outside vitlens, registered on definition


def register(cls: type) -> None:
    """Record a result class defined outside :data:`RESULT_TYPES` (called on subclassing)."""
    if cls.__name__ not in RESULT_TYPES:
        _EXTRA[cls.__name__] = cls


def result_class(kind: Any) -> type | None:
    """The class of a result file's ``result_type``, or ``None`` when it is unknown."""
    if not isinstance(kind, str):
        return None
    if kind in _EXTRA:
        return _EXTRA[kind]
    where = RESULT_TYPES.get(kind)
    if where is None:
        return None
    module, attr = where.split(":")
    return getattr(importlib.import_module(module), attr)
