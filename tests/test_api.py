"""vitlens.cka end to end on tiny models, against an independent float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hsic_reference import hsic1
from tiny_models import make_tiny, random_images

import vitlens
from vitlens.api import cka_stream
from vitlens.capture import Capture
from vitlens.datasets import balanced_batches
from vitlens.errors import CaptureError, ImageError


def _reference_minibatch_cka(feats_a, feats_b, batches):
    """feats_*: list over layers of (n, d) float64 arrays; batch-size-weighted HSIC means."""
    la, lb = len(feats_a), len(feats_b)
    kl, kk, ll = np.zeros((la, lb)), np.zeros(la), np.zeros(lb)
    for idx in batches:
        idx = list(idx)
        ka = [f[idx] @ f[idx].T for f in feats_a]
        kb = [f[idx] @ f[idx].T for f in feats_b]
        w = len(idx)
        for i in range(la):
            kk[i] += w * hsic1(ka[i], ka[i])
            for j in range(lb):
                kl[i, j] += w * hsic1(ka[i], kb[j])
        for j in range(lb):
            ll[j] += w * hsic1(kb[j], kb[j])
    return kl / np.sqrt(np.outer(kk, ll))


def _features(model, images, layers, token_mode="flatten", batch_size=8):
    """Features captured with the same batching as vitlens.cka (float32 forward passes are
    batch-size dependent in their last bits), concatenated over batches, as float64."""
    from vitlens.datasets import MultiModelBatches, as_images

    src = as_images(images)
    stream = MultiModelBatches(src, [model], balanced_batches(len(src), batch_size))
    with Capture(model, layers, token_mode=token_mode) as cap:
        parts = [cap.run(x) for (x,) in stream]
    return [torch.cat([p[name] for p in parts]).double().numpy() for name in cap.layers]


@pytest.mark.parametrize("token_mode", ["flatten", "mean"])
def test_cross_model_matches_float64_reference(token_mode):
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(22, seed=1)
    res = vitlens.cka(vit, images, cnn, layers_a="all", layers_b="blocks",
                      token_mode=token_mode, batch_size=8, progress=False)
    fa = _features(vit, images, "all", token_mode)
    fb = _features(cnn, images, "blocks", token_mode)
    ref = _reference_minibatch_cka(fa, fb, balanced_batches(22, 8))
    assert res.matrix.shape == ref.shape == (len(fa), len(fb))
    np.testing.assert_allclose(res.matrix, ref, atol=1e-5)  # the engine's accuracy target
    assert res.layers_a == vitlens.layer_catalog(vit).select("all")
    assert res.meta["n_images"] == 22 and res.meta["token_mode"] == token_mode


@pytest.mark.parametrize("family", ["vit", "resnet", "mixer", "resnetv2"])
def test_self_comparison_has_unit_diagonal(family):
    model = make_tiny(family)
    res = vitlens.cka(model, random_images(12), layers_a="all", batch_size=6, progress=False)
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-9)
    np.testing.assert_allclose(res.matrix, res.matrix.T, atol=1e-9)


def test_self_comparison_runs_one_forward_pass_per_batch():
    model = make_tiny("vit")
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        vitlens.cka(model, random_images(12), model, layers_a="all", layers_b="blocks",
                    batch_size=6, progress=False)
    finally:
        handle.remove()
    assert len(calls) == 2


def test_stream_yields_partial_then_complete():
    model = make_tiny("vit")
    results = list(cka_stream(model, random_images(16), batch_size=4, progress=False))
    assert len(results) == 4
    assert results[0].meta["partial"]["batches_done"] == 1
    assert "partial" not in results[-1].meta
    final = vitlens.cka(model, random_images(16), batch_size=4, progress=False)
    np.testing.assert_allclose(results[-1].matrix, final.matrix, atol=1e-12)


def test_result_roundtrip_dataframe_and_chart(tmp_path):
    res = vitlens.cka(make_tiny("vit"), random_images(8), make_tiny("mixer"),
                      batch_size=8, progress=False)
    path = res.save(tmp_path / "r.npz")
    back = vitlens.SimilarityResult.load(path)
    np.testing.assert_array_equal(back.matrix, res.matrix)
    assert back.layers_b == res.layers_b and back.meta["vitlens_version"] == vitlens.__version__
    df = back.to_dataframe()
    assert len(df) == res.matrix.size
    row = df[(df.layer_a == "blocks.1") & (df.layer_b == "blocks.0")].iloc[0]
    assert row.cka == res.value("blocks.1", "blocks.0")
    spec = back.chart().to_dict()
    assert spec["encoding"]["x"]["sort"] == res.layers_b


def test_bad_inputs_have_clear_errors():
    vit = make_tiny("vit")
    with pytest.raises(ValueError, match="at least 4"):
        vitlens.cka(vit, random_images(3), progress=False)
    with pytest.raises(KeyError, match="blocks.0.attn"):
        vitlens.cka(vit, random_images(8), layers_a=["blocks.0.atn"], progress=False)
    with pytest.raises(KeyError, match="unknown model"):
        vitlens.cka("vit_tiny_patch16_2244", random_images(8), progress=False)
    with pytest.raises(ImageError, match="mismatched image sets"):
        vitlens.cka(vit, random_images(8), make_tiny("resnet"), images_b=random_images(9),
                    progress=False)
    with pytest.raises(ValueError, match="token_mode"):
        vitlens.cka(vit, random_images(8), token_mode="pooled", progress=False)
    with torch.no_grad():
        vit.blocks[1].norm1.weight.fill_(float("nan"))
    with pytest.raises(CaptureError, match="non-finite"):
        vitlens.cka(vit, random_images(8), progress=False)


def test_constant_layer_gives_nan_with_warning():
    model = make_tiny("vit")
    with torch.no_grad():  # block 1's output becomes the same for every image
        model.blocks[1].norm1.weight.zero_()
        model.blocks[1].norm1.bias.zero_()
        model.blocks[1].norm2.weight.zero_()
        model.blocks[1].norm2.bias.zero_()
        model.blocks[0].mlp.fc2.weight.zero_()
        model.blocks[0].attn.proj.weight.zero_()
        model.patch_embed.proj.weight.zero_()
    with pytest.warns(RuntimeWarning, match="blocks"):
        res = vitlens.cka(model, random_images(8), batch_size=8, progress=False)
    assert np.isnan(res.matrix).any()
