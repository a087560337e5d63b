"""Capture points of timm MLP-Mixer."""

from __future__ import annotations

from torch import nn

from .catalog import LayerCatalog, LayerPoint, pair


def is_mixer_block(block: nn.Module) -> bool:
    """timm's ``MixerBlock`` with its own forward: ``x + mlp_tokens(norm1(x)^T)^T``, then
    ``+ mlp_channels(norm2(.))`` (ResMLP's ``ResBlock`` and gMLP's ``SpatialGatingBlock``,
    also used by ``MlpMixer``, compute otherwise)."""
    from timm.models.mlp_mixer import MixerBlock

    return isinstance(block, MixerBlock) and type(block).forward is MixerBlock.forward


def mixer_catalog(model: nn.Module) -> LayerCatalog:
    """Stem, then per block: token-mixing output, stream after it, channel MLP hidden, output.

    Blocks that are not :func:`is_mixer_block` (ResMLP, gMLP) get their output only.
    """
    points = [LayerPoint("stem", "embed", "stem", layout="tokens")]
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}"
        if not is_mixer_block(blk):
            points.append(LayerPoint(b, "block", b, block=i))
            continue
        points += [
            LayerPoint(f"{b}.norm1", "norm", f"{b}.norm1", block=i),
            LayerPoint(f"{b}.token_mix", "token_mix", f"{b}.mlp_tokens", layout="tokens_t", block=i),
            LayerPoint(f"{b}.resid_mid", "resid_mid", f"{b}.norm2", hook="input", block=i),
        ]
        if hasattr(blk.mlp_channels, "act"):
            points.append(
                LayerPoint(f"{b}.mlp_hidden", "mlp_hidden", f"{b}.mlp_channels.act", block=i)
            )
        points.append(LayerPoint(b, "block", b, block=i))
    if not isinstance(getattr(model, "norm", None), nn.Identity):
        points.append(LayerPoint("norm", "final_norm", "norm"))
    stem = model.stem
    grid = pair(stem.grid_size) if getattr(stem, "grid_size", None) is not None else None
    patch = pair(stem.patch_size) if getattr(stem, "patch_size", None) is not None else None
    return LayerCatalog("mixer", points, grid_size=grid, patch_size=patch)
