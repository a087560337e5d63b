"""Attention, Localization and Residual explorers: nothing stale after a bad choice, the
heavy work in the background (debounced, newest wins, cancellable), one message per view."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
from tiny_models import until

import vitlens
from vitlens.widgets import (
    AttentionExplorer,
    ImageAttentionView,
    LocalizationExplorer,
    ResidualExplorer,
)

BAD_FOLDER = "/nonexistent/vitlens-test-folder"


@pytest.fixture(scope="module")
def images():
    return vitlens.datasets.synthetic("test", 16)


class Gate:
    """Wraps a computation: records where it runs, and holds it until :meth:`release`."""

    def __init__(self, fn):
        self.fn, self.calls, self.threads = fn, [], []
        self.released = threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls.append(kwargs.get("layer"))
        self.threads.append(threading.current_thread())
        assert self.released.wait(60), "the test never released the gate"
        return self.fn(*args, **kwargs)

    def release(self):
        self.released.set()


@pytest.fixture
def gate(monkeypatch):
    """``gate(module, name)`` holds that computation; all gates open at teardown."""
    made = []

    def make(module, name):
        g = Gate(getattr(module, name))
        monkeypatch.setattr(module, name, g)
        made.append(g)
        return g

    yield make
    for g in made:
        g.release()


def titles_of(view: ImageAttentionView) -> list[str]:
    seen: list[str] = []
    view.observe(lambda c: seen.append(c["new"]), "title")
    return seen


# ----- 4, 5: a source that fails to load, and the good one after it -----
def test_a_failing_source_leaves_no_image_or_map_of_the_previous_one():
    ex = AttentionExplorer("vitlens/vit-cls", images=BAD_FOLDER, charts=False)
    assert ex.wait(120)
    assert "does not exist" in ex.message.text and ex.image.options == ()
    assert ex.attention.empty and ex.status_text.startswith("failed")
    ex.source_choice.value = "samples"
    assert ex.wait(120)
    ex.image.value = ex.image.options[2][1]  # "2: coffee"
    assert ex.wait(120)
    assert ex.image.label == "2: coffee" and not ex.attention.empty
    ex.source_choice.value = f"folder: {BAD_FOLDER}"  # back to the bad source
    assert ex.wait(120)
    assert "does not exist" in ex.message.text
    assert ex.image.options == () and ex.image.value is None  # no sample offered
    assert ex.attention.empty and ex.rollout.empty and ex.data is None
    assert ex.attention.values.size == 0 and ex.attention.image.size == 0
    assert ex.attention.message and ex.status_text.startswith("failed")
    assert repr(ex).endswith("maps=none)")


def test_a_good_source_after_a_bad_one_shows_its_first_image_and_clears_the_error():
    ex = AttentionExplorer("vitlens/vit-cls", images=BAD_FOLDER, charts=False)
    assert ex.wait(120) and ex.message.text
    ex.source_choice.value = "samples"
    assert ex.wait(120)
    assert ex.image.value == ex.image.options[0][1] and ex.image.label == "0: astronaut"
    assert ex.message.text == "" and ex.status_text == "done"
    assert ex.attention.values.shape == (4, 65, 65) and not ex.rollout.empty
    want = ex.compute(ex.image.options[0][1])
    np.testing.assert_array_equal(ex.attention.image, want["image"])


# ----- 6: a bad layer spec leaves no layer of the old one -----
def test_a_bad_layer_spec_disables_the_slider_until_fixed(images):
    ex = LocalizationExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8)
    assert ex.wait(120) and ex.current_layer == "blocks.5"
    drawn = titles_of(ex.view)
    ex.layers.value = "blocks.99"
    assert "unknown layer or kind 'blocks.99'" in ex.message.text
    assert ex.layer.disabled and ex.layer_names == [] and ex.current_layer is None
    assert "blocks." not in ex.layer_label.value and ex.view.empty and ex.summary.value == ""
    ex.layer.value = 3  # the browser still sends a slider move
    assert ex.wait(120)
    assert "blocks.99" in ex.message.text and ex.view.empty  # nothing of the old spec
    assert not any(t.startswith("blocks.") for t in drawn)
    ex.layers.value = "blocks"  # fixed: the slider's position is drawn
    assert ex.wait(120)
    assert not ex.layer.disabled and ex.message.text == ""
    assert ex.current_layer == "blocks.3" and ex.view.title.startswith("blocks.3:")
    assert "blocks.3" in ex.layer_label.value and ex.status_text == "blocks.3: done"


# ----- 8: the heavy work runs in the background -----
def test_localization_computes_off_the_kernel_and_a_drag_computes_only_where_it_stops(
        images, gate):
    loc_module = importlib.import_module("vitlens.analyses.localization")

    g = gate(loc_module, "localization")
    ex = LocalizationExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8)
    # The constructor returned; the model loads, then blocks.5 is held: nothing drawn,
    # and it says so.
    assert ex.running
    assert until(lambda: g.calls == ["blocks.5"], 60)
    assert ex.view.empty and ex.view.message == "computing blocks.5…"
    assert ex.status_text == "computing blocks.5 on 16 images…"
    assert not ex.cancel_button.disabled and ex.run_button.disabled
    drawn = titles_of(ex.view)
    for v in (4, 3, 2, 1, 0):  # a drag: one change per intermediate value
        ex.layer.value = v
    assert "blocks.0" in ex.layer_label.value and ex.view.message == "computing blocks.0…"
    g.release()
    assert ex.wait(120)
    assert g.calls == ["blocks.5", "blocks.0"]  # only where the drag stopped
    assert all(t is not threading.main_thread() for t in g.threads)
    assert drawn == ["blocks.0: CKA of the clicked token with each input patch"]  # 5 is stale
    assert ex.status_text == "blocks.0: done" and ex.cancel_button.disabled
    res = g.fn(ex.models.load("vitlens/vit-cls"), images, layer="blocks.0", n_images=16,
               batch_size=8, progress=False)
    np.testing.assert_allclose(ex.view.values[0], _full(res), atol=1e-6, equal_nan=True)
    assert ex._key("blocks.5") not in ex.cache  # the superseded run stopped at its first batch
    ex.layer.value = 5
    assert ex.wait(120) and ex.status_text == "blocks.5: done"
    ex.layer.value = 0  # seen before: instant, not recomputed
    assert not ex.view.empty and ex.view.title.startswith("blocks.0:")
    assert ex.status_text == "blocks.0: from cache" and g.calls.count("blocks.0") == 1


def test_localization_loads_a_named_model_off_the_kernel(images, monkeypatch):
    """A model given by name is loaded in the background: the constructor returns at once,
    the slider has no layer (and says so) until the model's layers arrive, then the last
    layer is computed; a Cancel while it loads leaves the computing to Run."""
    from vitlens.models import loading

    load = Gate(loading.load_model)
    monkeypatch.setattr(loading, "load_model", load)
    ex = LocalizationExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8)
    try:
        assert until(lambda: len(load.threads) == 1, 30)  # the loader is inside load_model
        assert load.threads[0] is not threading.main_thread()
        assert ex.running and not ex.wait(0.2)
        assert ex.layer_names == [] and ex.layer.disabled and ex.current_layer is None
        assert ex.view.empty and ex.view.message == "loading vitlens/vit-cls…"
        assert ex.status_text == "loading vitlens/vit-cls…" and ex.run_button.disabled
        assert not ex.cancel_button.disabled
        ex.layers.value = "blocks.1, blocks.2"  # typed while it loads: used when it has
        assert ex.layer_names == [] and ex.message.text == ""
    finally:
        load.release()
    assert ex.wait(120)
    assert ex.layer_names == ["blocks.1", "blocks.2"] and not ex.layer.disabled
    assert ex.current_layer == "blocks.2" and ex.status_text == "blocks.2: done"
    assert ex.view.title.startswith("blocks.2:") and "attn" in ex.layers.options
    assert ex.cancel_button.disabled and not ex.run_button.disabled

    held = Gate(loading.load_model)
    monkeypatch.setattr(loading, "load_model", held)
    ex = LocalizationExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8, layer=1)
    try:
        assert until(lambda: len(held.threads) == 1, 30)
        ex.cancel_button.click()
        assert "cancelled" in ex.view.message and "cancelled" in ex.status_text
        assert ex.cancel_button.disabled and not ex.run_button.disabled
    finally:
        held.release()
    assert ex.wait(120)
    assert ex.layer_names[1] == "blocks.1" and ex.current_layer == "blocks.1"
    assert ex.view.empty and ex._key("blocks.1") not in ex.cache  # nothing computed
    assert ex.status_text == "cancelled; vitlens/vit-cls has loaded: press Run to compute blocks.1"
    assert ex.view.message == "cancelled: press Run to compute blocks.1"
    assert not ex.run_button.disabled and ex.cancel_button.disabled
    ex.run_button.click()
    assert ex.wait(120) and ex.status_text == "blocks.1: done" and not ex.view.empty


def test_localization_says_when_its_model_cannot_be_loaded(images):
    ex = LocalizationExplorer("vitlens/no-such-model", images, n_images=16, batch_size=8)
    assert ex.wait(60)
    assert "unknown zoo model 'no-such-model'" in ex.message.text
    assert ex.status_text == "failed: could not load vitlens/no-such-model"
    assert ex.layer.disabled and ex.layer_names == [] and ex.view.empty
    assert ex.run_button.disabled and ex.cancel_button.disabled


def _full(res) -> np.ndarray:
    from vitlens.widgets.localization_explorer import _as_values

    return _as_values(res)[0][0]


def test_localization_cancel_stops_the_run_and_run_starts_it_again(images, gate):
    loc_module = importlib.import_module("vitlens.analyses.localization")

    g = gate(loc_module, "localization")
    ex = LocalizationExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8, layer=2)
    assert until(lambda: g.calls == ["blocks.2"], 60)  # loaded, and computing blocks.2
    ex.cancel_button.click()
    assert "cancelled" in ex.status_text and "cancelled" in ex.view.message
    assert ex.cancel_button.disabled and not ex.run_button.disabled
    g.release()
    assert ex.wait(120)
    assert ex.view.empty and "cancelled" in ex.status_text  # nothing published after Cancel
    assert ex._key("blocks.2") not in ex.cache  # stopped between batches, not finished
    ex.run_button.click()
    assert ex.wait(120)
    assert not ex.view.empty and ex.status_text == "blocks.2: done"


def test_residual_explorer_computes_in_the_background_and_can_be_cancelled(images, gate):
    res_module = importlib.import_module("vitlens.analyses.residual")

    g = gate(res_module, "residual_ratio")
    ex = ResidualExplorer("vitlens/vit-cls", images, n_images=16, batch_size=8, charts=False)
    assert ex.heatmap.shape == (0, 0) and ex.heatmap.message == "computing…"
    assert ex.status_text == "computing on 16 images…" and ex.result is None
    ex.stat.value = "cos_branch"  # chosen while computing: used when the result arrives
    ex.cancel()
    assert "cancelled" in ex.status_text and "cancelled" in ex.heatmap.message
    g.release()
    assert ex.wait(120)
    assert ex.result is None and ex.heatmap.shape == (0, 0)
    assert all(t is not threading.main_thread() for t in g.threads)
    ex.run_button.click()
    assert ex.wait(120)
    assert ex.status_text == "done: 16 images" and ex.heatmap.shape == (65, 12)
    assert ex.heatmap.value_label == "cos(z, f(z))" and ex.run_button.disabled
    want = np.asarray(ex.result.arrays["cos_branch_tokens"]).T
    np.testing.assert_allclose(ex.heatmap.matrix, want, atol=1e-6)


def test_attention_maps_are_computed_off_the_kernel_and_only_the_newest_is_shown(gate):
    from vitlens.widgets import attention_explorer as att_module

    ex = AttentionExplorer("vitlens/vit-cls", images="samples", charts=False)
    assert ex.wait(120)
    ex.head.value = 2
    g = gate(att_module, "compute_attention")
    drawn: list[bytes] = []
    ex.attention.observe(lambda c: drawn.append(c["new"]), "_image")
    ex.image.value = ex.image.options[1][1]
    assert ex.attention.empty and ex.rollout.empty and ex.data is None  # not image 0's maps
    assert ex.attention.message == "computing…" and ex.head.value == 2  # the head is kept
    assert ex.status_text == "computing 1: chelsea on vitlens/vit-cls…"
    ex.image.value = ex.image.options[3][1]  # supersedes image 1
    g.release()
    assert ex.wait(120)
    assert all(t is not threading.main_thread() for t in g.threads)
    assert ex.image.label == "3: rocket" and ex.status_text == "done"
    np.testing.assert_array_equal(ex.attention.image, ex.compute(ex.image.value)["image"])
    np.testing.assert_array_equal(ex.attention.values, ex.data["maps"][0])
    assert ex.head.value == ex.attention.head == 2
    stale = ex.compute(ex.image.options[1][1])["image"]  # computed, superseded, kept
    assert [d for d in drawn if d] == [ex.attention._image]  # image 1 was never drawn
    assert stale.tobytes() != ex.attention._image


def test_attention_cancel_leaves_the_views_empty_and_run_computes(gate):
    from vitlens.widgets import attention_explorer as att_module

    g = gate(att_module, "compute_attention")
    ex = AttentionExplorer("vitlens/vit-gap", images="samples", charts=False)
    for _ in range(600):  # until the run is inside its forward pass
        if g.calls:
            break
        threading.Event().wait(0.05)
    assert g.calls and ex.attention.empty and ex.attention.message == "computing…"
    ex.cancel_button.click()
    assert "cancelled" in ex.status_text and ex.attention.empty
    g.release()
    assert ex.wait(120)
    assert ex.attention.empty and ex.data is None and "cancelled" in ex.status_text
    ex.run_button.click()  # the maps finished after Cancel (one forward pass): kept
    assert ex.wait(120)
    assert ex.attention.values.shape == (4, 64, 64) and ex.status_text == "from cache"


def test_a_notebook_display_waits_for_the_maps():
    ex = AttentionExplorer("vitlens/vit-cls", images="samples", charts=False)
    out = ex._repr_mimebundle_()
    data = out[0] if isinstance(out, tuple) else out
    assert data["text/plain"].endswith("maps=6×4×65×65)") and "image/png" in data
    res = ResidualExplorer("vitlens/vit-cls", "synthetic", n_images=8, batch_size=8,
                           charts=False)
    out = res._repr_mimebundle_()
    data = out[0] if isinstance(out, tuple) else out
    assert data["text/plain"].endswith("matrix=65×12)")


# ----- the image and its maps arrive together -----
def test_each_view_gets_its_image_and_maps_in_one_message(monkeypatch):
    sent: list[tuple[str, set[str]]] = []
    orig = ImageAttentionView.send_state

    def send_state(self, key=None):
        keys = {key} if isinstance(key, str) else set(key or ())
        sent.append((self.value_label, keys))
        return orig(self, key)

    monkeypatch.setattr(ImageAttentionView, "send_state", send_state)
    ex = AttentionExplorer("vitlens/vit-cls", images="samples", charts=False)
    assert ex.wait(120)
    ex.layer.value = 2
    sent.clear()
    ex.image.value = ex.image.options[1][1]
    assert ex.wait(120)
    ex.model.value = "vitlens/vit-gap"  # prefix tokens go: rollout's names change too
    assert ex.wait(120)
    with_values = [(v, k) for v, k in sent if "_values" in k]
    assert len(with_values) == 8  # two views, emptied then drawn, twice
    assert all("_image" in k for _, k in sent if "_values" in k or "_image" in k)
    gap_rollout = [k for v, k in with_values if v == "rollout"][-1]
    assert {"prefix_names", "_image", "_values", "_version"} <= gap_rollout
    assert ex.rollout.prefix_names == [] and ex.rollout.title == "rollout through blocks 0–2"


def test_cancellable_images_are_keyed_by_their_sources_bytes():
    """The explorers' wrapper keys caches by the wrapped images' own bytes: preprocessed
    tensors too (it used to read them as PIL images and fail), and an edit changes it."""
    import threading

    import torch

    from vitlens.cache_keys import images_fingerprint
    from vitlens.datasets import as_images
    from vitlens.widgets._run_controls import CancellableImages

    x = torch.rand(6, 3, 64, 64)
    wrap = CancellableImages(as_images(x), threading.Event())
    assert images_fingerprint(wrap) == images_fingerprint(
        CancellableImages(as_images(x.clone()), threading.Event()))
    y = x.clone()
    y[0, 0, 0, 0] += 0.5
    assert images_fingerprint(wrap) != images_fingerprint(
        CancellableImages(as_images(y), threading.Event()))
    assert wrap.fingerprint() == as_images(x).fingerprint()
