"""Capture points of timm VisionTransformer (ViT, DeiT, and subclasses)."""

from __future__ import annotations

from torch import nn

from .catalog import LayerCatalog, LayerPoint, pair


def vit_catalog(model: nn.Module) -> LayerCatalog:
    """Patch embedding, then six points per block, then the final norm.

    Per block ``i``: ``norm1``, ``attn`` (attention output, before the add), ``resid_mid``
    (the stream after the attention add: the input of ``norm2``), ``norm2``, ``mlp_hidden``
    (the MLP activation) and the block output. ``mlp`` (the MLP branch output) is also
    listed but is not part of ``"all"``'s paper-density six.
    """
    npt = int(getattr(model, "num_prefix_tokens", 1))
    pe = model.patch_embed
    points = [LayerPoint("patch_embed", "embed", "patch_embed", layout="tokens")]
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}"
        kw = dict(layout="tokens", num_prefix_tokens=npt, block=i)
        points += [
            LayerPoint(f"{b}.norm1", "norm", f"{b}.norm1", **kw),
            LayerPoint(f"{b}.attn", "attn", f"{b}.attn", **kw),
            LayerPoint(f"{b}.resid_mid", "resid_mid", f"{b}.norm2", hook="input", **kw),
            LayerPoint(f"{b}.norm2", "norm", f"{b}.norm2", **kw),
        ]
        if hasattr(blk, "mlp") and hasattr(blk.mlp, "act"):
            points.append(LayerPoint(f"{b}.mlp_hidden", "mlp_hidden", f"{b}.mlp.act", **kw))
        points.append(LayerPoint(f"{b}.mlp", "mlp", f"{b}.mlp", in_all=False, **kw))
        points.append(LayerPoint(b, "block", b, **kw))
    if not isinstance(getattr(model, "norm", None), nn.Identity):
        points.append(
            LayerPoint("norm", "final_norm", "norm", layout="tokens", num_prefix_tokens=npt)
        )
    grid = pair(pe.grid_size) if getattr(pe, "grid_size", None) is not None else None
    patch = pair(pe.patch_size) if getattr(pe, "patch_size", None) is not None else None
    return LayerCatalog("vit", points, grid_size=grid, patch_size=patch)
