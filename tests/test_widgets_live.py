"""SimilarityExplorer, issue 12: never stale (details, controls), live (debounced) and clean."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from tiny_models import make_tiny, until

import vitlens
from vitlens.widgets import SimilarityExplorer
from vitlens.widgets._live import BackgroundRuns
from vitlens.widgets.similarity_explorer import PLACEHOLDER


@pytest.fixture(scope="module")
def models():
    return make_tiny("vit"), make_tiny("resnet"), make_tiny("vit_gap")


@pytest.fixture(scope="module")
def images():
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))



def test_details_follow_a_new_run_and_never_show_an_old_pair(models, images):
    vit, res, gap = models
    ex = SimilarityExplorer(vit, res, images=images, n_images=24, batch_size=8, auto=False)
    assert ex.wait(120)
    ex.heatmap.set_state({"selected": [1, 3]})  # a click: blocks.1 x layer4.0
    assert "layer4.0" in ex.details.value
    old = float(ex.heatmap.matrix[1, 3])
    assert f"{old:.4f}" in ex.details.value

    # Model B becomes a 2-block ViT: the old pair (a ResNet unit) must not stay on screen.
    ex.model_b.value = ex.models.add(gap)
    ex.run()
    assert ex.wait(120) and ex.status_text == "done: 24 images"
    assert ex.heatmap.col_labels == ["blocks.0", "blocks.1"]
    assert ex.heatmap.selected is None and ex.details.value == PLACEHOLDER
    assert "layer4.0" not in ex.details.value

    # Same axes, other images: the selection stays and its value is the new matrix's.
    ex.heatmap.set_state({"selected": [1, 1]})
    before = ex.details.value
    ex.n_images.value = 16
    ex.run()
    assert ex.wait(120)
    new = float(ex.heatmap.matrix[1, 1])
    assert ex.heatmap.selected == [1, 1] and f"{new:.4f}" in ex.details.value
    assert ex.details.value != before


def test_an_error_leaves_empty_views_not_the_old_matrix(models, images):
    vit, res, _ = models
    ex = SimilarityExplorer(vit, res, images=images, n_images=24, batch_size=8, auto=False)
    assert ex.wait(120)
    ex.heatmap.set_state({"selected": [0, 0]})
    ex.layers_b.value = "attn"  # a kind ResNets lack
    ex.run()
    assert ex.wait(60)
    assert "unknown layer or kind 'attn'" in ex.message.text
    assert ex.heatmap.shape == (0, 0) and ex.result is None
    assert ex.details.value == PLACEHOLDER and ex.heatmap.message


def test_from_result_shows_the_results_settings(models):
    vit, res, _ = models
    x = vitlens.datasets.synthetic("test", 16)
    result = vitlens.cka(vit, x, res, layers_a="all", layers_b="blocks", batch_size=8,
                         progress=False, cache=False)
    ex = SimilarityExplorer.from_result(result, model_a=vit, model_b=res)
    s = ex.settings()
    assert s["images"] == "synthetic" and s["n_images"] == 16
    assert s["layers_a"] == "all" and s["layers_b"] == "blocks"
    assert ex.batch_size == 8 and not ex.running
    # Run with those settings reproduces the result: it is the cached one.
    ex.run()
    assert ex.status_text == "from cache" and ex.result is result

    # Images the explorer cannot rebuild show by name; running says how to pass them.
    loaded = vitlens.SimilarityResult(result.matrix, result.layers_a, result.layers_b,
                                      dict(result.meta, images="my photos"))
    ex2 = SimilarityExplorer.from_result(loaded, model_a=vit, model_b=res, auto=False)
    assert ex2.images.value == "result's: my photos"
    ex2.n_images.value = 8
    ex2.run()
    assert ex2.wait(60)
    assert "from_result(result, images=...)" in ex2.message.text


def test_a_control_change_recomputes_without_run(models, images):
    vit, res, _ = models
    ex = SimilarityExplorer(vit, res, images=images, n_images=24, batch_size=8)
    assert ex.wait(120)
    full = ex.heatmap.matrix.copy()
    ex.n_images.value = 16  # the slider moved; nobody presses Run
    assert ex.status_text == "changed: recomputing…"  # at once, not the old count
    assert until(lambda: ex.status_text == "done: 16 images", 120), ex.status_text
    assert ex.result.meta["n_images"] == 16 and not np.allclose(ex.heatmap.matrix, full)
    # the worker may still be returning after it showed its result: let it end, so that
    # "not running" below says the cache hit started no run
    assert ex.wait(30)
    # Back to 24: the cached matrix, synchronously, with no computation.
    ex.n_images.value = 24
    assert ex.status_text == "from cache" and not ex.running
    np.testing.assert_array_equal(ex.heatmap.matrix, full)


def test_auto_off_waits_for_run(models, images):
    vit, res, _ = models
    ex = SimilarityExplorer(vit, res, images=images, n_images=24, batch_size=8, auto=False)
    assert ex.wait(120)
    ex.n_images.value = 16
    time.sleep(0.6)  # longer than the debounce
    assert not ex.running and ex.status_text == "settings changed: press Run"
    assert ex.result.meta["n_images"] == 24


class SlowImages(torch.utils.data.Dataset):
    """Images that take a while each: a run stays in flight long enough to be superseded."""

    def __init__(self, n: int, delay: float) -> None:
        self.x = torch.rand(n, 32, 32, 3, generator=torch.Generator().manual_seed(3))
        self.delay = delay

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        time.sleep(self.delay)
        return self.x[i].numpy()


def test_a_new_choice_cancels_the_run_in_flight(models):
    vit, res, _ = models
    data = SlowImages(64, 0.01)
    ex = SimilarityExplorer(vit, res, images=data, n_images=64, batch_size=8)
    assert until(lambda: ex.progress.value >= 1, 60)
    ex.token_mode.value = "mean"
    ex.n_images.value = 16  # two quick changes: one debounced run
    assert ex.wait(120)
    assert ex._runs.superseded == 1
    assert ex.status_text == "done: 16 images" and ex.result.meta["token_mode"] == "mean"
    assert (ex.progress.value, ex.progress.max) == (2, 2)
    assert len(ex.cache) == 1  # the superseded run was not cached


def test_background_runs_publish_nothing_after_being_superseded():
    runs = BackgroundRuns("test")
    shown, started = [], threading.Event()

    def slow(cancel, tag):
        started.set()
        for k in range(50):
            runs.publish(cancel, lambda k=k: shown.append((tag, k)))
            time.sleep(0.01)

    runs.start(slow, "old")
    assert started.wait(10)
    time.sleep(0.05)
    runs.start(slow, "new")
    assert runs.wait(30)
    tags = [t for t, _ in shown]
    first_new = tags.index("new")
    assert "old" not in tags[first_new:]  # nothing stale after the newer run began
    assert tags.count("new") == 50 and tags.count("old") < 50
