"""``layer_catalog(model)``: dispatch to the catalog of the model's family."""

from __future__ import annotations

from torch import nn

from ._convnext import convnext_catalog
from ._mixer import mixer_catalog
from ._resnet import resnet_catalog, resnetv2_catalog
from ._vit import vit_catalog
from .catalog import LayerCatalog, feature_info_points


def _family_builders():
    from timm.models.convnext import ConvNeXt
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.resnet import ResNet
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer

    return (
        (VisionTransformer, vit_catalog),
        (MlpMixer, mixer_catalog),
        (ResNetV2, resnetv2_catalog),
        (ResNet, resnet_catalog),
        (ConvNeXt, convnext_catalog),
    )


def family_of(model: nn.Module) -> str:
    """``"vit"``, ``"mixer"``, ``"resnetv2"``, ``"resnet"``, ``"convnext"`` or ``"other"``."""
    return layer_catalog(model).family


def layer_catalog(model: nn.Module) -> LayerCatalog:
    """The ordered, named capture points of ``model``, each with a kind.

    Supported families get a detailed catalog (ViT/DeiT, ResNet, ResNetV2/BiT, MLP-Mixer,
    ConvNeXt). Any other timm model falls back to its ``feature_info`` stages.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or has no catalog.
    """
    if not isinstance(model, nn.Module):
        msg = f"layer_catalog expects a torch.nn.Module, got {type(model).__name__}"
        raise TypeError(msg)
    for cls, build in _family_builders():
        if isinstance(model, cls):
            catalog = build(model)
            break
    else:
        points = feature_info_points(model)
        if not points:
            msg = (
                f"vitlens has no layer catalog for {type(model).__name__} and it has no timm "
                "feature_info. Supported: VisionTransformer (ViT, DeiT), ResNet, ResNetV2 (BiT), "
                "MlpMixer, ConvNeXt, and timm models with feature_info."
            )
            raise TypeError(msg)
        catalog = LayerCatalog("other", points)
    return catalog
