"""Residual sub-blocks of a model: where the stream z and the branch output f(z) are hooked.

A residual sub-block computes ``z + f(z)``. For each one this module adds two capture points
to the model's layer catalog, ``<name>:stream`` (z, the skip path's input to the add) and
``<name>:branch`` (f(z), the branch output right before the add), so that
:class:`vitlens.capture.Capture` can record both in one forward pass.

- ViT (timm ``Block``): per block ``blocks.i.attn`` (z = block input, f = ``ls1`` output, i.e.
  the attention branch after layer scale) and ``blocks.i.mlp`` (z = ``norm2`` input, f =
  ``ls2`` output).
- MLP-Mixer: ``blocks.i.token_mix`` (z = block input, f = ``mlp_tokens`` output) and
  ``blocks.i.channel_mix`` (z = ``norm2`` input, f = ``mlp_channels`` output).
- ResNet / ResNetV2: one per unit; z = the shortcut (the ``downsample`` output, or the unit
  input), f = the last module of the branch before the add (``drop_path``, ``se`` or the
  last norm). Both are cloned, since timm adds them in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import NotApplicableError
from ..models._mixer import is_mixer_block
from ..models._vit import is_prenorm_block
from ..models.catalog import LayerCatalog, LayerPoint


@dataclass(frozen=True)
class SubBlock:
    """One residual sub-block ``z + f(z)``.

    Attributes:
        name: ``"blocks.3.attn"``, ``"blocks.3.mlp"``, ``"layer1.0"``...
        kind: ``"attn"``, ``"mlp"``, ``"token_mix"``, ``"channel_mix"`` or ``"unit"``.
        block: Index of the block or unit.
        block_name: Catalog name of the block or unit output (``"blocks.3"``).
        stream, branch: Names of the added capture points for z and f(z).
        layout: ``"tokens"`` (B, N, C) or ``"nchw"``, after :func:`canonical`.
        skip: False when the block has no skip path (the zoo's ``NoSkipBlock``).
    """

    name: str
    kind: str
    block: int
    block_name: str
    stream: str
    branch: str
    layout: str
    skip: bool = True


def _has_skip(block: nn.Module) -> bool:
    return type(block).__name__ != "NoSkipBlock" and getattr(block, "has_skip", True) is not False


def _vit_sub_blocks(model: nn.Module, npt: int) -> tuple[list[LayerPoint], list[SubBlock]]:
    points, subs = [], []
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}"
        if not is_prenorm_block(blk):
            msg = (f"block {i} is a {type(blk).__name__}, not a pre-norm timm Block (norm1, attn, "
                   "ls1, norm2, mlp, ls2, with Block's own forward), so its residual stream "
                   "and branches are unknown")
            raise NotApplicableError(msg)
        kw = dict(layout="tokens", num_prefix_tokens=npt, block=i, in_all=False)
        skip = _has_skip(blk)
        for kind, z_mod, z_hook, f_mod in (("attn", b, "input", f"{b}.ls1"),
                                           ("mlp", f"{b}.norm2", "input", f"{b}.ls2")):
            name = f"{b}.{kind}"
            points += [LayerPoint(f"{name}:stream", "stream", z_mod, hook=z_hook, **kw),
                       LayerPoint(f"{name}:branch", "branch", f_mod, **kw)]
            subs.append(SubBlock(name, kind, i, b, f"{name}:stream", f"{name}:branch", "tokens",
                                 skip))
    return points, subs


def _mixer_sub_blocks(model: nn.Module) -> tuple[list[LayerPoint], list[SubBlock]]:
    points, subs = [], []
    for i, blk in enumerate(model.blocks):
        b = f"blocks.{i}"
        if not is_mixer_block(blk):
            msg = (f"block {i} is a {type(blk).__name__}, not a timm MixerBlock (norm1, "
                   "mlp_tokens, norm2, mlp_channels, with MixerBlock's own forward), so its "
                   "residual stream and branches are unknown")
            raise NotApplicableError(msg)
        kw = dict(block=i, in_all=False)
        for kind, z_mod, f_mod, f_layout in (("token_mix", b, f"{b}.mlp_tokens", "tokens_t"),
                                             ("channel_mix", f"{b}.norm2", f"{b}.mlp_channels",
                                              "tokens")):
            name = f"{b}.{kind}"
            points += [LayerPoint(f"{name}:stream", "stream", z_mod, hook="input", **kw),
                       LayerPoint(f"{name}:branch", "branch", f_mod, layout=f_layout, **kw)]
            subs.append(SubBlock(name, kind, i, b, f"{name}:stream", f"{name}:branch", "tokens"))
    return points, subs


def _cnn_branch_end(block: nn.Module) -> str:
    for attr in ("drop_path", "se"):
        if isinstance(getattr(block, attr, None), nn.Module):
            return attr
    for attr in ("bn3", "norm3", "conv3", "bn2", "conv2"):
        if isinstance(getattr(block, attr, None), nn.Module):
            return attr
    msg = f"cannot find the end of the residual branch of a {type(block).__name__}"
    raise NotApplicableError(msg)


def _cnn_units(model: nn.Module, family: str) -> list[tuple[str, nn.Module]]:
    if family == "resnet":
        return [(f"layer{s}.{u}", blk) for s in range(1, 5)
                for u, blk in enumerate(getattr(model, f"layer{s}", []))]
    return [(f"stages.{s}.blocks.{u}", blk) for s, stage in enumerate(model.stages)
            for u, blk in enumerate(stage.blocks)]


def _cnn_sub_blocks(model: nn.Module, family: str) -> tuple[list[LayerPoint], list[SubBlock]]:
    points, subs = [], []
    for i, (b, blk) in enumerate(_cnn_units(model, family)):
        kw = dict(layout="nchw", block=i, clone=True, in_all=False)
        if isinstance(getattr(blk, "downsample", None), nn.Module):
            z = LayerPoint(f"{b}:stream", "stream", f"{b}.downsample", **kw)
        else:
            z = LayerPoint(f"{b}:stream", "stream", b, hook="input", **kw)
        f = LayerPoint(f"{b}:branch", "branch", f"{b}.{_cnn_branch_end(blk)}", **kw)
        points += [z, f]
        subs.append(SubBlock(b, "unit", i, b, z.name, f.name, "nchw"))
    return points, subs


def residual_catalog(model: nn.Module,
                     catalog: LayerCatalog | None = None) -> tuple[LayerCatalog, list[SubBlock]]:
    """The model's catalog extended with stream/branch points, and its sub-blocks in order.

    Raises:
        NotApplicableError: the model family has no known residual structure (ConvNeXt
            and timm models without a vitlens catalog).
    """
    from ..models.layers import layer_catalog

    catalog = catalog or layer_catalog(model)
    fam = catalog.family
    if fam == "vit":
        points, subs = _vit_sub_blocks(model, int(getattr(model, "num_prefix_tokens", 1)))
    elif fam == "mixer":
        points, subs = _mixer_sub_blocks(model)
    elif fam in ("resnet", "resnetv2"):
        points, subs = _cnn_sub_blocks(model, fam)
    else:
        msg = (f"residual streams are defined here for ViT, MLP-Mixer, ResNet and ResNetV2; "
               f"{type(model).__name__} (family {fam!r}) is not supported")
        raise NotApplicableError(msg)
    extended = LayerCatalog(fam, catalog.points + points, grid_size=catalog.grid_size,
                            patch_size=catalog.patch_size)
    return extended, subs


def canonical(t: torch.Tensor, point: LayerPoint) -> torch.Tensor:
    """(B, N, C) for token layouts, (B, C, H, W) for conv maps."""
    if point.layout == "tokens_t":
        return t.transpose(1, 2)
    if point.layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    return t
