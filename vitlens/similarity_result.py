"""Old home of :class:`vitlens.results.SimilarityResult` (kept for existing imports)."""

from __future__ import annotations

from .results.similarity import SimilarityResult

__all__ = ["SimilarityResult"]
