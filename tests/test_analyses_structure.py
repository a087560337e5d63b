"""Skip removal (Fig 8), data scale (Fig 12), fine-tuning (App. G) and MLP-Mixer (App. H)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from hsic_reference import cka1
from tiny_models import make_tiny

from vitlens import SimilarityResult
from vitlens.analyses import (
    DataScaleResult,
    FinetuneResult,
    MixerComparisonResult,
    SkipStructureResult,
    block_split,
    data_scale,
    finetune_similarity,
    mixer_comparison,
    skip_removal_structure,
    split_contrast,
)
from vitlens.results import load_result
from vitlens.zoo.architectures import remove_skips


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, 32, 32))).float()


def _hooked(model, modules, x) -> list[np.ndarray]:
    outs = {}
    hs = [m.register_forward_hook(lambda mod, a, o, k=k: outs.__setitem__(k, o.double().numpy()))
          for k, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return [outs[k] for k in range(len(modules))]


# -- block_split ------------------------------------------------------------------------------
@pytest.mark.parametrize("split", [2, 5, 8])
def test_block_split_finds_a_planted_split(split):
    rng = np.random.default_rng(split)
    L = 10
    m = np.full((L, L), 0.15)
    m[:split, :split] = 0.85
    m[split:, split:] = 0.7
    m = m + rng.uniform(-0.05, 0.05, (L, L))
    np.fill_diagonal(m, 1.0)
    names = [f"l{i}" for i in range(L)]
    assert block_split(m, names) == split
    assert split_contrast(m, split) == pytest.approx(
        np.mean(np.r_[m[:split, :split][~np.eye(split, dtype=bool)],
                      m[split:, split:][~np.eye(L - split, dtype=bool)]])
        - np.mean(np.r_[m[:split, split:].ravel(), m[split:, :split].ravel()]))


def test_uniform_matrix_has_no_contrast():
    m = np.full((8, 8), 0.6)
    np.fill_diagonal(m, 1.0)
    s = block_split(m)
    assert 2 <= s <= 6
    for k in range(1, 8):
        assert abs(split_contrast(m, k)) < 1e-12
    res = skip_removal_structure(SimilarityResult(m, list("abcdefgh"), list("abcdefgh")))
    assert abs(res.contrast) < 1e-12


def test_block_split_errors():
    with pytest.raises(ValueError, match="square"):
        block_split(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="layer names"):
        block_split(np.zeros((4, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="cannot split"):
        block_split(np.eye(3))


def _tiny_vit(depth: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                             depth=depth, embed_dim=32, num_heads=2, num_classes=5).eval()


def test_removed_skip_splits_the_ckas_at_that_block(tmp_path):
    x = _pixels(48)
    model = remove_skips(_tiny_vit(), 2)
    res = skip_removal_structure(model, x, progress=False)
    assert isinstance(res, SkipStructureResult)
    assert res.meta["noskip_block"] == 2
    assert res.meta["split_layer"] == "blocks.2.attn" and res.meta["split_block"] == 2
    intact = skip_removal_structure(_tiny_vit(), x, progress=False)
    assert res.contrast > intact.contrast + 0.2
    # the matrix is the within-model CKA: check two entries against NumPy
    names = res.layers_a
    pe, b3 = _hooked(model, [model.patch_embed, model.blocks[3]], x)
    i, j = names.index("patch_embed"), names.index("blocks.3")
    assert res.matrix[i, j] == pytest.approx(cka1(pe, b3), rel=1e-5, abs=1e-6)
    back = load_result(res.save(tmp_path / "skip"))
    assert type(back) is SkipStructureResult and back.split_index == res.split_index
    np.testing.assert_array_equal(back.matrix, res.matrix)
    assert back.chart().to_dict()["layer"]
    with pytest.raises(ValueError, match="images="):
        skip_removal_structure(model)


# -- data scale and fine-tuning -----------------------------------------------------------------
def test_data_scale_is_per_block_cka_against_the_reference(tmp_path):
    ref, other = _tiny_vit(seed=0), _tiny_vit(seed=1)
    x = _pixels(40)
    res = data_scale({"10%": other, "100%": ref}, ref, x, progress=False)
    assert isinstance(res, DataScaleResult) and res.cka.shape == (2, 4)
    assert res.layers == [f"blocks.{i}" for i in range(4)]
    np.testing.assert_allclose(res.cka[1], 1.0, atol=1e-9)  # the reference against itself
    ro = _hooked(ref, list(ref.blocks), x)
    oo = _hooked(other, list(other.blocks), x)
    want = [cka1(oo[i], ro[i]) for i in range(4)]
    np.testing.assert_allclose(res.cka[0], want, rtol=1e-5, atol=1e-6)
    assert res.arrays["full"].shape == (2, 4, 4)
    assert res.arrays["full"][0, 1, 3] == pytest.approx(cka1(oo[1], ro[3]), rel=1e-5, abs=1e-6)
    back = load_result(res.save(tmp_path / "scale"))
    assert type(back) is DataScaleResult
    np.testing.assert_array_equal(back.cka, res.cka)
    df = res.to_dataframe()
    assert list(df.columns) == ["data", "layer", "block", "cka"] and len(df) == 8
    assert res.chart().to_dict()["mark"]["type"] == "line"
    with pytest.raises(ValueError, match="share an architecture"):
        data_scale({"deep": _tiny_vit(depth=3)}, ref, x, progress=False)
    with pytest.raises(ValueError, match="empty"):
        data_scale({}, ref, x, progress=False)


def test_data_scale_over_training_seeds_pairs_each_seed_with_its_own_reference(tmp_path):
    refs = [_tiny_vit(seed=0), _tiny_vit(seed=1)]
    small = [_tiny_vit(seed=2), _tiny_vit(seed=3)]
    x = _pixels(40)
    res = data_scale({"10%": small, "100%": refs}, refs, x, progress=False)
    assert res.cka.shape == (2, 4) and res.per_seed.shape == (2, 2, 4)
    np.testing.assert_allclose(res.per_seed[:, 1], 1.0, atol=1e-9)  # each ref with itself
    for k in range(2):  # seed k's model against seed k's reference, by hand
        ro = _hooked(refs[k], list(refs[k].blocks), x)
        so = _hooked(small[k], list(small[k].blocks), x)
        np.testing.assert_allclose(res.per_seed[k, 0], [cka1(so[i], ro[i]) for i in range(4)],
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.cka, res.per_seed.mean(0), rtol=0, atol=1e-15)
    assert res.meta["n_seeds"] == 2 and "2 training seeds" in res.meta["reference"]
    back = load_result(res.save(tmp_path / "seeds"))
    np.testing.assert_array_equal(back.per_seed, res.per_seed)
    spec = res.chart().to_dict()
    assert [layer["mark"]["type"] for layer in spec["layer"]] == ["line", "point"]
    with pytest.raises(ValueError, match="training seed"):
        data_scale({"10%": small[:1]}, refs, x, progress=False)


def test_finetune_similarity_per_domain(tmp_path):
    before, after = _tiny_vit(seed=0), _tiny_vit(seed=0)
    with torch.no_grad():  # "fine-tune" only the last block
        for p in after.blocks[3].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    doms = {"d0": _pixels(24, 0), "d1": _pixels(24, 1) * 3}
    res = finetune_similarity(before, after, doms, progress=False)
    assert isinstance(res, FinetuneResult) and res.rows == ["d0", "d1"]
    np.testing.assert_allclose(res.cka[:, :3], 1.0, atol=1e-9)  # untouched blocks
    for r, x in enumerate(doms.values()):
        b3 = _hooked(before, [before.blocks[3]], x)[0]
        a3 = _hooked(after, [after.blocks[3]], x)[0]
        assert res.cka[r, 3] == pytest.approx(cka1(a3, b3), rel=1e-5, abs=1e-6)
    assert res.cka[0, 3] < 0.999
    back = load_result(res.save(tmp_path / "ft"))
    assert type(back) is FinetuneResult and back.meta["rows"] == ["d0", "d1"]
    assert "domain" in res.to_dataframe().columns
    res.chart().to_dict()


def test_finetune_similarity_one_model_per_domain(tmp_path):
    """App. G's comparison: a near fine-tune measured on near images, a distant one on distant
    images; the labels must match the domains'."""
    before, near, distant = _tiny_vit(seed=0), _tiny_vit(seed=0), _tiny_vit(seed=0)
    with torch.no_grad():
        for p in distant.blocks[2].parameters():
            p.add_(torch.randn_like(p) * 0.5)
    doms = {"near": _pixels(24, 0), "distant": _pixels(24, 1) * 3}
    res = finetune_similarity(before, {"distant": distant, "near": near}, doms, progress=False)
    assert res.rows == ["near", "distant"]
    np.testing.assert_allclose(res.cka[0], 1.0, atol=1e-9)  # near: an unchanged copy
    np.testing.assert_allclose(res.cka[1, :2], 1.0, atol=1e-9)
    x = doms["distant"]
    b2 = _hooked(before, [before.blocks[2]], x)[0]
    a2 = _hooked(distant, [distant.blocks[2]], x)[0]
    assert res.cka[1, 2] == pytest.approx(cka1(a2, b2), rel=1e-5, abs=1e-6)
    assert res.cka[1, 2] < 0.999
    assert set(res.meta["after"]) == {"near", "distant"}
    assert load_result(res.save(tmp_path / "ft2")).meta["after"] == res.meta["after"]
    with pytest.raises(ValueError, match="same labels"):
        finetune_similarity(before, {"near": near}, doms, progress=False)


# -- MLP-Mixer ------------------------------------------------------------------------------
def test_mixer_comparison(tmp_path):
    mixer, vit, rn = make_tiny("mixer"), make_tiny("vit"), make_tiny("resnet")
    x = _pixels(32)
    res = mixer_comparison(mixer, vit, rn, x, progress=False)
    assert isinstance(res, MixerComparisonResult)
    assert res.within.matrix.shape == (2, 2)
    np.testing.assert_allclose(np.diag(res.within.matrix), 1.0, atol=1e-9)
    assert res.vs_vit.matrix.shape == (2, 2) and res.vs_resnet.matrix.shape == (2, 4)
    mo = _hooked(mixer, list(mixer.blocks), x)
    vo = _hooked(vit, list(vit.blocks), x)
    ro = _hooked(rn, [rn.layer1[0], rn.layer2[0], rn.layer3[0], rn.layer4[0]], x)
    want_v = np.array([[cka1(m, v) for v in vo] for m in mo])
    want_r = np.array([[cka1(m, r) for r in ro] for m in mo])
    np.testing.assert_allclose(res.vs_vit.matrix, want_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.vs_resnet.matrix, want_r, rtol=1e-5, atol=1e-6)
    s = res.summary
    assert s["best_match_vit"] == pytest.approx(want_v.max(1).mean(), rel=1e-5)
    assert s["best_match_resnet"] == pytest.approx(want_r.max(1).mean(), rel=1e-5)
    assert s["closer_to"] == ("vit" if want_v.max(1).mean() >= want_r.max(1).mean() else "resnet")
    back = load_result(res.save(tmp_path / "mixer"))
    assert type(back) is MixerComparisonResult and back.summary == s
    np.testing.assert_array_equal(back.vs_resnet.matrix, res.vs_resnet.matrix)
    assert set(res.to_dataframe().comparison) == {"within", "vs_vit", "vs_resnet"}
    assert len(res.chart().to_dict()["hconcat"]) == 3
