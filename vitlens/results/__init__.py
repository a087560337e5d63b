"""Labelled results: the base class, the registry of result types, and the CKA matrix.

See :mod:`vitlens.results.base` for the convention every result follows (constructor,
``merge``, ``value``, ``chart(width=, height=)``) and :mod:`vitlens.results.registry` for the
explicit list of result types that :func:`load_result` restores.
"""

from __future__ import annotations

from .base import MAX_RESULT_BYTES, Result, load_result
from .registry import RESULT_TYPES
from .similarity import SimilarityResult

__all__ = ["MAX_RESULT_BYTES", "RESULT_TYPES", "Result", "SimilarityResult", "load_result"]
