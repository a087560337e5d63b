"""Which timm attention modules vitlens recomputes, checked against timm's own probabilities.

vitlens recomputes attention from each block's ``qkv`` in a pre-hook. That is right only
for timm's plain ``Attention``; the reference here is the tensor timm itself hands to
``attn_drop`` on its unfused path (``fused_attn = False``), read with a forward hook. Every
module vitlens accepts must match it, and every module whose probabilities are more than
softmax(q k^T) (talking heads, relative position terms, RoPE) must be refused by name.
"""

from __future__ import annotations

import pytest
import timm
import torch

from vitlens.capture.attention import AttentionCapture, attention_blocks
from vitlens.errors import NotApplicableError

torch.set_num_threads(1)

SMALL = dict(img_size=32, patch_size=8, depth=2, pretrained=False)

ACCEPTED = {
    "vit": ("vit_tiny_patch16_224", {}),
    "vit, registers, no class token": ("vit_tiny_patch16_224",
                                       dict(reg_tokens=3, class_token=False, global_pool="avg")),
    "vit, qk norm and layer scale": ("vit_tiny_patch16_224", dict(qk_norm=True, init_values=0.1)),
    "deit distilled": ("deit_tiny_distilled_patch16_224", {}),
    "siglip (attention pool)": ("vit_base_patch16_siglip_224", dict(embed_dim=64, num_heads=4)),
}

REFUSED = {
    "cait (talking heads)": ("cait_xxs24_224", {}, "proj_l, proj_w"),
    "vit_relpos (relative position module)": ("vit_relpos_small_patch16_224", {}, "rel_pos"),
    "beit (relative position bias)": ("beit_base_patch16_224", dict(embed_dim=64, num_heads=4),
                                      "relative_position_bias_table"),
    "eva02 (rope)": ("eva02_tiny_patch14_224", dict(patch_size=8), "q_bias"),
}


def _timm_probs(model: torch.nn.Module, x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The probabilities timm's own (unfused) forward feeds to each block's attn_drop."""
    got: dict[int, torch.Tensor] = {}
    hooks = []
    for i, blk in enumerate(model.blocks):
        blk.attn.fused_attn = False
        hooks.append(blk.attn.attn_drop.register_forward_hook(
            lambda _m, inp, _out, i=i: got.__setitem__(i, inp[0].detach().clone())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return got


@pytest.mark.parametrize("label", list(ACCEPTED))
def test_accepted_attention_matches_timms_own_probabilities(label):
    arch, kw = ACCEPTED[label]
    torch.manual_seed(0)
    model = timm.create_model(arch, **{**SMALL, **kw}).eval()
    x = torch.randn(2, 3, 32, 32)
    reference = _timm_probs(model, x)
    assert len(attention_blocks(model)) == len(reference) == 2
    with torch.no_grad(), AttentionCapture(model) as cap:
        model(x)
        ours = cap.collect()
    for i, ref in reference.items():
        assert ours[i].shape == ref.shape
        torch.testing.assert_close(ours[i].double(), ref.double(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("label", list(REFUSED))
def test_attention_that_is_not_plain_softmax_qk_is_refused_by_name(label):
    arch, kw, why = REFUSED[label]
    torch.manual_seed(0)
    model = timm.create_model(arch, **{**SMALL, **kw}).eval()
    with pytest.raises(NotApplicableError) as err:
        attention_blocks(model)
    text = str(err.value)
    assert "blocks[0].attn cannot be recomputed" in text and why in text
    # and the analyses say so before reading any image
    from vitlens.analyses import attention_distance

    with pytest.raises(NotApplicableError, match="cannot be recomputed"):
        attention_distance(model, torch.zeros(2, 3, 32, 32), n_images=2, progress=False)


def test_refused_models_really_differ_from_softmax_qk():
    """The refusal is not over-cautious: for CaiT and vit_relpos, softmax(q k^T) from qkv
    (what vitlens computed before it checked) is not what timm computes."""
    from vitlens.capture.attention import attention_probs

    for arch in ("cait_xxs24_224", "vit_relpos_small_patch16_224"):
        torch.manual_seed(0)
        model = timm.create_model(arch, **SMALL).eval()
        x = torch.randn(2, 3, 32, 32)
        reference = _timm_probs(model, x)
        seen: dict[int, torch.Tensor] = {}
        hook = model.blocks[0].attn.register_forward_pre_hook(
            lambda m, args, seen=seen: seen.__setitem__(0, attention_probs(m, args[0])[0]))
        with torch.no_grad():
            model(x)
        hook.remove()
        assert (seen[0] - reference[0]).abs().max() > 1e-3, arch
