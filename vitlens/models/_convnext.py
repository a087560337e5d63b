"""Capture points of timm ConvNeXt."""

from __future__ import annotations

from torch import nn

from .catalog import LayerCatalog, LayerPoint


def convnext_catalog(model: nn.Module) -> LayerCatalog:
    """Stem, then per block: its MLP hidden activation and output; stage outputs as aliases."""
    points = [LayerPoint("stem", "stem", "stem", layout="nchw")]
    unit = 0
    for s, stage in enumerate(model.stages):
        for u, block in enumerate(stage.blocks):
            b = f"stages.{s}.blocks.{u}"
            conv_mlp = getattr(block, "use_conv_mlp", False)
            points.append(LayerPoint(f"{b}.mlp_hidden", "mlp_hidden", f"{b}.mlp.act",
                                     layout="nchw" if conv_mlp else "nhwc", block=unit))
            points.append(LayerPoint(b, "block", b, layout="nchw", block=unit))
            unit += 1
        points.append(LayerPoint(f"stages.{s}", "stage", f"stages.{s}", layout="nchw",
                                 in_all=False))
    if not isinstance(getattr(model, "norm_pre", None), nn.Identity):
        points.append(LayerPoint("norm_pre", "final_norm", "norm_pre", layout="nchw"))
    return LayerCatalog("convnext", points)
