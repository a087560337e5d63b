"""Effective receptive fields against hand computations and plain autograd references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import make_tiny
from torch import nn

from vitlens.analyses import ERFResult, effective_receptive_field
from vitlens.errors import ImageError, NotApplicableError
from vitlens.results import load_result


class OneConv(nn.Module):
    """A single 3x3 convolution with a timm-style feature_info (so it has a catalog)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.feature_info = [dict(module="conv", num_chs=4, reduction=1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize(("h", "w"), [(9, 9), (8, 10)])
def test_single_conv_erf_is_its_3x3_support(h, w):
    torch.manual_seed(0)
    model = OneConv().eval()
    x = torch.randn(5, 3, h, w)
    res = effective_receptive_field(model, x, layers=["conv"], batch_size=2, progress=False)
    assert res.erf.shape == (1, h, w)
    # out[o, cy, cx] = sum_{c,ki,kj} W[o, c, ki, kj] x[c, cy + ki - 1, cx + kj - 1]: the
    # gradient of sum_o out[o, cy, cx] at x[c, cy + ki - 1, cx + kj - 1] is sum_o W[o, c, ki, kj]
    weight = model.conv.weight.detach().double().numpy()
    cy, cx = h // 2, w // 2
    expected = np.zeros((h, w))
    for ki in range(3):
        for kj in range(3):
            total = 0.0
            for c in range(3):
                total += abs(sum(weight[o, c, ki, kj] for o in range(4)))
            expected[cy + ki - 1, cx + kj - 1] = total / 3
    np.testing.assert_allclose(res.erf[0], expected, rtol=1e-5, atol=1e-7)
    support = np.zeros((h, w), dtype=bool)
    support[cy - 1:cy + 2, cx - 1:cx + 2] = True
    assert np.all(res.erf[0][support] > 0) and np.all(res.erf[0][~support] == 0)
    with pytest.raises(NotApplicableError):  # no residual structure to look before
        effective_receptive_field(model, x, layers=["conv"], where="before", progress=False)


def _reference_vit(model, x, block, where):
    """|d centre / d x| by plain autograd, with hooks written here."""
    got = {}
    blk = model.blocks[block]
    h1 = blk.register_forward_pre_hook(lambda _m, a: got.update(inp=a[0]))
    h2 = blk.register_forward_hook(lambda _m, _a, o: got.update(out=o))
    x = x.clone().requires_grad_(True)
    model(x)
    h1.remove()
    h2.remove()
    feat = got["out"] - got["inp"] if where == "before" else got["out"]
    npt = model.num_prefix_tokens
    centre = npt + 2 * 4 + 2  # 4x4 grid: position (2, 2)
    (grad,) = torch.autograd.grad(feat[:, centre].sum(), x)
    return grad.abs().mean(dim=1).mean(dim=0).double().numpy()


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_vit_erf_before_and_after_match_autograd(family, tmp_path):
    model = make_tiny(family)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = effective_receptive_field(model, x, where="both", batch_size=4, progress=False)
    assert isinstance(res, ERFResult)
    assert res.erf.shape == (4, 32, 32)  # the input image's shape
    assert res.layers == ["blocks.0", "blocks.1", "blocks.0", "blocks.1"]
    assert res.where == ["after", "after", "before", "before"]
    for block in (0, 1):
        for where in ("after", "before"):
            np.testing.assert_allclose(res.map(f"blocks.{block}", where),
                                       _reference_vit(model, x, block, where),
                                       rtol=1e-4, atol=1e-9)
    after, before = res.map("blocks.0", "after"), res.map("blocks.0", "before")
    assert not np.allclose(after, before, rtol=0.05)
    # the skip path carries the centre patch itself: after the add it dominates more
    centre = (slice(16, 24), slice(16, 24))
    assert after[centre].sum() / after.sum() > before[centre].sum() / before.sum()
    assert all(p.requires_grad for p in model.parameters())  # parameters restored
    back = load_result(res.save(tmp_path / "erf.npz"))
    assert isinstance(back, ERFResult) and back.where == res.where
    np.testing.assert_array_equal(back.erf, res.erf)
    df = res.to_dataframe()
    assert len(df) == 4 * 32 * 32 and df["normalized"].max() == pytest.approx(1.0)
    res.chart().to_dict()


def test_resnet_erf_is_local_and_merges(tmp_path):
    model = make_tiny("resnet")
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    res = effective_receptive_field(model, x, layers=["layer1.0"], where="both",
                                    batch_size=3, progress=False)
    after = res.map("layer1.0", "after")
    # stem 7x7/2, maxpool 3x3/2 and two 3x3 convs at stride 4: a 27-pixel receptive field
    # around input pixel 4 * 8 = 32 (the centre of the 16x16 map)
    rows, cols = np.nonzero(after)
    assert rows.min() >= 32 - 13 - 3 and rows.max() <= 32 + 13 + 3
    assert cols.min() >= 32 - 13 - 3 and cols.max() <= 32 + 13 + 3
    assert after[32, 32] > 0
    # before the add = the branch's last BN output (read here with a hook, cloned)
    got = {}
    handle = model.layer1[0].bn2.register_forward_hook(lambda _m, _a, o: got.update(f=o.clone()))
    xr = x.clone().requires_grad_(True)
    model(xr)
    handle.remove()
    (grad,) = torch.autograd.grad(got["f"][:, :, 8, 8].sum(), xr)
    before = res.map("layer1.0", "before")
    np.testing.assert_allclose(before, grad.abs().mean(1).mean(0).double().numpy(), rtol=1e-4,
                               atol=1e-10)
    assert not np.allclose(before, after)
    # a chart of more than Altair's 5,000 rows renders with Altair's default settings
    import altair as alt

    from vitlens.figures import save_chart

    with pytest.raises(alt.MaxRowsError):  # the same data as a DataFrame is refused
        alt.Chart(res.to_dataframe(max_side=64)).mark_rect().to_dict()
    big = res.chart(max_side=64)  # 2 maps of 64 x 64 = 8,192 cells
    (svg,) = save_chart(big, tmp_path / "erf", formats=("svg",))
    assert svg.read_text().count("<path") >= 2 * 64 * 64
    a = effective_receptive_field(model, x[:2], layers=["layer1.0"], progress=False)
    b = effective_receptive_field(model, x[2:], layers=["layer1.0"], progress=False)
    np.testing.assert_allclose(a.merge(b).erf[0], after, rtol=1e-5, atol=1e-10)


def test_bad_requests():
    model = make_tiny("vit")
    x = torch.randn(4, 3, 32, 32)
    with pytest.raises(ValueError, match="where='before' needs block"):
        effective_receptive_field(model, x, layers=["blocks.0.norm1"], where="before",
                                  progress=False)
    with pytest.raises(ValueError, match="where="):
        effective_receptive_field(model, x, where="inside", progress=False)
    with pytest.raises(ImageError, match="only 4 images"):
        effective_receptive_field(model, x, n_images=8, progress=False)
    with pytest.raises(KeyError, match="unknown layer"):
        effective_receptive_field(model, x, layers=["blocks.9"], progress=False)
    res = effective_receptive_field(model, x, layers=["patch_embed"], progress=False)
    assert res.erf.shape == (1, 32, 32) and res.meta["n_images"] == 4
    # the patch embedding's centre token sees exactly its own 8x8 patch
    nz = np.argwhere(res.erf[0] > 0)
    assert nz.min(axis=0).tolist() == [16, 16] and nz.max(axis=0).tolist() == [23, 23]


def test_block_without_skip_before_is_its_output():
    from vitlens.zoo.architectures import remove_skips

    model = remove_skips(make_tiny("vit"), 1)
    res = effective_receptive_field(model, torch.randn(2, 3, 32, 32), layers=["blocks.1"],
                                    where="both", progress=False)
    np.testing.assert_array_equal(res.map("blocks.1", "before"), res.map("blocks.1", "after"))
