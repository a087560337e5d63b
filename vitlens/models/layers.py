"""``layer_catalog(model)``: dispatch to the catalog of the model's family."""

from __future__ import annotations

from torch import nn

from ._convnext import convnext_catalog
from ._mixer import mixer_catalog
from ._resnet import resnet_catalog, resnetv2_catalog
from ._vit import vit_catalog
from .catalog import LayerCatalog, LayerPoint, feature_info_points, pair

UNSUPPORTED = (
    "vitlens has no layer catalog for {name} and it has no timm feature_info. Supported "
    "families: VisionTransformer (ViT, DeiT), BEiT, EVA, ViT-RelPos, ResNet, ResNetV2 (BiT), "
    "MlpMixer, ConvNeXt, and timm models with feature_info. Any other nn.Module works with "
    "explicit module names (layers_a=['features.3', 'features.6'], names from "
    "dict(model.named_modules())), and with its input_size/mean/std given "
    "(vitlens.models.with_data_config(model, input_size=(3, 224, 224), mean=..., std=...)) "
    "or read from model.pretrained_cfg, or "
    "with preprocessed (n, C, H, W) tensors as images."
)


def _family_builders():
    from timm.models.beit import Beit
    from timm.models.convnext import ConvNeXt
    from timm.models.eva import Eva
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.resnet import ResNet
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    return (
        (VisionTransformer, vit_catalog),
        # ViTs whose attention adds position terms (docs: vitlens.capture.attention): the
        # same blocks of norm1, attn, norm2 and mlp around a token stream
        (Beit, vit_catalog),
        (Eva, vit_catalog),
        (VisionTransformerRelPos, vit_catalog),
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

    Supported families get a detailed catalog (ViT/DeiT, BEiT, EVA, ViT-RelPos, ResNet,
    ResNetV2/BiT, MLP-Mixer, ConvNeXt). Any other timm model falls back to its
    ``feature_info`` stages.

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
            raise TypeError(UNSUPPORTED.format(name=type(model).__name__))
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        catalog = LayerCatalog("other", points, grid_size=pair(grid) if grid else None)
    return catalog


def _explicit_names(spec: object) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, list | tuple) and all(isinstance(s, str) for s in spec):
        return list(spec)
    return []


def catalog_for(model: nn.Module, layers: object = None) -> LayerCatalog:
    """The catalog that resolves ``layers`` on ``model``.

    A supported family's catalog (see :func:`layer_catalog`). For any other ``nn.Module``,
    explicit module names (``["features.3", "features.6"]``) make a catalog of those
    modules' outputs, each laid out as its tensor's rank says: (n, C, H, W) maps, (n, N, C)
    tokens without prefix tokens, or (n, C) vectors.

    Raises:
        TypeError: an unsupported model without explicit module names (the message says
            how to name them and how to give the input size and normalisation).
        KeyError: a name that is not a module of the model, with close matches.
    """
    try:
        return layer_catalog(model)
    except TypeError:
        names = _explicit_names(layers)
        if not isinstance(model, nn.Module) or not names:
            raise
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        import difflib

        close = list(dict.fromkeys(c for n in missing for c in difflib.get_close_matches(
            n, [m for m in modules if m], n=3, cutoff=0.5)))
        hint = f" Close matches: {close}." if close else ""
        msg = (f"{missing} are not modules of this {type(model).__name__}.{hint} Name "
               "modules as dict(model.named_modules()) does (e.g. 'features.3')")
        raise KeyError(msg)
    points = [LayerPoint(n, "module", n, layout="auto", clone=True) for n in names]
    return LayerCatalog("module", points)
