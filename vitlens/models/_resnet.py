"""Capture points of timm ResNet and ResNetV2 (BiT, pre-activation)."""

from __future__ import annotations

from torch import nn

from .catalog import LayerCatalog, LayerPoint


def _last_norm(block: nn.Module) -> str | None:
    for name in ("bn3", "bn2"):
        if hasattr(block, name):
            return name
    return None


def resnet_catalog(model: nn.Module) -> LayerCatalog:
    """Stem, then per unit: its hidden activations, the branch before the add, the unit output.

    The branch (the last BatchNorm's output) is cloned in the hook, because timm adds the
    shortcut into it in place. Stage outputs are listed as aliases of their last unit.
    """
    points = [LayerPoint("stem", "stem", "maxpool" if hasattr(model, "maxpool") else "act1",
                         layout="nchw")]
    unit = 0
    for s in range(1, 5):
        stage_name = f"layer{s}"
        stage = getattr(model, stage_name, None)
        if stage is None:
            continue
        for u, block in enumerate(stage):
            b = f"{stage_name}.{u}"
            for act in ("act1", "act2"):
                if hasattr(block, act) and (act != "act2" or hasattr(block, "bn3")):
                    points.append(LayerPoint(f"{b}.{act}", "unit_hidden", f"{b}.{act}",
                                             layout="nchw", block=unit))
            norm = _last_norm(block)
            if norm is not None:
                points.append(LayerPoint(f"{b}.branch", "branch", f"{b}.{norm}", layout="nchw",
                                         block=unit, clone=True))
            points.append(LayerPoint(b, "unit", b, layout="nchw", block=unit))
            unit += 1
        points.append(LayerPoint(stage_name, "stage", stage_name, layout="nchw", in_all=False))
    return LayerCatalog("resnet", points)


def resnetv2_catalog(model: nn.Module) -> LayerCatalog:
    """Stem, then per pre-activation unit: its pre-activated input, branch, output; final norm."""
    points = [LayerPoint("stem", "stem", "stem", layout="nchw")]
    unit = 0
    for s, stage in enumerate(model.stages):
        for u, block in enumerate(stage.blocks):
            b = f"stages.{s}.blocks.{u}"
            points.append(LayerPoint(f"{b}.preact", "norm", f"{b}.norm1", layout="nchw",
                                     block=unit))
            last_conv = "conv3" if hasattr(block, "conv3") else "conv2"
            points.append(LayerPoint(f"{b}.branch", "branch", f"{b}.{last_conv}", layout="nchw",
                                     block=unit, clone=True))
            points.append(LayerPoint(b, "unit", b, layout="nchw", block=unit))
            unit += 1
        points.append(LayerPoint(f"stages.{s}", "stage", f"stages.{s}", layout="nchw",
                                 in_all=False))
    if not isinstance(getattr(model, "norm", None), nn.Identity):
        points.append(LayerPoint("norm", "final_norm", "norm", layout="nchw"))
    return LayerCatalog("resnetv2", points)
