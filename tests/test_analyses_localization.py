"""Spatial localization (Fig 9, 10): per-token CKA maps against raw input patches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hsic_reference import cka1, hsic1
from tiny_models import make_tiny

from vitlens.analyses import LocalizationResult, input_patches, localization
from vitlens.errors import ImageError, NotApplicableError
from vitlens.results import load_result


def _pixels(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, size, size))).float()


def test_input_patches_by_hand():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    p = input_patches(x, (2, 3))  # cells of 2x2 pixels
    assert p.shape == (2, 2, 3, 12)
    # cell (1, 2) of image 1: rows 2..3, cols 4..5 of every channel, channel-major
    want = x[1, :, 2:4, 4:6].reshape(-1)
    assert torch.equal(p[1, 1, 2], want)
    with pytest.raises(ValueError, match="mismatched grids"):
        input_patches(x, (3, 3))


def test_patch_embedding_peaks_at_its_own_patch_and_matches_numpy():
    """patch_embed tokens are a fixed random linear map of their own patch."""
    vit = make_tiny("vit")
    x = _pixels(40)
    res = localization(vit, x, layer="patch_embed", batch_size=64, progress=False)
    assert isinstance(res, LocalizationResult)
    assert res.maps.shape == (16, 4, 4) and res.positions.shape == (16, 2)
    np.testing.assert_array_equal(res.peaks(), res.positions)  # every token, not only interior
    s = res.summary
    assert s["peak_at_own_rate"] == 1.0 and s["n_interior"] == 4
    # a 192 -> 32 random projection of white pixels keeps CKA near sqrt(32 / 192) ~ 0.4
    assert s["own_mean"] > 0.3 and abs(s["other_mean"]) < 0.1
    # independent float64 reference: one batch of 40, tokens from the conv by hand
    with torch.no_grad():
        tok = vit.patch_embed.proj(x).flatten(2).transpose(1, 2).double().numpy()  # (n, 16, C)
    pix = x.double().numpy().reshape(40, 3, 4, 8, 4, 8).transpose(0, 2, 4, 1, 3, 5)
    pix = pix.reshape(40, 16, -1)
    for p in (0, 5, 10):
        want = [cka1(tok[:, p], pix[:, q]) for q in range(16)]
        np.testing.assert_allclose(res.maps[p].ravel(), want, rtol=1e-5, atol=1e-6)


def test_resnet_token_is_all_channels_at_a_location():
    model = make_tiny("resnet")
    x = _pixels(24, seed=1)
    res = localization(model, x, layer="layer1.0", positions=[(3, 4), (0, 0)], progress=False)
    assert res.maps.shape == (2, 8, 8)  # 32 px -> stride 4 -> 8x8 map, 4x4 px input cells
    store = {}
    h = model.layer1[0].register_forward_hook(lambda m, a, o: store.setdefault("y", o.clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    fmap = store["y"].double().numpy()  # (n, C, 8, 8)
    cells = x.double().numpy().reshape(24, 3, 8, 4, 8, 4)
    for k, (i, j) in enumerate([(3, 4), (0, 0)]):
        for qi, qj in [(3, 4), (7, 1), (0, 0)]:
            want = cka1(fmap[:, :, i, j], cells[:, :, qi, :, qj, :].reshape(24, -1))
            assert res.maps[k, qi, qj] == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_summary_by_hand():
    maps = np.zeros((3, 4, 4))
    pos = np.array([[1, 1], [1, 2], [0, 0]])  # two interior tokens, one corner
    maps[0, 1, 1] = 0.9  # token (1,1) peaks at its own patch
    maps[1, 3, 3], maps[1, 1, 2] = 0.8, 0.5  # token (1,2) peaks elsewhere
    maps[2, 0, 0] = 1.0  # the corner peaks at home, but is not interior
    res = LocalizationResult.from_maps(maps, pos, {"model": "m", "layer": "l"})
    s = res.summary
    assert s["n_interior"] == 2
    assert s["peak_at_own_rate"] == 0.5
    assert s["own_mean"] == pytest.approx((0.9 + 0.5) / 2)
    assert s["other_mean"] == pytest.approx((0.0 + 0.8 / 15) / 2)
    assert s["peak_at_own_rate_all"] == pytest.approx(2 / 3)


def test_bad_inputs():
    vit, rn = make_tiny("vit"), make_tiny("resnet")
    with pytest.raises(ValueError, match="mismatched grids"):  # 30 px: an 8x8 map
        localization(rn, _pixels(8, size=30), layer="layer1.0", progress=False)
    with pytest.raises(ValueError, match="outside the 4x4"):
        localization(vit, _pixels(8), layer="blocks.1", positions=[(4, 0)], progress=False)
    with pytest.raises(NotApplicableError, match="1x1 map"):  # 32 px -> 1x1 at layer4
        localization(rn, _pixels(8), layer="layer4.0", progress=False)
    with pytest.raises(ImageError, match="at least 4"):
        localization(vit, _pixels(3), layer="blocks.1", progress=False)
    with pytest.raises(KeyError, match="blocks.1"):
        localization(vit, _pixels(8), layer="blocks.1.atn", progress=False)


def test_roundtrip_dataframe_and_chart(tmp_path):
    vit = make_tiny("vit")
    res = localization(vit, _pixels(12), layer="blocks.1", progress=False)
    back = load_result(res.save(tmp_path / "loc"))
    assert type(back) is LocalizationResult
    np.testing.assert_array_equal(back.maps, res.maps)
    assert back.summary == res.summary and back.grid == (4, 4)
    df = res.to_dataframe()
    assert len(df) == 16 * 16 and df["own"].sum() == 16 and df["interior"].sum() == 4 * 16
    spec = res.chart().to_dict()
    assert "facet" in spec
    with pytest.raises(ValueError, match="not in this result"):
        localization(vit, _pixels(12), layer="blocks.1", positions=[(1, 1)],
                     progress=False).chart(positions=[(2, 2)])


def test_stacked_accumulator_matches_weighted_numpy_minibatch_cka():
    from vitlens.similarity import StackedCKA

    rng = np.random.default_rng(7)
    a = rng.normal(size=(3, 23, 5)) + 100.0  # large offsets: centring must handle them
    b = rng.normal(size=(2, 23, 4))
    b[1] = a[0, :, :4] * 2 + rng.normal(size=(23, 4)) * 0.1  # a related pair
    acc = StackedCKA(["a0", "a1", "a2"], ["b0", "b1"])
    cuts = [(0, 9), (9, 23)]  # uneven batches are weighted by their size
    for s, e in cuts:
        acc.update(torch.from_numpy(a[:, s:e]).float(), torch.from_numpy(b[:, s:e]))
    got = acc.engine().compute().numpy()
    want = np.zeros((3, 2))
    for i in range(3):
        for j in range(2):
            kl = kk = ll = 0.0
            for s, e in cuts:
                X, Y = a[i, s:e] - 100.0, b[j, s:e]
                K, L = X @ X.T, Y @ Y.T
                w = e - s
                kl, kk, ll = kl + w * hsic1(K, L), kk + w * hsic1(K, K), ll + w * hsic1(L, L)
            want[i, j] = kl / np.sqrt(kk * ll)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got[0, 1] > 0.7  # b1 holds 4 of the 5 dimensions of a0
    const = StackedCKA(["c"], ["b0"])
    const.update(torch.ones(1, 8, 3), torch.from_numpy(b[:1, :8]))
    with pytest.warns(RuntimeWarning, match="constant"):
        assert np.isnan(const.engine().compute().numpy()).all()
