"""What an ``AttentionExplorer`` shows for one image: maps, rollout and mean distances.

:func:`compute_attention` runs a model on one preprocessed image; :func:`maps_data` builds
the same dictionary from maps computed elsewhere (``AttentionExplorer.from_maps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn


def compute_attention(model: nn.Module, x: Any) -> dict[str, np.ndarray]:
    """Everything the explorer shows for one preprocessed image (1, 3, H, W).

    Returns:
        ``maps`` (L, H, N, N) attention probabilities, ``rollout`` (L, N, N) rollout through
        blocks 0..l, ``distance`` (L, H) mean attention distance in pixels (this image),
        ``grid``, ``patch_size`` and ``num_prefix_tokens``.
    """
    import torch

    from ..analyses.attention import attention_maps, attention_rollout
    from ..analyses.distance import mean_attention_distance
    from ..models.layers import layer_catalog

    cat = layer_catalog(model)
    npt = int(getattr(model, "num_prefix_tokens", 0))
    dev = next(model.parameters()).device
    with torch.no_grad():
        maps = attention_maps(model, x.to(dev))[:, 0].double()  # (L, H, N, N)
        # Rollout through blocks 0..l for every l: one running product.
        eye = torch.eye(maps.shape[-1], dtype=maps.dtype, device=maps.device)
        rolls, acc = [], eye
        for layer in maps:
            acc = attention_rollout(layer[None]) @ acc
            rolls.append(acc)
        dist = torch.stack([mean_attention_distance(m[None], cat.grid_size, cat.patch_size, npt)
                            for m in maps])
    return {"maps": maps.float().cpu().numpy(), "rollout": torch.stack(rolls).float().cpu().numpy(),
            "distance": dist.cpu().numpy(), "grid": tuple(cat.grid_size),
            "patch_size": tuple(cat.patch_size), "num_prefix_tokens": npt}


def maps_data(image: Any, maps: Any, *, patch_size: int | tuple[int, int],
              num_prefix_tokens: int = 1) -> dict[str, Any]:
    """The explorer's data for precomputed (L, H, N, N) maps of one (h, w, 3) image.

    Raises:
        ValueError: ``maps`` is not 4-dimensional.
    """
    import torch

    from ..analyses.attention import attention_rollout
    from ..analyses.distance import mean_attention_distance

    m = torch.as_tensor(np.asarray(maps), dtype=torch.float64)
    if m.dim() != 4:
        msg = f"maps must be (L, H, N, N); got shape {tuple(m.shape)}"
        raise ValueError(msg)
    side = int(round((m.shape[-1] - num_prefix_tokens) ** 0.5))
    grid = (side, side)
    rolls = torch.stack([attention_rollout(m[: i + 1]) for i in range(len(m))])
    dist = torch.stack([mean_attention_distance(a[None], grid, patch_size, num_prefix_tokens)
                        for a in m])
    return {"maps": m.float().numpy(), "rollout": rolls.float().numpy(),
            "distance": dist.numpy(), "grid": grid, "num_prefix_tokens": num_prefix_tokens,
            "image": np.asarray(image), "patch_size": patch_size}


__all__ = ["compute_attention", "maps_data"]
