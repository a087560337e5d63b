"""Zoo architectures, built from timm classes so capture code treats them like timm models.

All take 64x64 RGB input and predict 10 classes. ViTs use 8-pixel patches (an 8x8 grid).

ViTs draw their learned absolute position embeddings with a standard deviation of 0.2 instead
of timm's 0.02 (``pos_init_std``; docs/ZOO.md, round 3g): a scale hyperparameter, not a
locality prior, since the embeddings are independent random vectors with no spatial
structure, and every ViT of the zoo, the random-init controls included, starts this way.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from timm.layers import GroupNormAct, StdConv2d
from timm.models.mlp_mixer import MlpMixer
from timm.models.resnetv2 import ResNetV2
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from ._specs import NOSKIP_BLOCK, VIT_DEPTH

__all__ = ["ARCHITECTURES", "NoSkipBlock", "build", "remove_skips"]

IMG_SIZE = 64
NUM_CLASSES = 10
POS_INIT_STD = 0.2  # timm's default is 0.02

# timm class and keyword arguments of each architecture (also written to the model cards).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vit-cls": {
        "timm_class": "VisionTransformer",
        "kwargs": dict(
            img_size=IMG_SIZE, patch_size=8, embed_dim=64, depth=VIT_DEPTH, num_heads=4,
            mlp_ratio=2.0, class_token=True, global_pool="token", num_classes=NUM_CLASSES,
        ),
        "pos_init_std": POS_INIT_STD,
    },
    "vit-gap": {
        "timm_class": "VisionTransformer",
        "kwargs": dict(
            img_size=IMG_SIZE, patch_size=8, embed_dim=64, depth=VIT_DEPTH, num_heads=4,
            mlp_ratio=2.0, class_token=False, global_pool="avg", num_classes=NUM_CLASSES,
        ),
        "pos_init_std": POS_INIT_STD,
    },
    "resnet": {
        "timm_class": "ResNetV2",
        "kwargs": dict(
            layers=[2, 2, 2], channels=[64, 128, 256], stem_chs=32, stem_type="fixed",
            num_classes=NUM_CLASSES, norm_layer="GroupNormAct(num_groups=8)", conv_layer="StdConv2d",
        ),
    },
    "mixer": {
        "timm_class": "MlpMixer",
        "kwargs": dict(
            img_size=IMG_SIZE, patch_size=8, num_blocks=VIT_DEPTH, embed_dim=64,
            mlp_ratio=[0.5, 2.0], num_classes=NUM_CLASSES,
        ),
    },
}  # fmt: skip
# the masked-patch backbone: vit-cls without a classifier (timm's head is an Identity)
ARCHITECTURES["vit-mim"] = {
    "timm_class": "VisionTransformer",
    "kwargs": {**ARCHITECTURES["vit-cls"]["kwargs"], "num_classes": 0},
    "pos_init_std": POS_INIT_STD,
}
ARCHITECTURES["vit-noskip"] = {
    **ARCHITECTURES["vit-cls"],
    "noskip_block": NOSKIP_BLOCK,
}


class NoSkipBlock(Block):
    """A timm ViT ``Block`` with both residual adds removed.

    ``x -> attn(norm1(x)) -> mlp(norm2(.))``: the block's output is its MLP branch alone.
    It keeps ``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp`` and ``ls2``, so hooks and layer
    catalogs see the same modules as in a normal block.
    """

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        x = self.drop_path1(
            self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal))
        )
        x = self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def remove_skips(model: VisionTransformer, index: int) -> VisionTransformer:
    """Turn ``model.blocks[index]`` into a :class:`NoSkipBlock` in place (weights kept)."""
    n = len(model.blocks)
    if not 0 <= index < n:
        msg = f"block index {index} out of range for a ViT with {n} blocks"
        raise IndexError(msg)
    blk = model.blocks[index]
    if type(blk) is not Block:
        msg = f"block {index} is a {type(blk).__name__}, expected a timm Block"
        raise TypeError(msg)
    blk.__class__ = NoSkipBlock
    return model


def build(arch: str) -> nn.Module:
    """A random-init model of a zoo architecture (``"vit-cls"``, ``"vit-gap"``, ``"vit-mim"``,
    ``"resnet"``, ``"mixer"`` or ``"vit-noskip"``)."""
    if arch not in ARCHITECTURES:
        msg = f"unknown zoo architecture {arch!r}; expected one of {list(ARCHITECTURES)}"
        raise KeyError(msg)
    kw = dict(ARCHITECTURES[arch]["kwargs"])
    if arch in ("vit-cls", "vit-gap", "vit-noskip", "vit-mim"):
        model = VisionTransformer(**kw)
        with torch.no_grad():  # after timm's init, so the draws before it are timm's own
            nn.init.trunc_normal_(model.pos_embed, std=ARCHITECTURES[arch]["pos_init_std"])
        if arch == "vit-noskip":
            remove_skips(model, ARCHITECTURES[arch]["noskip_block"])
        return model
    if arch == "resnet":
        kw["norm_layer"] = partial(GroupNormAct, num_groups=8)
        kw["conv_layer"] = StdConv2d
        return ResNetV2(**kw)
    kw["mlp_ratio"] = tuple(kw["mlp_ratio"])
    return MlpMixer(**kw)
