"""Which timm attention modules vitlens recomputes, checked against timm's own probabilities.

vitlens recomputes attention from each block's ``qkv`` in a pre-hook, with the position terms
of timm's attention families (BEiT's relative position bias, vit_relpos's position module,
EVA's RoPE). The reference here is the tensor timm itself hands to ``attn_drop`` on its
unfused path (``fused_attn = False``), read with a forward hook. Every module vitlens accepts
must match it, and every module whose probabilities are more than a softmax of one logit
matrix per head (talking heads), or of unknown kind with position terms, must be refused by
name.
"""

from __future__ import annotations

import pytest
import timm
import torch

from vitlens.capture.attention import (
    AttentionCapture,
    _project,
    attention_blocks,
    attention_probs,
)
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
    "beit (relative position bias, q/v biases)": ("beit_base_patch16_224",
                                                  dict(embed_dim=64, num_heads=4)),
    "beit (shared relative position bias)": ("beit_base_patch16_224", dict(
        embed_dim=64, num_heads=4, use_rel_pos_bias=False, use_shared_rel_pos_bias=True)),
    "vit_relpos (relative position mlp)": ("vit_relpos_small_patch16_224", {}),
    "vit_relpos (relative position bias, class token)": (
        "vit_relpos_small_patch16_rpn_224", dict(class_token=True, global_pool="token")),
    "eva02 (rope, q/v biases)": ("eva02_tiny_patch14_224", dict(patch_size=8)),
    "eva02 (rope, separate q, k, v projections)": ("eva02_tiny_patch14_224",
                                                   dict(patch_size=8, qkv_fused=False)),
}

REFUSED = {
    "cait (talking heads)": ("cait_xxs24_224", {}, "proj_l, proj_w"),
}


def _make(arch: str, kw: dict) -> torch.nn.Module:
    """A small random-init model whose position terms are large enough to matter (timm
    initialises relative position tables at std 0.02 or zero)."""
    torch.manual_seed(0)
    model = timm.create_model(arch, **{**SMALL, **kw}).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position" in name or "rel_pos" in name:
                p.normal_(0, 1.0)
    return model


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
    model = _make(arch, kw)
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


def test_position_terms_are_what_the_recomputation_needs():
    """Neither acceptance nor refusal is over-cautious: softmax(q k^T) without the position
    terms (BEiT's shared bias and EVA's RoPE, which arrive with the call; vit_relpos's own
    module) is not what timm computes, nor is it for CaiT's talking heads."""
    cases = {"beit (shared relative position bias)": "shared_rel_pos_bias",
             "eva02 (rope, q/v biases)": "rope", "vit_relpos (relative position mlp)": None}
    for label, passed in cases.items():
        model = _make(*ACCEPTED[label])
        x = torch.randn(2, 3, 32, 32)
        reference = _timm_probs(model, x)
        seen = {}

        def plain(m, args, kwargs, seen=seen, passed=passed, label=label):
            q, k, _ = _project(m, args[0])  # the module's own q and k, no position terms
            seen["bare"] = ((q * m.scale) @ k.transpose(-2, -1)).softmax(-1)
            if passed is not None:
                assert kwargs.get(passed) is not None, (label, passed)
                seen["without"] = attention_probs(m, args[0])[0]
        hook = model.blocks[0].attn.register_forward_pre_hook(plain, with_kwargs=True)
        with torch.no_grad():
            model(x)
        hook.remove()
        assert (seen["bare"] - reference[0]).abs().max() > 1e-3, label
        if passed is not None:  # dropping what the block passed changes the probabilities
            assert (seen["without"] - reference[0]).abs().max() > 1e-3, label
    model = _make(*REFUSED["cait (talking heads)"][:2])
    x = torch.randn(2, 3, 32, 32)
    reference = _timm_probs(model, x)
    seen = {}
    hook = model.blocks[0].attn.register_forward_pre_hook(
        lambda m, args: seen.__setitem__(0, attention_probs(m, args[0])[0]))
    with torch.no_grad():
        model(x)
    hook.remove()
    assert (seen[0] - reference[0]).abs().max() > 1e-3


def test_unknown_attention_with_position_terms_or_a_new_forward_is_refused():
    from timm.models.vision_transformer import Attention

    class Tweaked(Attention):
        def forward(self, x, attn_mask=None, is_causal=False):
            return super().forward(x, attn_mask) * 2

    class Homemade(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = torch.nn.Linear(8, 24), torch.nn.Linear(8, 8)
            self.num_heads, self.scale = 2, 0.5
            self.relative_position_bias_table = torch.nn.Parameter(torch.zeros(9, 2))

    model = timm.create_model("vit_tiny_patch16_224", **SMALL).eval()
    for attn, why in ((Tweaked(192, num_heads=3), "overrides timm Attention's forward"),
                      (Homemade(), "relative_position_bias_table")):
        model.blocks[1].attn = attn
        with pytest.raises(NotApplicableError, match="blocks\\[1\\]") as err:
            attention_blocks(model)
        assert why in str(err.value)


@pytest.mark.parametrize("label", ["beit (relative position bias, q/v biases)",
                                   "eva02 (rope, q/v biases)",
                                   "vit_relpos (relative position mlp)"])
def test_attention_distance_of_position_term_vits_by_hand(label):
    """The whole path (catalog grid, prefix tokens, capture) against a float64 distance
    computed by hand from timm's own probabilities: 4x4 patches of 8 px."""
    import numpy as np

    from vitlens.analyses import attention_distance
    from vitlens.models import layer_catalog

    model = _make(*ACCEPTED[label])
    x = torch.randn(6, 3, 32, 32)
    reference = _timm_probs(model, x)
    npt = int(model.num_prefix_tokens)
    assert layer_catalog(model).grid_size == (4, 4) and npt == (0 if "relpos" in label else 1)
    centres = np.array([(8 * r + 4, 8 * c + 4) for r in range(4) for c in range(4)], float)
    d = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))  # (16, 16) px
    by_hand = np.stack([
        (reference[b].double().numpy()[:, :, npt:, npt:] * d).sum(-1).mean(axis=(0, 2))
        for b in range(2)])  # (blocks, heads): mean over images and spatial queries
    got = attention_distance(model, x, n_images=6, batch_size=4, progress=False)
    np.testing.assert_allclose(np.asarray(got.distance), by_hand, rtol=0, atol=1e-4)
