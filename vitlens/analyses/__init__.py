"""The paper's analyses as library functions (see PAPER.md for the figure numbers).

Each analysis streams over images with a progress bar and returns a labelled
:class:`vitlens.results.Result` with ``to_dataframe()``, ``chart()``, ``save`` and ``load``.
"""

from __future__ import annotations

__all__: list[str] = []

# --- attention, distance, head subsets, receptive fields, residual (owner: analyses A) ---

# --- localization, probes, structure (skip/data scale/fine-tuning/mixer), confidence (owner: analyses B) ---
