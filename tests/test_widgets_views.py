"""The anywidget views, driven as the browser drives them: by setting synced traits."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import traitlets
from ipywidgets.widgets.widget import _remove_buffers

from vitlens.widgets import HeatmapView, ImageAttentionView, decode_array, encode_array
from vitlens.widgets._base import LRUCache, MessageArea

WIDGETS = Path(__file__).parents[1] / "vitlens" / "widgets"


def browser_sets(widget, **state):
    """What ipywidgets does with an 'update' message from the front end."""
    widget.set_state(state)


# ----- wire format -----
def test_arrays_travel_as_little_endian_bytes_not_lists():
    a = np.array([[1.5, -2.0, np.nan], [0.25, 3.0, 7.0]])
    data, dtype, shape = encode_array(a)
    assert data == a.astype("<f4").tobytes()
    assert (dtype, shape) == ("float32", [2, 3])
    back = decode_array(data, dtype, shape)
    np.testing.assert_array_equal(back, a.astype(np.float32))

    view = HeatmapView(a, row_labels=["r0", "r1"], col_labels=["a", "b", "c"])
    state, buffer_paths, buffers = _remove_buffers(view.get_state())
    assert ["_data"] in buffer_paths  # the matrix goes as a binary buffer ...
    assert bytes(buffers[buffer_paths.index(["_data"])]) == a.astype("<f4").tobytes()
    assert "_data" not in state  # ... and not inside the JSON state
    assert state["_shape"] == [2, 3] and state["_dtype"] == "float32"


def test_encode_rejects_unknown_dtype():
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_array(np.zeros(3), "complex64")


# ----- HeatmapView -----
def test_heatmap_click_syncs_selection_back():
    m = np.arange(12, dtype=float).reshape(3, 4) / 11
    view = HeatmapView(m, row_labels=["a0", "a1", "a2"], col_labels=["b0", "b1", "b2", "b3"])
    seen = []
    view.observe(lambda c: seen.append(c["new"]), "selected")
    browser_sets(view, selected=[2, 1])
    assert view.selected == [2, 1] and seen == [[2, 1]]
    assert view.selected_labels == ("a2", "b1")
    assert view.selected_value == pytest.approx(9 / 11, abs=1e-7)
    with pytest.raises(traitlets.TraitError, match="outside the 3x4 matrix"):
        view.selected = [3, 0]
    browser_sets(view, selected=None)
    assert view.selected_labels is None


def test_heatmap_partial_matrix_keeps_nan_and_redraw_version():
    view = HeatmapView()
    assert view.shape == (0, 0)
    pending = np.full((2, 2), np.nan)
    view.set_matrix(pending, ["x", "y"], ["u", "v"])
    v0 = view._version
    partial = np.array([[0.5, np.nan], [np.nan, np.nan]])
    view.set_matrix(partial)  # labels kept
    assert view._version == v0 + 1
    assert view.row_labels == ["x", "y"] and view.col_labels == ["u", "v"]
    got = view.matrix
    assert got[0, 0] == pytest.approx(0.5) and np.isnan(got[0, 1]) and np.isnan(got[1, 1])


def test_heatmap_selection_survives_or_clears_with_shape():
    view = HeatmapView(np.zeros((4, 4)))
    view.selected = [3, 3]
    view.set_matrix(np.ones((4, 4)))
    assert view.selected == [3, 3]
    view.set_matrix(np.ones((2, 2)))
    assert view.selected is None


def test_heatmap_bad_input_messages():
    view = HeatmapView()
    with pytest.raises(ValueError, match=r"2-D \(rows, cols\) matrix; got shape \(3,\)"):
        view.set_matrix(np.zeros(3))
    with pytest.raises(ValueError, match="2 row labels and 2 column labels do not match"):
        view.set_matrix(np.zeros((3, 2)), ["a", "b"], ["c", "d"])


def test_heatmap_repr_is_stable():
    view = HeatmapView(np.zeros((42, 42)))
    view.selected = [1, 2]
    assert repr(view) == "HeatmapView(42×42, selected=[1, 2])"
    assert "0x" not in repr(view)


def test_heatmap_400x400_encodes_quickly():
    import time

    m = np.random.default_rng(0).random((400, 400))
    view = HeatmapView(m)
    t0 = time.perf_counter()
    for _ in range(5):
        view.set_matrix(m)
    assert (time.perf_counter() - t0) / 5 < 0.1
    assert len(view._data) == 400 * 400 * 4


# ----- ImageAttentionView -----
def _attn(h=2, grid=4, npt=1, seed=0):
    r = np.random.default_rng(seed)
    n = npt + grid * grid
    a = r.random((h, n, n))
    return a / a.sum(-1, keepdims=True)


def test_image_attention_click_patch_sets_query_and_map():
    a = _attn()
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    view = ImageAttentionView(img, a, prefix_names=["CLS"])
    assert view.grid == [4, 4] and view.num_prefix_tokens == 1 and view.query_prefix == 1
    assert view.query == 0  # CLS by default
    np.testing.assert_array_equal(view.image, img)
    browser_sets(view, clicked=[2, 3])
    assert view.query == 1 + 2 * 4 + 3
    browser_sets(view, head=1)
    np.testing.assert_allclose(view.current_map(), a[1, 12, 1:].reshape(4, 4), atol=1e-7)
    browser_sets(view, head=-1)
    np.testing.assert_allclose(view.current_map(), a[:, 12, 1:].mean(0).reshape(4, 4), atol=1e-7)
    browser_sets(view, query=0)  # the CLS button
    np.testing.assert_allclose(view.current_map(), a[:, 0, 1:].mean(0).reshape(4, 4), atol=1e-7)
    with pytest.raises(traitlets.TraitError, match="head 2 is outside 0..1"):
        view.head = 2
    with pytest.raises(traitlets.TraitError, match="query 17 is outside the 17 queries"):
        view.query = 17


def test_image_attention_single_map_and_per_position_maps():
    erf = np.arange(64, dtype=float).reshape(8, 8)
    view = ImageAttentionView(np.zeros((64, 64, 3)), erf)
    assert view.values.shape == (1, 1, 64) and view.grid == [8, 8] and view.query is None
    np.testing.assert_array_equal(view.current_map(), erf)
    browser_sets(view, clicked=[1, 1])
    assert view.query is None  # a single map has no query

    loc = np.random.default_rng(2).random((16, 16))  # (P, Q) per-position maps
    view.set_data(None, loc, grid=(4, 4))
    assert view.query_prefix == 0 and view.num_prefix_tokens == 0
    assert view.query == 2 * 4 + 2  # the centre patch by default
    browser_sets(view, clicked=[0, 3])
    np.testing.assert_allclose(view.current_map(), loc[3].reshape(4, 4), atol=1e-7)


def test_image_attention_shape_errors_name_both_shapes():
    view = ImageAttentionView()
    with pytest.raises(ValueError, match=r"do not fit a 4x4 grid"):
        view.set_data(None, np.zeros((2, 5, 17)), grid=(4, 4))
    with pytest.raises(ValueError, match="cannot infer the patch grid of 14 keys"):
        view.set_data(None, np.zeros((1, 14, 14)))
    with pytest.raises(ValueError, match=r"image must be \(h, w, 3\)"):
        view.set_data(np.zeros((4, 4, 5)))


def test_image_attention_repr_is_stable():
    view = ImageAttentionView(None, _attn(h=3))
    assert repr(view) == ("ImageAttentionView(3 panels, 4×4 grid, 17→17 tokens, query=0, "
                          "head=-1)")


# ----- ESM files: no network -----
def test_esm_files_have_no_imports_and_no_urls():
    js = sorted(WIDGETS.glob("*.js"))
    assert {p.name for p in js} >= {"_shared.js", "heatmap.js", "image_attention.js"}
    for path in js:
        text = path.read_text()
        assert "https://" not in text and "http://" not in text, path.name
        assert not re.search(r"^\s*import\s", text, re.M), f"{path.name} imports a module"
        assert ("export default" in text) != path.name.startswith("_"), path.name
    shared = (WIDGETS / "_shared.js").read_text()
    for cls, stem in ((HeatmapView, "heatmap"), (ImageAttentionView, "image_attention")):
        widget = cls()  # the ESM and CSS shipped to the browser are the package files
        assert widget._esm == shared + "\n" + (WIDGETS / f"{stem}.js").read_text()
        assert widget._css == (WIDGETS / f"{stem}.css").read_text()


# ----- helpers -----
def test_message_area_escapes_and_clears():
    area = MessageArea()
    area.error(KeyError("unknown model '<x>'"))
    assert area.text == "KeyError: unknown model '<x>'"
    assert "&lt;x&gt;" in area.value and "<x>" not in area.value
    area.clear()
    assert area.value == "" and repr(area) == "MessageArea(empty)"


def test_lru_cache_computes_once_and_evicts_oldest():
    cache, calls = LRUCache(2), []
    for key in ["a", "b", "a", "c", "b"]:
        cache.get(key, lambda key=key: calls.append(key) or key.upper())
    assert calls == ["a", "b", "c", "b"]  # "b" was evicted by "c" after "a" was reused
    assert (cache.hits, cache.misses) == (1, 4)


def test_chart_selection_comes_back_to_python():
    from vitlens.widgets.charts import (
        browser_select,
        heads_by_distance_chart,
        jupyter_chart,
        on_point_select,
    )

    d = np.array([[30.0, 5.0, 12.0], [20.0, 21.0, 22.0]])
    spec = heads_by_distance_chart(d, layer=1, head=2).to_dict()
    params = {p["name"]: p.get("value") for p in spec["params"]}
    assert params["layer"] == 1 and params["head"] == 2
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    block0 = sorted((r["rank"], r["head"]) for r in rows if r["block"] == 0)
    assert block0 == [(0, 1), (1, 2), (2, 0)]  # heads sorted by distance 5 < 12 < 30
    jc = jupyter_chart(heads_by_distance_chart(d))
    got = []
    on_point_select(jc, "head_sel", "head", got.append)
    browser_select(jc, "head_sel", "head", [2])
    assert got == [[2]] and jc.selections.head_sel.value == [{"head": 2}]
    assert "https://esm.sh" not in jc._esm  # the offline bundle, not the CDN loader


def test_image_attention_from_erf_panels():
    from vitlens.analyses.receptive_field import ERFResult

    erf = np.random.default_rng(3).random((3, 16, 16))
    res = ERFResult({"erf": erf, "count": np.asarray(32)},
                    {"model": "m", "layers": ["blocks.0", "blocks.0", "blocks.5"],
                     "where": ["after", "before", "after"], "n_images": 32})
    view = ImageAttentionView.from_erf(res)
    assert view.head_labels == ["blocks.0", "blocks.5"] and view.grid == [16, 16]
    assert view.head == 1 and view.query is None
    np.testing.assert_allclose(view.current_map(), erf[2], atol=1e-6)
    browser_sets(view, head=0)  # a click on the first panel
    np.testing.assert_allclose(view.current_map(), erf[0], atol=1e-6)
    before = ImageAttentionView.from_erf(res, where="before")
    np.testing.assert_allclose(before.current_map(), erf[1], atol=1e-6)
    with pytest.raises(ValueError, match="no maps 'inside' the add"):
        ImageAttentionView.from_erf(res, where="inside")
