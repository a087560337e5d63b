"""Attention maps of timm ViT-style models and attention rollout.

The maps come from :class:`vitlens.capture.AttentionCapture`, which recomputes each block's
probabilities from its own ``qkv`` in a forward pre-hook (exactly timm's unfused path).

>>> maps = attention_maps(model, x)            # (L, B, H, N, N)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..capture.attention import (
    AttentionCapture,
    Reducer,
    attention_blocks,
    attention_probs,
    resolve_blocks,
)

__all__ = ["AttentionCapture", "Reducer", "attention_blocks", "attention_maps",
           "attention_probs", "attention_rollout", "resolve_blocks"]


def attention_maps(model: nn.Module, x: torch.Tensor, *, blocks: int | Iterable[int] | None = None,
                   as_dict: bool = False) -> torch.Tensor | dict[int, torch.Tensor]:
    """Attention probabilities of every (or the chosen) block for one batch.

    Args:
        model: A ViT-style timm model.
        x: (B, 3, H, W) preprocessed images.
        blocks: Block indices (``None``: all).
        as_dict: Return ``{block: (B, H, N, N)}`` instead of a stacked tensor.

    Returns:
        (L, B, H, N, N) probabilities (rows sum to 1), L the number of chosen blocks, in
        block order; prefix (CLS) tokens come first among the N tokens.

    Raises:
        NotApplicableError: the model has no timm attention blocks.
    """
    with AttentionCapture(model, blocks, stop_early=True) as cap:
        maps = cap.run(x)
    if as_dict:
        return maps
    return torch.stack([maps[b] for b in cap.blocks])


def attention_rollout(maps: torch.Tensor | Iterable[torch.Tensor], *, head_fusion: str = "mean",
                      discard_ratio: float = 0.0) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) through a stack of layers.

    Per layer: fuse the heads (mean, max or min), optionally zero the lowest
    ``discard_ratio`` of each row's entries (never the entry for key 0, the CLS token), add
    the identity for the residual path, renormalise rows to sum to 1; then multiply the
    layers: ``R = A_L @ ... @ A_1``.

    Args:
        maps: (L, B, H, N, N) or (L, H, N, N) probabilities, lowest layer first (or a
            sequence of per-layer tensors).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: Fraction in [0, 1) of the smallest entries dropped per query row.

    Returns:
        (B, N, N) or (N, N): row i is how much output token i draws on each input token.
    """
    if not isinstance(maps, torch.Tensor):
        maps = torch.stack(list(maps))
    if maps.dim() not in (4, 5) or maps.shape[-1] != maps.shape[-2]:
        msg = f"attention_rollout expects (L, [B,] H, N, N) maps; got shape {tuple(maps.shape)}"
        raise ValueError(msg)
    if head_fusion not in ("mean", "max", "min"):
        msg = f"head_fusion={head_fusion!r}; choose 'mean', 'max' or 'min'"
        raise ValueError(msg)
    if not 0.0 <= discard_ratio < 1.0:
        msg = f"discard_ratio={discard_ratio} must be in [0, 1)"
        raise ValueError(msg)
    squeeze = maps.dim() == 4
    if squeeze:
        maps = maps.unsqueeze(1)
    maps = maps.to(torch.float64)
    n = maps.shape[-1]
    eye = torch.eye(n, dtype=maps.dtype, device=maps.device)
    result = eye.expand(maps.shape[1], n, n).clone()
    for layer in maps:  # (B, H, N, N)
        if head_fusion == "mean":
            a = layer.mean(dim=1)
        elif head_fusion == "max":
            a = layer.amax(dim=1)
        else:
            a = layer.amin(dim=1)
        k = int(n * discard_ratio)
        if k > 0:
            low = a[..., 1:].topk(k, dim=-1, largest=False).indices + 1
            a = a.scatter(-1, low, 0.0)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[0] if squeeze else result
