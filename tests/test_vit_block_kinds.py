"""timm ViTs whose blocks are not the plain pre-norm ``Block``: the catalog lists only points
that exist and mean what their names say, and the residual analyses refuse them by name.

Before, every block got ``norm1``/``attn``/``resid_mid``/``norm2`` points: ``layers="all"``
crashed with an AttributeError on ``ParallelThingsBlock``, and on a post-norm
``ResPostBlock`` the "stream after the attention add" was really the MLP's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from timm.models.vision_transformer import Block, ResPostBlock

import vitlens
from vitlens.errors import NotApplicableError

torch.set_num_threads(1)
SMALL = dict(pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=4)


class ReorderedBlock(Block):
    """A Block subclass that changes the computation (MLP first): not the pre-norm order."""

    def forward(self, x, attn_mask=None):
        x = x + self.ls2(self.mlp(self.norm2(x)))
        return x + self.ls1(self.attn(self.norm1(x)))


def test_post_norm_blocks_have_no_resid_mid_point():
    model = timm.create_model("vit_tiny_patch16_224", block_fn=ResPostBlock, **SMALL).eval()
    names = vitlens.layer_catalog(model).names
    assert "blocks.0.norm1" in names and "blocks.0.norm2" in names and "blocks.0" in names
    assert not any(n.endswith("resid_mid") for n in names)
    with pytest.raises(NotApplicableError, match="ResPostBlock, not a pre-norm timm Block"):
        vitlens.analyses.residual_ratio(model, torch.randn(4, 3, 32, 32), progress=False)


def test_parallel_blocks_compare_on_the_points_they_have():
    model = timm.create_model("vit_small_patch16_18x2_224", **SMALL).eval()
    names = vitlens.layer_catalog(model).select("all")
    assert names == ["patch_embed", "blocks.0", "blocks.1", "norm"]
    res = vitlens.cka(model, torch.randn(8, 3, 32, 32), layers_a="all", token_mode="mean",
                      progress=False, cache=False)
    assert res.matrix.shape == (4, 4) and np.isfinite(res.matrix).all()


def test_a_block_that_reorders_its_branches_is_refused_by_the_residual_analyses():
    model = timm.create_model("vit_tiny_patch16_224", block_fn=ReorderedBlock, **SMALL).eval()
    assert not any(n.endswith("resid_mid") for n in vitlens.layer_catalog(model).names)
    with pytest.raises(NotApplicableError, match="with Block's own forward"):
        vitlens.analyses.residual_ratio(model, torch.randn(4, 3, 32, 32), progress=False)


def test_plain_and_zoo_no_skip_blocks_keep_every_point():
    plain = timm.create_model("vit_tiny_patch16_224", **SMALL).eval()
    names = vitlens.layer_catalog(plain).names
    assert [n for n in names if n.startswith("blocks.0")] == [
        "blocks.0.norm1", "blocks.0.attn", "blocks.0.resid_mid", "blocks.0.norm2",
        "blocks.0.mlp_hidden", "blocks.0.mlp", "blocks.0"]
    noskip = vitlens.zoo.load("vitlens/vit-noskip-3")
    assert "blocks.3.resid_mid" in vitlens.layer_catalog(noskip).names


def test_resmlp_and_gmlp_are_mixers_with_block_outputs_only():
    from functools import partial

    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock, SpatialGatingBlock

    kw = dict(num_classes=4, img_size=32, patch_size=8, num_blocks=2, embed_dim=32, mlp_ratio=4)
    for model in (MlpMixer(block_layer=partial(ResBlock, init_values=0.1), norm_layer=Affine,
                           **kw),
                  MlpMixer(block_layer=SpatialGatingBlock, mlp_layer=GatedMlp, **kw)):
        model.eval()
        name = type(model.blocks[0]).__name__
        assert vitlens.layer_catalog(model).select("all") == ["stem", "blocks.0", "blocks.1",
                                                              "norm"], name
        res = vitlens.cka(model, torch.randn(8, 3, 32, 32), layers_a="all", token_mode="mean",
                          progress=False, cache=False)
        assert np.isfinite(res.matrix).all(), name
        with pytest.raises(NotApplicableError, match=f"{name}, not a timm MixerBlock"):
            vitlens.analyses.residual_ratio(model, torch.randn(4, 3, 32, 32), progress=False)
