"""Issue 12, items 5-10 on the Python side: empty views after errors, only the choices a model
has, the tour's LocalizationExplorer, static pictures in the mime bundles, small fixes."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_tiny

from vitlens.widgets import (
    AttentionExplorer,
    HeatmapView,
    ImageAttentionView,
    LocalizationExplorer,
    ResidualExplorer,
    SimilarityExplorer,
)


@pytest.fixture(scope="module")
def vit():
    return make_tiny("vit")


@pytest.fixture(scope="module")
def x16():
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(8))


def png_of(widget) -> np.ndarray:
    out = widget._repr_mimebundle_()
    data = out[0] if isinstance(out, tuple) else out
    assert "text/plain" in data and "application/vnd.jupyter.widget-view+json" in data
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB"))


def colourful(arr: np.ndarray) -> int:
    return len(np.unique(arr.reshape(-1, 3), axis=0))


# ----- 5: views are empty after an error -----
def test_attention_views_empty_after_an_error_and_back(vit, x16):
    ex = AttentionExplorer(vit, x16[:4])
    assert ex.wait(120)  # the explorers compute in the background
    assert not ex.attention.empty and ex.data is not None
    ex.model.value = ex.models.add(make_tiny("resnet"))
    assert ex.wait(120)
    assert "self-attention" in ex.message.text
    assert ex.attention.empty and ex.rollout.empty and ex.data is None
    assert ex.attention.values.size == 0 and ex._chart_box.layout.display == "none"
    ex.model.value = ex.models.add(vit)
    assert ex.wait(120)
    assert ex.message.text == "" and ex.attention.values.shape == (2, 17, 17)
    assert ex._chart_box.layout.display is None and not ex.rollout.empty


def test_residual_heatmap_empty_after_an_error(vit, x16):
    ex = ResidualExplorer(vit, x16[:8], n_images=8, batch_size=4, charts=False)
    assert ex.wait(120)
    assert ex.heatmap.shape == (17, 4)
    ex.result, ex.images = None, "/no/such/folder/of/images"  # the next computation fails
    ex.refresh()
    assert ex.wait(120)
    assert ex.message.text and ex.heatmap.shape == (0, 0) and ex.heatmap.message


def test_localization_view_empty_after_an_error(vit, x16):
    ex = LocalizationExplorer(vit, x16, n_images=16, batch_size=8)
    assert ex.wait(120)
    assert not ex.view.empty and ex.summary.value
    ex.layers.value = "no_such_kind"
    assert "unknown layer or kind 'no_such_kind'" in ex.message.text
    assert ex.view.empty and ex.summary.value == ""


# ----- 6: only the choices the model has; the query keeps its place -----
def test_residual_and_localization_offer_only_what_the_model_has(vit, x16):
    res = ResidualExplorer(vit, x16[:8], n_images=8, batch_size=4, charts=False)
    assert res.wait(120)
    assert res.kind.options == ("all", "attn", "mlp")
    loc = LocalizationExplorer(vit, x16, n_images=16, batch_size=8)
    opts = set(loc.layers.options)
    assert {"blocks", "all", "attn", "mlp_hidden"} <= opts
    assert not opts & {"unit", "stage", "token_mix", "channel_mix"}
    mixer = ResidualExplorer(make_tiny("mixer"), x16[:8], n_images=8, batch_size=4,
                             charts=False)
    assert mixer.wait(120)
    assert "attn" not in mixer.kind.options and len(mixer.kind.options) > 1


def test_query_keeps_its_grid_position_between_cls_and_gap_vits(vit, x16):
    ex = AttentionExplorer(vit, x16[:4], charts=False)
    assert ex.wait(120)
    ex.attention.set_state({"clicked": [2, 1]})
    assert ex.attention.query == 1 + 2 * 4 + 1  # CLS first
    ex.model.value = ex.models.add(make_tiny("vit_gap"))
    assert ex.wait(120)
    assert ex.message.text == "" and ex.attention.num_prefix_tokens == 0
    assert ex.attention.query == 2 * 4 + 1  # the same patch, (2, 1)
    ex.model.value = ex.models.add(vit)
    assert ex.wait(120)
    assert ex.attention.query == 1 + 2 * 4 + 1


def test_a_prefix_query_falls_back_when_the_new_model_has_none():
    view = ImageAttentionView(None, np.random.default_rng(0).random((1, 17, 17)))
    assert view.query == 0  # CLS
    view.set_data(None, np.random.default_rng(1).random((1, 16, 16)), grid=(4, 4))
    assert view.query == 2 * 4 + 2  # the centre patch


# ----- 7: the tour's LocalizationExplorer -----
def test_localization_from_results_moves_through_the_models_layers(vit, x16):
    from vitlens.analyses import localization

    loc = localization(vit, x16, layer="blocks.1", n_images=16, batch_size=8, progress=False)
    ex = LocalizationExplorer(vit, x16, results=[loc], batch_size=8)
    assert not ex.layers.disabled and ex.layer.max == 1
    assert ex.current_layer == "blocks.1" and ex.cache.hits >= 1
    ex.layer.value = 0  # computed now, on the same images
    assert ex.wait(120)
    assert ex.message.text == "" and ex.current_layer == "blocks.0" and not ex.view.empty


# ----- 9: a static picture in every view's mime bundle -----
def test_every_view_and_explorer_bundles_a_png(vit, x16):
    heat = HeatmapView(np.random.default_rng(0).random((6, 9)), title="t", value_label="CKA")
    arr = png_of(heat)
    assert arr.shape[1] > 300 and colourful(arr) > 30
    att = AttentionExplorer(vit, x16[:4], charts=False)
    assert colourful(png_of(att)) > 50
    assert colourful(png_of(att.attention)) > 50
    res = ResidualExplorer(vit, x16[:8], n_images=8, batch_size=4, charts=False)
    assert colourful(png_of(res)) > 30
    loc = LocalizationExplorer(vit, x16, n_images=16, batch_size=8)
    assert colourful(png_of(loc)) > 30
    sim = SimilarityExplorer(vit, make_tiny("resnet"), images=x16, n_images=16, batch_size=8)
    assert sim.wait(120)
    assert colourful(png_of(sim)) > 8
    empty = png_of(HeatmapView())  # an empty view still gets a picture (a note)
    assert empty.shape[0] > 20


def test_the_static_heatmap_uses_the_browsers_colours():
    from vitlens.widgets._static import colourize

    m = np.array([[0.0, 1.0], [np.nan, 0.5]])
    c = colourize(m, 0.0, 1.0, "magma")
    assert tuple(c[0, 0]) == (0, 0, 4) and tuple(c[0, 1]) == (252, 253, 191)
    assert tuple(c[1, 0]) == (228, 228, 228)  # pending


# ----- 10: small items -----
def test_a_non_image_upload_names_no_memory_address(vit, x16):
    ex = AttentionExplorer(vit, x16[:4], charts=False)
    ex._on_upload({"new": [{"name": "notes.txt", "content": b"hello, not an image"}]})
    text = ex.message.text
    assert "notes.txt" in text and "not an image" in text
    assert "BytesIO" not in text and "0x" not in text


def test_a_folder_source_shows_its_path(vit, tmp_path):
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    ex = AttentionExplorer(vit, str(tmp_path), charts=False)
    assert ex.source_choice.value == f"folder: {tmp_path}"
    assert "str" not in ex.source_choice.value.split(":")[0]
    assert ex.message.text == "" and len(ex.image.options) == 4


# ----- 8: Fig 3 / C.5 lines dark enough to follow -----
def test_attention_distance_lines_are_dark_and_points_outlined(vit, x16):
    from vitlens.analyses import attention_distance

    res = attention_distance(vit, x16[:4], batch_size=4)
    spec = res.chart(kind="sorted").to_dict()
    marks = {layer["mark"]["type"]: layer["mark"] for layer in spec["layer"]}
    assert marks["line"]["opacity"] >= 0.8 and marks["line"]["strokeWidth"] >= 2
    assert marks["circle"]["stroke"] == "white"
    blocks = res.chart(kind="blocks").to_dict()["mark"]
    assert blocks["opacity"] >= 0.9


def test_legend_ticks_have_two_or_three_decimals():
    from vitlens.widgets._static import tick

    assert [tick(v, 1.0) for v in (1.0, 0.5, 0.0003)] == ["1.00", "0.50", "0.00"]
    assert [tick(v, 0.5) for v in (0.4843, 0.2421, -0.0332)] == ["0.484", "0.242", "-0.033"]
    assert tick(0.0581, 0.001) == "0.05810"  # a narrow range keeps its digits
    assert tick(12345.0, 100.0) == "1.23e+04"
