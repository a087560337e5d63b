"""The paper's analyses as library functions (see PAPER.md for the figure numbers).

Each analysis streams over images with a progress bar and returns a labelled
:class:`vitlens.results.Result` with ``to_dataframe()``, ``chart()``, ``save`` and ``load``.
"""

from __future__ import annotations

__all__: list[str] = []

# --- attention, distance, head subsets, receptive fields, residual (owner: analyses A) ---
from .attention import AttentionCapture, attention_maps, attention_rollout  # noqa: E402
from .distance import (  # noqa: E402
    AttentionDistanceResult,
    attention_distance,
    mean_attention_distance,
    patch_distances,
)
from .head_subsets import HeadSubsetResult, head_subset_cka, head_subsets  # noqa: E402
from .locality import AttentionLocalityResult, attention_locality  # noqa: E402
from .receptive_field import ERFResult, effective_receptive_field  # noqa: E402
from .residual import ResidualResult, residual_ratio  # noqa: E402

__all__ += [
    "AttentionCapture",
    "AttentionDistanceResult",
    "AttentionLocalityResult",
    "ERFResult",
    "HeadSubsetResult",
    "ResidualResult",
    "attention_distance",
    "attention_locality",
    "attention_maps",
    "attention_rollout",
    "effective_receptive_field",
    "head_subset_cka",
    "head_subsets",
    "mean_attention_distance",
    "patch_distances",
    "residual_ratio",
]

# --- localization, probes, structure (skip/data scale/fine-tuning/mixer), confidence (owner: analyses B) ---
from .confidence import cka_with_confidence, disjoint_subsets  # noqa: E402
from .localization import LocalizationResult, input_patches, localization  # noqa: E402
from .probes import (  # noqa: E402
    ProbeFeatures,
    ProbeResult,
    linear_probe,
    probe_features,
    probe_from_features,
)
from .structure import (  # noqa: E402
    BlockCKAResult,
    DataScaleResult,
    FinetuneResult,
    MixerComparisonResult,
    SkipStructureResult,
    block_split,
    data_scale,
    finetune_similarity,
    mixer_comparison,
    skip_removal_structure,
    split_contrast,
)

__all__ += [
    "BlockCKAResult",
    "DataScaleResult",
    "FinetuneResult",
    "LocalizationResult",
    "MixerComparisonResult",
    "ProbeFeatures",
    "ProbeResult",
    "SkipStructureResult",
    "block_split",
    "cka_with_confidence",
    "data_scale",
    "disjoint_subsets",
    "finetune_similarity",
    "input_patches",
    "linear_probe",
    "localization",
    "mixer_comparison",
    "probe_features",
    "probe_from_features",
    "skip_removal_structure",
    "split_contrast",
]
