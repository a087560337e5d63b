"""Representation structure under interventions: one import for the four analyses.

- :func:`skip_removal_structure` (Fig 8), in :mod:`vitlens.analyses.skip`
- :func:`data_scale` (Fig 12), in :mod:`vitlens.analyses.scale`
- :func:`finetune_similarity` (App. G), in :mod:`vitlens.analyses.finetune`
- :func:`mixer_comparison` (App. H), in :mod:`vitlens.analyses.mixer`
"""

from __future__ import annotations

from .finetune import FinetuneResult, finetune_similarity
from .mixer import MixerComparisonResult, mixer_comparison
from .scale import BlockCKAResult, DataScaleResult, data_scale
from .skip import SkipStructureResult, block_split, skip_removal_structure, split_contrast

__all__ = [
    "BlockCKAResult",
    "DataScaleResult",
    "FinetuneResult",
    "MixerComparisonResult",
    "SkipStructureResult",
    "block_split",
    "data_scale",
    "finetune_similarity",
    "mixer_comparison",
    "skip_removal_structure",
    "split_contrast",
]
