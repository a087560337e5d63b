"""Local attention ratio (vitlens.analyses.attention_locality) against independent float64
references, and the masked-patch pretraining's pieces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from vitlens.analyses import attention_locality
from vitlens.analyses.locality import local_attention_sums, neighbourhood
from vitlens.zoo.pretrain import masked_patch_loss, patchify, random_mask


def _reference_ratio(probs: np.ndarray, grid: int, prefix: int) -> np.ndarray:
    """(H,) by loops: mass on the 3x3 neighbourhood of interior queries over 9/S."""
    b, h = probs.shape[:2]
    s = grid * grid
    out = np.zeros(h)
    count = 0
    for q in range(s):
        r, c = divmod(q, grid)
        if not (0 < r < grid - 1 and 0 < c < grid - 1):
            continue
        count += 1
        row = probs[:, :, prefix + q, prefix:]
        row = row / row.sum(-1, keepdims=True)
        near = [(r + dr) * grid + (c + dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
        out += row[:, :, near].sum(-1).sum(0)
    return out / (count * b) / (9 / s)


def test_local_sums_match_loops_and_uniform_is_one():
    rng = np.random.default_rng(0)
    grid, prefix = 5, 1
    n = prefix + grid * grid
    logits = rng.normal(size=(3, 2, n, n)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    near, interior = neighbourhood(grid)
    sums = local_attention_sums(torch.as_tensor(probs), near, interior, prefix)
    got = sums.numpy() / (3 * int(interior.sum())) / (9 / grid**2)
    assert got == pytest.approx(_reference_ratio(probs, grid, prefix), abs=1e-12)
    uniform = np.full((1, 1, n, n), 1 / n)
    u = local_attention_sums(torch.as_tensor(uniform), near, interior, prefix)
    assert float(u) / int(interior.sum()) / (9 / grid**2) == pytest.approx(1.0, abs=1e-12)
    local = np.zeros((1, 1, n, n))  # every query attends to itself only: S / 9
    local[0, 0, np.arange(n), np.arange(n)] = 1.0
    v = local_attention_sums(torch.as_tensor(local), near, interior, prefix)
    assert float(v) / int(interior.sum()) / (9 / grid**2) == pytest.approx(grid**2 / 9)


def test_neighbourhood_needs_an_interior():
    with pytest.raises(ValueError, match="no interior"):
        neighbourhood(2)


def _vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2.0, num_classes=3).eval()


def test_attention_locality_matches_a_float64_recompute_from_qkv():
    """The streamed analysis (hooks, prefix dropped, rows renormalised) against the zoo log's
    independent recompute of every block in float64."""
    from vitlens.zoo.pretrain import attention_locality as reference

    vit = _vit()
    with torch.no_grad():  # sharpen attention so the ratio is far from 1
        for blk in vit.blocks:
            blk.attn.qkv.weight.mul_(6.0)
    x = torch.randn(6, 3, 32, 32)
    res = attention_locality(vit, x, batch_size=4, progress=False)
    ref = reference(vit, x)["local_ratio"]
    assert res.local_ratio.shape == (2, 2)
    np.testing.assert_allclose(res.local_ratio, ref, rtol=1e-5, atol=1e-6)
    assert not np.allclose(res.local_ratio, 1.0, atol=1e-2)
    merged = attention_locality(vit, x[:2], progress=False).merge(
        attention_locality(vit, x[2:], progress=False))
    np.testing.assert_allclose(merged.local_ratio, res.local_ratio, rtol=1e-10)


def test_attention_locality_refuses_a_resnet():
    from vitlens.errors import NotApplicableError
    from vitlens.zoo import registry

    with pytest.raises(NotApplicableError):
        attention_locality(registry.create("resnet"), torch.zeros(2, 3, 64, 64), progress=False)


def test_patchify_follows_the_patch_embedding_order():
    """A patch embedding whose kernel copies pixels gives patchify's rows (channel last)."""
    vit = _vit()
    proj = vit.patch_embed.proj
    d = 3 * 8 * 8
    conv = torch.nn.Conv2d(3, d, 8, 8, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for k in range(d):  # output k reads pixel (py, px) of channel c, k = (py*8 + px)*3 + c
            py, px, c = k // 24, (k // 3) % 8, k % 3
            conv.weight[k, c, py, px] = 1.0
    x = torch.randn(2, 3, 32, 32)
    embedded = conv(x).flatten(2).transpose(1, 2)  # (B, N, d) in the grid's row-major order
    torch.testing.assert_close(patchify(x, 8), embedded)
    assert proj.stride == (8, 8)


def test_random_mask_and_loss_by_hand():
    gen = torch.Generator().manual_seed(0)
    mask = random_mask(5, 16, 6, gen)
    assert mask.shape == (5, 16) and (mask.sum(1) == 6).all()
    x = torch.randn(2, 3, 16, 16)
    target = patchify(x, 8)
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, unbiased=False, keepdim=True).clamp_min(0.01)
    norm = (target - mean) / var.sqrt()
    m = torch.tensor([[True, False, True, False], [False, False, False, True]])
    pred = torch.zeros_like(norm)
    expected = (norm**2).mean(-1)[m].mean()
    torch.testing.assert_close(masked_patch_loss(pred, x, m, 8), expected)
    assert float(masked_patch_loss(norm, x, m, 8)) == pytest.approx(0.0, abs=1e-12)
