"""SimilarityExplorer and HeatmapView never leave an earlier state's values looking current.

Cancel during the debounce or before the first batch, an old run finishing with "auto" off,
and a selection when the heatmap's labels change. Runs are held at known points with
gated images (the worker blocks on an event) or a gated model load, never with timing.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from tiny_models import until

import vitlens
from vitlens.widgets import ResidualExplorer, SimilarityExplorer
from vitlens.widgets._live import BackgroundRuns
from vitlens.widgets.heatmap import HeatmapView
from vitlens.widgets.similarity_explorer import NOT_COMPUTED, PLACEHOLDER, PREVIOUS, RECOMPUTING

torch.set_num_threads(1)

A, B, B2 = "vitlens/vit-cls", "vitlens/resnet", "vitlens/vit-gap"


class GatedSynthetic(torch.utils.data.Dataset):
    """vitlens's synthetic images; from ``free`` on, each waits for :attr:`gate`."""

    def __init__(self, n: int = 16, free: int = 8) -> None:
        self.data = vitlens.datasets.synthetic("test", n)
        self.free = free
        self.gate = threading.Event()

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        if i >= self.free:
            assert self.gate.wait(60)
        return self.data[i]



def _assert_empty_and_idle(ex: SimilarityExplorer) -> None:
    """Nothing of earlier settings on screen, and the buttons ready for Run."""
    assert not ex.running and not ex._runs.pending
    assert not ex.run_button.disabled and ex.cancel_button.disabled
    assert ex.result is None
    hm = ex.heatmap
    assert hm.shape == (0, 0) and hm.row_labels == [] and hm.col_labels == []
    assert hm.row_title == "" and hm.col_title == "" and hm.message == NOT_COMPUTED
    assert hm.selected is None and ex.details.value == PLACEHOLDER
    assert ex.progress.value == 0


def test_cancel_during_the_debounce_resets_the_buttons_and_shows_nothing_old():
    data = GatedSynthetic()
    ex = SimilarityExplorer(A, B, images=data, n_images=16, batch_size=8)
    ex._runs.debounce = 30.0  # a wide window: the Cancel surely lands inside it
    try:
        assert until(lambda: ex.progress.value == 1)  # run A in flight, batch 1/2 shown
        assert ex.running and ex.heatmap.col_title == f"{B} layers"
        ex.heatmap.set_state({"selected": [0, 0]})

        ex.model_b.value = B2  # as the browser would, with auto on
        assert ex.status_text == "changed: recomputing…" and ex._runs.pending
        assert ex.heatmap.message == RECOMPUTING  # the matrix still up is marked as old
        assert not ex.cancel_button.disabled
        ex.cancel_button.click()  # within the debounce
        data.gate.set()
        assert ex.wait(60)

        assert ex.status_text.startswith("cancelled"), ex.status_text
        _assert_empty_and_idle(ex)
        assert len(ex.cache) == 0  # neither A (superseded) nor B (never ran)

        ex.run_button.click()  # Run works again, for the controls' settings
        assert ex.wait(120) and ex.status_text == "done: 16 images"
        assert ex.result.meta["model_b"] == B2 and ex.heatmap.col_title == f"{B2} layers"
        assert ex.heatmap.message == ""
    finally:
        data.gate.set()
        ex._runs.shutdown(60)


def test_cancel_before_the_first_batch_leaves_no_matrix_of_the_previous_settings(monkeypatch):
    ex = SimilarityExplorer(A, B, images="synthetic", n_images=16, batch_size=8)
    assert ex.wait(120) and ex.status_text == "done: 16 images"
    ex.heatmap.set_state({"selected": [1, 2]})
    loading, gate = threading.Event(), threading.Event()
    load = ex.models.load

    def slow_load(label: str):  # model B2 takes a while to load
        if label == B2:
            loading.set()
            assert gate.wait(60)
        return load(label)

    monkeypatch.setattr(ex.models, "load", slow_load)
    try:
        ex.model_b.value = B2
        assert loading.wait(10) and ex.status_text == "loading models…"
        assert ex.heatmap.message == RECOMPUTING  # A's matrix, marked, until B2's first update
        ex.cancel_button.click()
        gate.set()
        assert ex.wait(60)
        assert ex.status_text.startswith("cancelled after 0/? batches"), ex.status_text
        _assert_empty_and_idle(ex)
        assert len(ex.cache) == 1  # only A's complete result

        ex.model_b.value = B  # back to A's settings: its cached matrix, current again
        assert ex.status_text == "from cache" and ex.result.meta["model_b"] == B
        assert ex.heatmap.message == "" and ex.heatmap.col_title == f"{B} layers"
    finally:
        gate.set()
        ex._runs.shutdown(60)


def test_with_auto_off_an_old_run_finishing_does_not_claim_to_be_current():
    data = GatedSynthetic()
    ex = SimilarityExplorer(A, B, images=data, n_images=16, batch_size=8, auto=False)
    try:
        assert until(lambda: ex.progress.value == 1)
        ex.model_b.value = B2
        assert ex.status_text == "settings changed: press Run"
        assert ex.heatmap.message == PREVIOUS
        data.gate.set()  # the old run goes on to its end
        assert ex.wait(120)
        assert ex.status_text == "settings changed: press Run"  # not "done: 16 images"
        assert ex.heatmap.message == PREVIOUS  # the ResNet matrix is marked as the old one
        assert ex.result.meta["model_b"] == B and ex.heatmap.col_title == f"{B} layers"
        assert not ex.run_button.disabled and ex.cancel_button.disabled
        assert len(ex.cache) == 1  # the old run completed: kept for its own settings

        ex.run_button.click()
        assert ex.wait(120) and ex.status_text == "done: 16 images"
        assert ex.result.meta["model_b"] == B2 and ex.heatmap.message == ""

        ex.model_b.value = B  # the old run's result, from the cache, current again
        assert ex.status_text == "from cache" and ex.heatmap.message == ""
        assert ex.result.meta["model_b"] == B
    finally:
        data.gate.set()
        ex._runs.shutdown(60)


def test_with_auto_off_an_error_of_earlier_settings_says_so():
    from vitlens.widgets._base import PREVIOUS_MESSAGE

    ex = SimilarityExplorer(A, B, images="synthetic", n_images=8, batch_size=8, auto=False,
                            layers="no-such-layer", layers_b="blocks", run=False)
    try:
        ex.run_button.click()
        assert ex.wait(60) and ex.status_text == "failed"
        assert ex.message.level == "error" and "no-such-layer" in ex.message.text
        assert PREVIOUS_MESSAGE not in ex.message.value  # the error is the controls' own

        ex.layers_a.value = "blocks"  # auto off: nothing runs, the error is now of the past
        assert ex.status_text == "settings changed: press Run" and not ex.running
        assert PREVIOUS_MESSAGE in ex.message.value and "no-such-layer" in ex.message.value
        assert "vitlens-error" not in ex.message.value  # no longer styled as current

        ex.layers_a.value = "no-such-layer"  # back to the failing settings: the error is theirs
        assert PREVIOUS_MESSAGE not in ex.message.value and "vitlens-error" in ex.message.value

        ex.layers_a.value = "blocks"
        ex.run_button.click()
        assert ex.wait(120) and ex.status_text == "done: 8 images"
        assert ex.message.value == "" and not ex.message.previous
    finally:
        ex._runs.shutdown(60)


def test_a_debounced_call_cancelled_while_it_waits_for_the_lock_never_runs():
    runs = BackgroundRuns("test", debounce=0.05)
    called = []
    with runs.lock:  # e.g. a worker publishing: the timer fires meanwhile and waits
        runs.later(lambda: called.append(1))
        time.sleep(0.3)
        assert runs.cancel()  # it stopped a pending call: the caller must report it
    time.sleep(0.3)
    assert called == [] and not runs.pending and runs.wait(5)
    assert not runs.cancel()  # nothing left to stop


def test_heatmap_selection_follows_its_labels():
    view = HeatmapView(np.arange(6.0).reshape(2, 3), row_labels=["a", "b"],
                       col_labels=["x", "y", "z"])
    view.set_state({"selected": [1, 2]})
    assert view.selected_labels == ("b", "z") and view.selected_value == 5.0

    view.set_matrix(np.arange(6.0).reshape(2, 3) + 10)  # same labels: same cell
    assert view.selected == [1, 2] and view.selected_value == 15.0

    view.set_matrix([[0.0, 1.0], [2.0, 3.0]], ["a", "b"], ["x", "z"])  # "y" filtered out
    assert view.selected == [1, 1] and view.selected_labels == ("b", "z")
    assert view.selected_value == 3.0

    view.set_matrix([[0.0, 1.0], [2.0, 3.0]], ["a", "b"], ["x", "y"])  # no "z": no pair
    assert view.selected is None

    view.set_state({"selected": [0, 1]})
    view.set_matrix([[0.0, 1.0, 2.0]], ["a"], ["y", "q", "y"])  # "y" twice: ambiguous
    assert view.selected is None

    view.set_state({"selected": [0, 1]})
    view.clear()
    assert view.selected is None and view.row_labels == [] and view.col_labels == []


def test_residual_branch_filter_keeps_the_clicked_pair_or_none():
    ex = ResidualExplorer(A, images="synthetic", charts=False)
    assert ex.wait(120)
    cols = list(ex.heatmap.col_labels)
    j = cols.index("blocks.1.mlp")
    ex.heatmap.set_state({"selected": [0, j]})
    value = ex.heatmap.selected_value
    assert ex.heatmap.selected_labels == ("CLS", "blocks.1.mlp")

    ex.kind.value = "attn"  # the pair's column is filtered out: no selection, not another pair
    assert ex.wait(60)
    assert ex.heatmap.selected is None

    ex.kind.value = "all"
    assert ex.wait(60)
    ex.heatmap.set_state({"selected": [0, j]})
    ex.kind.value = "mlp"  # the pair is still there, at a new index
    assert ex.wait(60)
    assert ex.heatmap.selected_labels == ("CLS", "blocks.1.mlp")
    assert ex.heatmap.selected_value == pytest.approx(value)


def test_run_cancelled_while_it_waits_for_the_old_one_hands_the_buttons_back():
    """Run A in flight -> a control change (auto on) -> Run -> Cancel before the new run's
    thread got past A's last batch: the new run never starts, and the buttons and status
    must not stay with it (review: Run stayed disabled and Cancel did nothing for good)."""
    data = GatedSynthetic()
    ex = SimilarityExplorer(A, B, images=data, n_images=16, batch_size=8)
    ex._runs.debounce = 30.0  # the control change's own run never fires in this test
    try:
        assert until(lambda: ex.progress.value == 1)  # run A held inside its second batch
        ex.model_b.value = B2
        ex.run_button.click()  # run B: its thread waits for A to end
        assert ex.run_button.disabled and not ex.cancel_button.disabled
        ex.cancel_button.click()  # B is cancelled before its work begins
        data.gate.set()
        assert ex.wait(60)
        assert until(lambda: not ex.run_button.disabled)
        _assert_empty_and_idle(ex)
        assert ex.status_text.startswith("cancelled before it started")
        assert "press Run" in ex.status_text
        ex.run_button.click()  # and Run works again
        assert ex.wait(120) and ex.result is not None
        assert ex.result.meta["model_b"] == B2 and ex.status_text == "done: 16 images"
    finally:
        data.gate.set()
        ex._runs.shutdown(timeout=60)
