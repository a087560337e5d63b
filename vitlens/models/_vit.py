"""Capture points of timm VisionTransformer (ViT, DeiT, and subclasses)."""

from __future__ import annotations

from torch import nn

from .catalog import LayerCatalog, LayerPoint, pair


def is_prenorm_block(block: nn.Module) -> bool:
    """A timm ``Block`` with its own forward, ``x + ls1(attn(norm1(x)))`` then
    ``+ ls2(mlp(norm2(.)))``, or the zoo's ``NoSkipBlock`` (the same without the adds):
    the input of ``norm2`` is then the stream after the attention add."""
    from timm.models.vision_transformer import Block

    return (isinstance(block, Block)
            and (type(block).forward is Block.forward or type(block).__name__ == "NoSkipBlock")
            and all(isinstance(getattr(block, a, None), nn.Module)
                    for a in ("norm1", "attn", "ls1", "norm2", "mlp", "ls2")))


def vit_catalog(model: nn.Module) -> LayerCatalog:
    """Patch embedding, then six points per block, then the final norm.

    Per block ``i``: ``norm1``, ``attn`` (attention output, before the add), ``resid_mid``
    (the stream after the attention add: the input of ``norm2``), ``norm2``, ``mlp_hidden``
    (the MLP activation) and the block output. ``mlp`` (the MLP branch output) is also
    listed but is not part of ``"all"``'s paper-density six.

    Blocks of other kinds (timm's ``ResPostBlock``, ``ParallelScalingBlock``,
    ``ParallelThingsBlock``) get the points whose modules they have, and ``resid_mid`` only
    where it is what its name says (:func:`is_prenorm_block`).
    """
    npt = int(getattr(model, "num_prefix_tokens", 1))
    pe = model.patch_embed
    points = [LayerPoint("patch_embed", "embed", "patch_embed", layout="tokens")]
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}"
        kw = dict(layout="tokens", num_prefix_tokens=npt, block=i)
        has = {a for a in ("norm1", "attn", "norm2", "mlp")
               if isinstance(getattr(blk, a, None), nn.Module)}
        for name, kind in (("norm1", "norm"), ("attn", "attn")):
            if name in has:
                points.append(LayerPoint(f"{b}.{name}", kind, f"{b}.{name}", **kw))
        if is_prenorm_block(blk):
            points.append(LayerPoint(f"{b}.resid_mid", "resid_mid", f"{b}.norm2", hook="input",
                                     **kw))
        if "norm2" in has:
            points.append(LayerPoint(f"{b}.norm2", "norm", f"{b}.norm2", **kw))
        if "mlp" in has and isinstance(getattr(blk.mlp, "act", None), nn.Module):
            points.append(LayerPoint(f"{b}.mlp_hidden", "mlp_hidden", f"{b}.mlp.act", **kw))
        if "mlp" in has:
            points.append(LayerPoint(f"{b}.mlp", "mlp", f"{b}.mlp", in_all=False, **kw))
        points.append(LayerPoint(b, "block", b, **kw))
    if not isinstance(getattr(model, "norm", None), nn.Identity):
        points.append(
            LayerPoint("norm", "final_norm", "norm", layout="tokens", num_prefix_tokens=npt)
        )
    grid = pair(pe.grid_size) if getattr(pe, "grid_size", None) is not None else None
    patch = pair(pe.patch_size) if getattr(pe, "patch_size", None) is not None else None
    return LayerCatalog("vit", points, grid_size=grid, patch_size=patch)
