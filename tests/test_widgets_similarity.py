"""SimilarityExplorer: live CKA in a background thread, cancel, cache, errors, precomputed."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from test_widgets_reference import capture_outputs, minibatch_cka
from tiny_models import make_tiny

from vitlens.similarity_result import SimilarityResult
from vitlens.widgets import SimilarityExplorer

VIT_BLOCKS = ["blocks.0", "blocks.1"]
RESNET_UNITS = ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]


@pytest.fixture(scope="module")
def models():
    return make_tiny("vit"), make_tiny("resnet")


@pytest.fixture(scope="module")
def images():
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def reference(models, x, batches):
    vit, res = models
    fa = [f.reshape(len(x), -1) for f in capture_outputs(vit, x, VIT_BLOCKS)]
    fb = [f.reshape(len(x), -1) for f in capture_outputs(res, x, RESNET_UNITS)]
    return minibatch_cka(fa, fb, batches)


def test_heatmap_fills_in_batch_by_batch_and_matches_float64_reference(models, images):
    pushed = []
    ex = SimilarityExplorer(*models, images=images, n_images=24, batch_size=8, run=False)
    ex.heatmap.observe(lambda c: pushed.append(ex.heatmap.matrix.copy()), "_version")
    ex.run()
    assert ex.wait(120)
    assert ex.message.text == "", ex.message.text
    batches = [range(0, 8), range(8, 16), range(16, 24)]
    assert len(pushed) == 4  # all pending, then one push per batch
    assert np.isnan(pushed[0]).all() and pushed[0].shape == (2, 4)
    for k in (1, 2, 3):
        want = reference(models, images, batches[:k])
        np.testing.assert_allclose(pushed[k], want, atol=2e-5, rtol=1e-4)
    assert ex.heatmap.row_labels == VIT_BLOCKS and ex.heatmap.col_labels == RESNET_UNITS
    assert (ex.progress.value, ex.progress.max) == (3, 3)
    assert ex.status_text == "done: 24 images"
    assert ex.result.meta["n_images"] == 24 and "partial" not in ex.result.meta


def test_clicking_a_cell_shows_the_pair(models, images):
    ex = SimilarityExplorer(*models, images=images, n_images=24, batch_size=8)
    ex.wait(120)
    ex.heatmap.set_state({"selected": [1, 2]})  # a click in the browser
    want = reference(models, images, [range(0, 8), range(8, 16), range(16, 24)])
    assert ex.heatmap.selected_labels == ("blocks.1", "layer3.0")
    assert "<b>blocks.1</b> × <b>layer3.0</b>" in ex.details.value
    assert f"{want[1, 2]:.4f}" in ex.details.value
    best = RESNET_UNITS[int(np.argmax(want[1]))]
    assert f"closest to blocks.1 in B: {best}" in ex.details.value


def test_moving_back_is_served_from_the_cache(models, images):
    ex = SimilarityExplorer(*models, images=images, n_images=24, batch_size=8)
    ex.wait(120)
    first = ex.heatmap.matrix.copy()
    ex.n_images.value = 16
    ex.run()
    ex.wait(120)
    assert ex.heatmap.matrix.shape == (2, 4) and not np.allclose(ex.heatmap.matrix, first)
    ex.n_images.value = 24
    ex.run()
    assert not ex.running and ex.status_text == "from cache"
    np.testing.assert_array_equal(ex.heatmap.matrix, first)
    assert ex.cache.hits >= 1


def test_cancel_stops_after_the_current_batch(models):
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ex = SimilarityExplorer(*models, images=x, n_images=64, batch_size=8, run=False)
    # Press Cancel when the first batch is done (the observer runs in the worker).
    ex.progress.observe(lambda c: c["new"] == 1 and ex.cancel(), "value")
    ex.run()
    assert ex.wait(120)
    assert ex.status_text == "cancelled after 1/8 batches"
    assert ex.progress.value == 1 and not np.isnan(ex.heatmap.matrix).any()
    assert len(ex.cache) == 0  # a cancelled run is not cached
    assert not ex.run_button.disabled and ex.cancel_button.disabled


class GatedImages(torch.utils.data.Dataset):
    """Images that wait for a gate: the worker blocks while the test keeps working."""

    def __init__(self, n: int) -> None:
        self.x = torch.rand(n, 32, 32, 3, generator=torch.Generator().manual_seed(2))
        self.gate = threading.Event()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        assert self.gate.wait(60)
        return self.x[i].numpy()


def test_kernel_stays_responsive_while_computing(models):
    data = GatedImages(16)
    ex = SimilarityExplorer(*models, images=data, n_images=16, batch_size=8)
    assert ex.running  # run() returned while the worker waits for images
    for _ in range(600):  # the layer names and a pending matrix come before any batch
        if ex.heatmap.shape == (2, 4):
            break
        time.sleep(0.05)
    assert np.isnan(ex.heatmap.matrix).all() and ex.running
    ex.token_mode.value = "mean"  # widgets still react on the main thread
    ex.heatmap.set_state({"selected": [0, 0]})
    assert ex.heatmap.selected == [0, 0]
    data.gate.set()
    assert ex.wait(120) and ex.status_text == "done: 16 images"


def test_errors_show_in_the_widget_which_stays_usable(models, images):
    vit, res = models
    ex = SimilarityExplorer(vit, res, images=images, n_images=24, batch_size=8, run=False)
    label_b = ex.model_b.value
    ex.model_b.value = "not_a_model_xyz"
    ex.run()
    ex.wait(60)
    assert "unknown model 'not_a_model_xyz'" in ex.message.text
    assert "vitlens/<name>" in ex.message.text  # says how to fix it
    assert ex.heatmap.message  # no silent blank
    assert not ex.run_button.disabled

    ex.model_b.value = label_b
    ex.layers_b.value = "attn"  # a kind ResNets lack
    ex.run()
    ex.wait(60)
    assert "unknown layer or kind 'attn'" in ex.message.text

    ex.layers_b.value = "blocks"
    ex.run()
    ex.wait(120)
    assert ex.message.text == "" and ex.heatmap.message == ""
    assert ex.heatmap.shape == (2, 4) and np.isfinite(ex.heatmap.matrix).all()


def test_built_from_a_precomputed_result_shows_it_instantly(tmp_path):
    m = np.array([[1.0, 0.2, 0.1], [0.3, 0.9, 0.4]])
    res = SimilarityResult(m, ["blocks.0", "blocks.1"], ["stem", "layer1.0", "layer2.0"],
                           {"model_a": "vitlens/vit-cls", "model_b": "vitlens/resnet",
                            "token_mode": "flatten", "n_images": 512, "n_batches": 4})
    path = res.save(tmp_path / "cka.npz")
    ex = SimilarityExplorer.from_result(SimilarityResult.load(path), run=True)
    assert not ex.running and ex._runs._thread is None
    np.testing.assert_allclose(ex.heatmap.matrix, m, atol=1e-7)
    assert ex.heatmap.row_title == "vitlens/vit-cls layers"
    assert ex.n_images.value == 512 and ex.progress.value == ex.progress.max == 4
    # The controls show the result's settings: its layers (no selector gives exactly
    # these two), and images it does not name (shown as unknown, not as "samples").
    assert repr(ex) == ("SimilarityExplorer(vitlens/vit-cls vs vitlens/resnet, "
                        "result's: unknown, n_images=512, layers='blocks.0, blocks.1'/"
                        "'stem, layer1.0, layer2.0', token_mode='flatten')")
    ex.heatmap.set_state({"selected": [1, 1]})
    assert "0.9000" in ex.details.value
    ex.run()  # same settings: served from the cache, no model is loaded
    assert not ex.running and ex.status_text == "from cache"
