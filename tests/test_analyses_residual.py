"""Residual stream vs branch: hand-computed ratios and cosines, zeroed branches, CNN units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_models import make_tiny

from vitlens.analyses import ResidualResult, residual_ratio
from vitlens.analyses.residual import token_stats
from vitlens.errors import NotApplicableError
from vitlens.results import load_result


def test_token_stats_by_hand():
    g = np.random.default_rng(0)
    z, f = g.normal(size=(2, 3, 5)), g.normal(size=(2, 3, 5))
    got = token_stats(torch.tensor(z), torch.tensor(f))
    for b in range(2):
        for t in range(3):
            zz, ff = list(z[b, t]), list(f[b, t])
            ss = [a + c for a, c in zip(zz, ff, strict=True)]
            nz = math.sqrt(sum(a * a for a in zz))
            nf = math.sqrt(sum(a * a for a in ff))
            ns = math.sqrt(sum(a * a for a in ss))
            assert got["ratio"][b, t].item() == pytest.approx(nz / nf, rel=1e-12)
            dot_zf = sum(a * c for a, c in zip(zz, ff, strict=True))
            dot_zs = sum(a * c for a, c in zip(zz, ss, strict=True))
            assert got["cos_branch"][b, t].item() == pytest.approx(dot_zf / (nz * nf), rel=1e-12)
            assert got["cos_stream"][b, t].item() == pytest.approx(dot_zs / (nz * ns), rel=1e-12)
    # channels first (a CNN map): the norm runs over axis 1
    zc, fc = torch.tensor(g.normal(size=(1, 4, 2, 2))), torch.tensor(g.normal(size=(1, 4, 2, 2)))
    ratio = token_stats(zc, fc, dim=1)["ratio"]
    assert ratio.shape == (1, 2, 2)
    assert ratio[0, 1, 0].item() == pytest.approx(
        float(np.linalg.norm(zc[0, :, 1, 0]) / np.linalg.norm(fc[0, :, 1, 0])), rel=1e-12)


def _vit_reference(model, x):
    """Stream and branch per sub-block with hooks written here: z = block input / norm2 input,
    f = attention output / MLP output (layer scale is the identity in these models)."""
    out = []
    for blk in model.blocks:
        got = {}
        hs = [blk.register_forward_pre_hook(lambda _m, a, got=got: got.update(z1=a[0])),
              blk.attn.register_forward_hook(lambda _m, _a, o, got=got: got.update(f1=o)),
              blk.norm2.register_forward_pre_hook(lambda _m, a, got=got: got.update(z2=a[0])),
              blk.mlp.register_forward_hook(lambda _m, _a, o, got=got: got.update(f2=o))]
        out.append((got, hs))
    with torch.no_grad():
        model(x)
    pairs = []
    for got, hs in out:
        for h in hs:
            h.remove()
        pairs += [(got["z1"].double(), got["f1"].double()), (got["z2"].double(), got["f2"].double())]
    return pairs


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_vit_ratios_match_hooks_and_prefix_is_separate(family, tmp_path):
    model = make_tiny(family)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    npt = model.num_prefix_tokens
    res = residual_ratio(model, x, batch_size=2, progress=False)
    assert isinstance(res, ResidualResult)
    assert res.sub_blocks == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"]
    for k, (z, f) in enumerate(_vit_reference(model, x)):
        ratio = (z.norm(dim=-1) / f.norm(dim=-1)).mean(dim=0)  # (N,) mean over images
        cos = ((z * f).sum(-1) / (z.norm(dim=-1) * f.norm(dim=-1))).mean(dim=0)
        np.testing.assert_allclose(res.arrays["ratio_tokens"][k], ratio.numpy(), rtol=1e-5)
        np.testing.assert_allclose(res.arrays["cos_branch_tokens"][k], cos.numpy(), rtol=1e-4,
                                   atol=1e-6)
        assert res.ratio[k, 0] == pytest.approx(ratio[:npt].mean().item(), rel=1e-5)
        assert res.ratio[k, 1] == pytest.approx(ratio[npt:].mean().item(), rel=1e-5)
    assert res.value("blocks.1.mlp", "ratio", "prefix") == res.ratio[3, 0]
    back = load_result(res.save(tmp_path / "resid"))
    assert isinstance(back, ResidualResult) and back.sub_blocks == res.sub_blocks
    np.testing.assert_array_equal(back.arrays["ratio_tokens"], res.arrays["ratio_tokens"])
    df = res.to_dataframe()
    assert set(df["group"]) == {"prefix", "spatial"} and len(df) == 8
    a = residual_ratio(model, x[:2], progress=False)
    b = residual_ratio(model, x[2:], progress=False)
    merged = a.merge(b)
    np.testing.assert_allclose(merged.ratio, res.ratio, rtol=1e-6)
    np.testing.assert_allclose(merged.arrays["ratio_tokens"], res.arrays["ratio_tokens"],
                               rtol=1e-6)
    for kind in ("ratio", "cosine", "tokens"):
        res.chart(kind=kind).to_dict()


def test_zeroed_branches_give_infinite_ratio_and_unit_stream_cosine():
    model = make_tiny("vit")
    with torch.no_grad():
        for p in (model.blocks[0].attn.proj.weight, model.blocks[0].attn.proj.bias,
                  model.blocks[1].mlp.fc2.weight, model.blocks[1].mlp.fc2.bias):
            p.zero_()
    res = residual_ratio(model, torch.randn(3, 3, 32, 32), progress=False)
    for k in (0, 3):  # blocks.0.attn and blocks.1.mlp
        assert np.all(np.isinf(res.arrays["ratio_tokens"][k]))
        assert np.all(np.isinf(res.ratio[k]))
        np.testing.assert_allclose(res.cos_stream[k], 1.0, rtol=0, atol=1e-12)
        assert np.all(np.isnan(res.cos_branch[k]))  # the cosine with a zero vector is undefined
    for k in (1, 2):
        assert np.all(np.isfinite(res.ratio[k])) and np.all(res.cos_stream[k] < 1.0)


def test_resnet_units_use_the_shortcut_and_the_branch():
    model = make_tiny("resnet")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    res = residual_ratio(model, x, progress=False)
    assert res.sub_blocks == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert np.all(np.isnan(res.ratio[:, 0]))  # no prefix tokens
    assert "ratio_tokens" not in res.arrays
    # layer2.0 downsamples: z is the downsample output, f the last BN output before the add
    blk, got = model.layer2[0], {}
    hs = [blk.downsample.register_forward_hook(lambda _m, _a, o: got.update(z=o.clone())),
          blk.bn2.register_forward_hook(lambda _m, _a, o: got.update(f=o.clone()))]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    z, f = got["z"].double(), got["f"].double()
    ratio = (z.norm(dim=1) / f.norm(dim=1)).mean().item()  # per position, then the mean
    cos = ((z * (z + f)).sum(1) / (z.norm(dim=1) * (z + f).norm(dim=1))).mean().item()
    assert res.value("layer2.0", "ratio") == pytest.approx(ratio, rel=1e-5)
    assert res.value("layer2.0", "cos_stream") == pytest.approx(cos, rel=1e-5)
    assert res.arrays["count"][1, 1] == 3 * 8 * 8  # images x positions of the 8x8 map
    res.chart().to_dict()


@pytest.mark.parametrize("family", ["resnetv2", "mixer", "vit_gap"])
def test_other_families_run(family):
    res = residual_ratio(make_tiny(family), torch.randn(2, 3, 32, 32), progress=False)
    assert np.all(np.isfinite(res.ratio[:, 1])) and np.all(res.ratio[:, 1] > 0)
    assert np.all(np.abs(res.cos_branch[:, 1]) <= 1.0)


def test_not_applicable_and_bad_images():
    with pytest.raises(NotApplicableError, match="convnext|ConvNeXt"):
        residual_ratio(make_tiny("convnext"), torch.randn(2, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match="n_images"):
        residual_ratio(make_tiny("vit"), torch.randn(2, 3, 32, 32), n_images=0, progress=False)


def test_block_without_skip_is_nan():
    from vitlens.zoo.architectures import remove_skips

    model = remove_skips(make_tiny("vit"), 0)
    res = residual_ratio(model, torch.randn(2, 3, 32, 32), progress=False)
    assert res.meta["skip"] == [False, False, True, True]
    assert np.all(np.isnan(res.ratio[:2])) and np.all(np.isnan(res.arrays["ratio_tokens"][:2]))
    assert np.all(np.isfinite(res.ratio[2:]))
