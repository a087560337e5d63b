"""Attention, Localization and Residual explorers, driven by setting synced traits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from test_widgets_reference import (
    attention_probs,
    capture_outputs,
    mean_distance,
    minibatch_cka,
    rollout,
)
from tiny_models import make_tiny
from traitlets import TraitError

from vitlens.widgets import AttentionExplorer, LocalizationExplorer, ResidualExplorer
from vitlens.widgets.charts import browser_select


@pytest.fixture(scope="module")
def vit():
    return make_tiny("vit")


@pytest.fixture(scope="module")
def x4():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def explorer(vit, x4):
    ex = AttentionExplorer(vit, x4)
    assert ex.wait(120)  # the maps are computed in the background
    return ex


# ----- AttentionExplorer -----
def test_attention_matches_qkv_softmax_for_each_layer(explorer, vit, x4):
    ex = explorer
    ex.image.value = ex.image.options[1][1]
    assert ex.wait(120)
    assert ex.message.text == "" and ex.layer.max == 1 and ex.head.max == 1
    for layer in (1, 0):
        ex.layer.value = layer  # a slider move
        want = attention_probs(vit, x4[1:2], layer)[0]  # (H, N, N)
        np.testing.assert_allclose(ex.attention.values, want, atol=1e-6)
        maps = [attention_probs(vit, x4[1:2], b)[0] for b in range(layer + 1)]
        np.testing.assert_allclose(ex.rollout.values[0], rollout(maps), atol=1e-6)
        dist = mean_distance(want, grid=4, patch=8, npt=1)
        assert ex.attention.head_labels == [f"head {h} · {d:.1f}px" for h, d in enumerate(dist)]
        assert ex.attention.title.startswith(f"block {layer}:")
    img = np.clip(x4[1].permute(1, 2, 0).numpy() * 0.5 + 0.5, 0, 1) * 255  # timm mean/std 0.5
    assert np.abs(ex.attention.image.astype(float) - img).max() <= 1.0


def test_patch_click_head_grid_and_chart_drive_the_views(explorer):
    ex = explorer
    ex.attention.set_state({"clicked": [2, 1]})  # a click on the image
    assert ex.attention.query == ex.rollout.query == 1 + 2 * 4 + 1
    ex.attention.set_state({"head": 1})  # a click on the head grid
    assert ex.head.value == 1
    ex.head.value = 0  # the slider
    assert ex.attention.head == 0 and ex.chart.params.head == 0
    browser_select(ex.chart, "head_sel", "head", [1])  # a click on a bar
    assert ex.head.value == 1 and ex.attention.head == 1
    ex.layer.value = 1
    assert ex.chart.params.layer == 1
    rows = ex.chart.chart.to_dict()["datasets"]
    rows = next(iter(rows.values()))
    want = sorted(ex.data["distance"][1])
    assert [r["distance"] for r in rows if r["block"] == 1] == pytest.approx(want)


def test_images_are_cached_and_uploads_are_checked(explorer):
    ex = explorer
    ex.image.value = ex.image.options[0][1]
    before = ex.attention.values.copy()
    hits = ex.cache.hits
    ex.image.value = ex.image.options[2][1]
    assert ex.wait(120)
    ex.image.value = ex.image.options[0][1]  # back: from the cache
    assert ex.cache.hits == hits + 1
    np.testing.assert_array_equal(ex.attention.values, before)

    ex.upload.set_state({"value": [{"name": "notes.txt", "type": "text/plain", "size": 9,
                                    "last_modified": 0, "content": memoryview(b"not a png")}]})
    assert "could not read the uploaded file 'notes.txt'" in ex.message.text
    np.testing.assert_array_equal(ex.attention.values, before)  # still showing the image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(buf, format="PNG")
    ex.upload.set_state({"value": [{"name": "grey.png", "type": "image/png", "size": 1,
                                    "last_modified": 0, "content": memoryview(buf.getvalue())}]})
    assert ex.wait(120)
    assert ex.message.text == "" and ex.image.label == "upload: grey.png"
    assert ex.attention.image.shape == (32, 32, 3)  # as the model sees it


def test_attention_errors_keep_the_widget_usable(vit, x4):
    ex = AttentionExplorer(make_tiny("resnet"), x4, charts=False)
    assert ex.wait(120)
    assert "has no timm self-attention blocks" in ex.message.text
    assert ex.attention.message  # no silent blank
    label = ex.models.add(vit)
    ex.model.value = "no_such_model_abc"
    assert ex.wait(120)
    assert "unknown model 'no_such_model_abc'" in ex.message.text
    ex.model.value = label
    assert ex.wait(120)
    assert ex.message.text == "" and ex.attention.values.shape == (2, 17, 17)


def test_attention_from_precomputed_maps(vit, x4):
    maps = np.stack([attention_probs(vit, x4[:1], b)[0] for b in range(2)])
    img = np.zeros((32, 32, 3), np.uint8)
    ex = AttentionExplorer.from_maps(img, maps, patch_size=8, num_prefix_tokens=1, charts=False)
    ex.layer.value = 1
    np.testing.assert_allclose(ex.attention.values, maps[1], atol=1e-6)
    np.testing.assert_allclose(ex.rollout.values[0], rollout(list(maps)), atol=1e-6)
    assert repr(ex) == ("AttentionExplorer(precomputed, image='0: image 0', layer=1, head=-1, "
                        "maps=2×2×17×17)")


# ----- LocalizationExplorer -----
def test_localization_click_shows_cka_with_input_patches(vit):
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    ex = LocalizationExplorer(vit, x, n_images=16, batch_size=8)
    assert ex.wait(120)
    assert ex.message.text == "" and ex.current_layer == "blocks.1"
    ex.view.set_state({"clicked": [1, 2]})
    assert ex.view.query == 1 * 4 + 2
    (tok,) = capture_outputs(vit, x, ["blocks.1"])
    xs = x.double().numpy()
    patches = xs.reshape(16, 3, 4, 8, 4, 8).transpose(0, 2, 4, 1, 3, 5).reshape(16, 16, -1)
    want = minibatch_cka([tok[:, 1 + 6]], [patches[:, q] for q in range(16)],
                         [range(0, 8), range(8, 16)])
    np.testing.assert_allclose(ex.view.current_map(), want.reshape(4, 4), atol=2e-5)
    ex.layer.value = 0  # slider: computes blocks.0, then moving back is cached
    assert ex.wait(120)
    assert ex.current_layer == "blocks.0"
    hits = ex.cache.hits
    ex.layer.value = 1
    assert ex.cache.hits == hits + 1
    np.testing.assert_allclose(ex.view.current_map(), want.reshape(4, 4), atol=2e-5)
    ex.layers.value = "mlp_hidden_typo"
    assert "unknown layer or kind 'mlp_hidden_typo'" in ex.message.text
    ex.layers.value = "attn"
    assert ex.message.text == "" and ex.layer_names == ["blocks.0.attn", "blocks.1.attn"]
    assert ex.wait(120)  # its computation must not run on into the next test's forward passes
    assert ex.message.text == "" and ex.current_layer == "blocks.1.attn"
    assert repr(ex).startswith("LocalizationExplorer(vit_tiny_patch16_224")


# ----- ResidualExplorer -----
def test_residual_heatmap_is_log_ratio_per_token(vit):
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    ex = ResidualExplorer(vit, x, n_images=8, batch_size=4)
    assert ex.wait(120)
    assert ex.message.text == ""
    assert ex.heatmap.col_labels == ["blocks.0.attn", "blocks.0.mlp", "blocks.1.attn",
                                     "blocks.1.mlp"]
    assert ex.heatmap.row_labels[:2] == ["CLS", "(0,0)"] and len(ex.heatmap.row_labels) == 17
    (z0,) = capture_outputs(vit, x, ["blocks.0"], pre=True)  # stream into attention
    (f0,) = capture_outputs(vit, x, ["blocks.0.ls1"])  # attention branch output
    (z1,) = capture_outputs(vit, x, ["blocks.0.norm2"], pre=True)  # stream into the MLP
    (f1,) = capture_outputs(vit, x, ["blocks.0.ls2"])  # MLP branch output
    ratio_attn = (np.linalg.norm(z0, axis=-1) / np.linalg.norm(f0, axis=-1)).mean(0)
    ratio_mlp = (np.linalg.norm(z1, axis=-1) / np.linalg.norm(f1, axis=-1)).mean(0)
    m = ex.heatmap.matrix
    np.testing.assert_allclose(m[:, 0], np.log10(ratio_attn), atol=1e-5)
    np.testing.assert_allclose(m[:, 1], np.log10(ratio_mlp), atol=1e-5)

    ex.heatmap.set_state({"selected": [5, 1]})  # click: the token's curve joins the chart
    series = {r["series"] for r in next(iter(ex.chart.chart.to_dict()["datasets"].values()))}
    assert series == {"CLS", "spatial mean", "token (1,0)"}
    browser_select(ex.chart, "x_sel", "index", [3])  # click a point on a curve
    assert ex.heatmap.selected == [5, 3]
    ex.kind.value = "mlp"
    assert ex.heatmap.col_labels == ["blocks.0.mlp", "blocks.1.mlp"]
    np.testing.assert_allclose(ex.heatmap.matrix[:, 0], np.log10(ratio_mlp), atol=1e-5)


def test_residual_cnn_and_missing_branch_kind():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    ex = ResidualExplorer(make_tiny("resnet"), x, n_images=8, batch_size=4, charts=False)
    assert ex.wait(120)
    assert ex.heatmap.row_labels == ["spatial mean"] and ex.heatmap.shape == (1, 4)
    assert ex.kind.options == ("all", "unit")  # only the branch kinds a ResNet has
    with pytest.raises(TraitError):
        ex.kind.value = "attn"
    ex.kind.value = "unit"
    assert ex.message.text == "" and ex.heatmap.shape == (1, 4)
    assert repr(ex) == "ResidualExplorer(resnet18, stat='ratio', branches='unit', matrix=1×4)"


# ----- precomputed results show at once -----
def test_localization_and_residual_from_precomputed_results():
    from vitlens.analyses.localization import LocalizationResult
    from vitlens.analyses.residual import ResidualResult

    maps = np.random.default_rng(7).random((9, 3, 3))
    pos = np.array([(r, c) for r in range(3) for c in range(3)])
    loc = LocalizationResult.from_maps(maps, pos, {"model": "m", "layer": "blocks.5",
                                                   "n_images": 100})
    ex = LocalizationExplorer("not-loaded-model", results=[loc])
    assert ex.current_layer == "blocks.5" and not ex.view.empty  # at once, while it loads
    assert ex.wait(60)
    assert ex.message.text == "" and ex.layers.disabled  # it cannot: the layers stay
    ex.view.set_state({"clicked": [2, 0]})
    np.testing.assert_allclose(ex.view.current_map(), maps[6], atol=1e-7)
    assert repr(ex) == ("LocalizationExplorer(not-loaded-model, layer='blocks.5', n_layers=1, "
                        "n_images=100)")

    ratio_tokens = np.array([[10.0, 2.0, 4.0, 8.0, 1.0], [100.0, 1.0, 1.0, 1.0, 1.0]])
    arrays = {"ratio": np.zeros((2, 2)), "cos_branch": np.zeros((2, 2)),
              "cos_stream": np.zeros((2, 2)), "count": np.ones((2, 2)),
              "ratio_tokens": ratio_tokens, "cos_branch_tokens": np.zeros((2, 5)),
              "cos_stream_tokens": np.zeros((2, 5))}
    meta = {"model": "m", "sub_blocks": ["blocks.0.attn", "blocks.0.mlp"],
            "kinds": ["attn", "mlp"], "blocks": [0, 0], "num_prefix_tokens": 1, "n_images": 4}
    res = ResidualExplorer("not-loaded-model", result=ResidualResult(arrays, meta))
    assert res.heatmap.row_labels == ["CLS", "(0,0)", "(0,1)", "(1,0)", "(1,1)"]
    np.testing.assert_allclose(res.heatmap.matrix, np.log10(ratio_tokens).T, atol=1e-6)


def test_attention_image_sources_can_be_switched(vit, x4):
    ex = AttentionExplorer(vit, x4, charts=False)
    assert ex.source_choice.options == ("samples", "synthetic", "custom: Tensor of 4 images")
    ex.source_choice.value = "samples"  # the bundled photos, by name
    assert ex.wait(120)
    assert ex.image.options[0][0] == "0: astronaut" and len(ex.image.options) == 16
    assert ex.message.text == "" and ex.attention.values.shape == (2, 17, 17)
    ex.image.value = ex.image.options[1][1]
    assert ex.image.label == "1: chelsea"
