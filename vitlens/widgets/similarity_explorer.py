"""``SimilarityExplorer``: pick two models and watch their CKA heatmap fill in, batch by batch."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import numpy as np
from torch import nn

from .. import TOKEN_MODES
from ._base import LRUCache, MessageArea, model_key
from ._pair_details import PLACEHOLDER, pair_details
from ._run_controls import RunControls
from ._similarity_choices import (
    LAYER_CHOICES,
    UnknownImages,
    result_class,
    result_settings,
    source_size,
    split_layers,
)
from ._sources import IMAGE_SOURCES, ModelChoices, image_source, source_label
from ._static import StaticPicture
from .heatmap import HeatmapView
from .slider_keys import SliderKeys

if TYPE_CHECKING:
    from .. import SimilarityResult

#: Drawn over a matrix computed for settings other than the controls show (auto off,
#: and auto on until the new run's first update).
PREVIOUS = "previous settings: press Run for these"
RECOMPUTING = "previous settings: recomputing…"
#: Drawn over the empty view left by a Cancel before the current settings had any batch.
NOT_COMPUTED = "not computed: press Run"
#: Colour scales: the fixed CKA range, or the range of the matrix shown.
SCALES = (("0 to 1", "fixed"), ("data range", "data"))


class SimilarityExplorer(RunControls, StaticPicture, W.VBox):
    """Minibatch CKA between every pair of layers of two models, live.

    Changing a control recomputes by itself (debounced; the run in flight is cancelled)
    while "auto" is on, and a choice already computed is shown at once from an in-memory
    cache. The heatmap fills in as batches arrive, in a background thread, so the kernel
    stays responsive; Cancel stops after the current batch. Clicking a cell shows that layer
    pair's details, always read from the matrix on screen.

    Args:
        model_a, model_b: Zoo names (``"vitlens/vit-cls"``), timm names or model objects.
            ``model_b=None`` compares model A with itself.
        images: ``"samples"``, ``"synthetic"`` or any image source
            (:func:`vitlens.datasets.as_images`).
        n_images: Number of images (the slider's start value).
        layers, layers_b: Layer selectors for models A and B (``"blocks"``, ``"all"``, a kind,
            or layer names separated by commas).
        token_mode: One of :data:`vitlens.TOKEN_MODES`.
        batch_size: Images per batch (one heatmap update per batch).
        device: Torch device (CUDA when available by default).
        result: A precomputed :class:`~vitlens.SimilarityResult` to show at once.
        run: Start computing immediately (ignored with ``result``).
        auto: Recompute when a control changes (the "auto" switch's start value).

    Example:
        >>> vitlens.widgets.SimilarityExplorer("vitlens/vit-cls", "vitlens/resnet")
    """

    def __init__(self, model_a: str | nn.Module = "vitlens/vit-cls",
                 model_b: str | nn.Module | None = "vitlens/resnet", *, images: Any = "samples",
                 n_images: int = 64, layers: str = "blocks", layers_b: str | None = None,
                 token_mode: str = "flatten", batch_size: int = 16, device: Any = None,
                 result: SimilarityResult | None = None, run: bool = True,
                 auto: bool = True) -> None:
        self.models = ModelChoices(model_a, model_b if model_b is not None else model_a)
        label_a = self.models.add(model_a)
        label_b = self.models.add(model_b) if model_b is not None else label_a
        self._custom_images: dict[str, Any] = {}
        img_choice = images
        if isinstance(images, UnknownImages):
            img_choice = images.label
            self._custom_images[img_choice] = images
        elif not (isinstance(images, str) and images in IMAGE_SOURCES):
            img_choice = source_label(images)
            self._custom_images[img_choice] = images
        self.device = device
        self.batch_size = batch_size
        self.cache = LRUCache(32)
        self._init_run_controls("vitlens-cka", primary=True)
        self.result: SimilarityResult | None = None
        self._shown: tuple | None = None  # the settings key of the matrix on screen
        self._owner: threading.Event | None = None  # the run that owns Run/Cancel and status
        self._failed: tuple | None = None  # the settings key of the error shown, if any

        opts = self.models.options()
        style = {"description_width": "70px"}
        combo = {"ensure_option": False, "style": style, "continuous_update": False}
        self.model_a = W.Combobox(value=label_a, options=opts, description="Model A", **combo)
        self.model_b = W.Combobox(value=label_b, options=opts, description="Model B", **combo)
        self.images = W.Dropdown(options=list(IMAGE_SOURCES) + list(self._custom_images),
                                 value=img_choice, description="Images", style=style)
        most = max(source_size(images), 4) if self._custom_images and not isinstance(
            images, UnknownImages) else max(512, int(n_images))
        self.n_images = W.IntSlider(value=min(n_images, most), min=min(8, most), max=most, step=8,
                                    description="# images", style=style, continuous_update=False)
        self.n_images.add_class("vitlens-n-images")
        self.layers_a = W.Combobox(value=layers, options=list(LAYER_CHOICES),
                                   description="Layers A", **combo)
        self.layers_b = W.Combobox(value=layers_b or layers, options=list(LAYER_CHOICES),
                                   description="Layers B", **combo)
        self.token_mode = W.Dropdown(options=list(TOKEN_MODES), value=token_mode,
                                     description="Tokens", style=style)
        self.scale = W.Dropdown(options=list(SCALES), value="fixed", description="Colours",
                                style=style)
        self.auto = W.Checkbox(value=auto, description="auto", indent=False,
                               tooltip="recompute when a control changes",
                               layout=W.Layout(width="70px"))
        self.auto.add_class("vitlens-auto")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Batches", style=style)
        self.message = MessageArea()
        self.heatmap = HeatmapView(title="CKA", value_label="CKA", vmin=0.0, vmax=1.0,
                                   origin="lower", size=380)
        self.details = W.HTML(PLACEHOLDER)
        self.details.add_class("vitlens-details")
        self.run_button.on_click(lambda _b: self.run())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.heatmap.observe(lambda _c: self._show_details(), "selected")
        for control in (self.model_a, self.model_b, self.images, self.n_images, self.layers_a,
                        self.layers_b, self.token_mode):
            control.observe(self._on_control, "value")
        self.scale.observe(lambda _c: self._apply_scale(), "value")

        controls = W.VBox([
            W.HBox([self.model_a, self.model_b]),
            W.HBox([self.images, self.n_images]),
            W.HBox([self.layers_a, self.layers_b, self.token_mode]),
            W.HBox([self.auto, self.run_button, self.cancel_button, self.progress, self.status]),
            W.HBox([self.scale]),
        ])
        super().__init__([controls, self.message, W.HBox([self.heatmap, self.details]),
                          SliderKeys()])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-similarity-explorer")
        if result is not None:
            self.show_result(result)
            self.cache.put(self._shown, result)
        elif run:
            self.run()

    # ----- state -----
    def settings(self) -> dict[str, Any]:
        """The current choices, as passed to the computation."""
        return {"model_a": self.model_a.value.strip(), "model_b": self.model_b.value.strip(),
                "images": self.images.value, "n_images": int(self.n_images.value),
                "layers_a": self.layers_a.value.strip(), "layers_b": self.layers_b.value.strip(),
                "token_mode": self.token_mode.value}

    def _key(self, s: dict[str, Any]) -> tuple:
        a = model_key(self.models.objects.get(s["model_a"], s["model_a"]))
        b = model_key(self.models.objects.get(s["model_b"], s["model_b"]))
        return (a, b, s["images"], s["n_images"], s["layers_a"], s["layers_b"], s["token_mode"],
                self.batch_size)

    @property
    def running(self) -> bool:
        """A run is in flight (a debounced one still waiting to start does not count)."""
        return self._runs.running

    def _stale(self) -> bool:
        """The matrix on screen was computed for other settings than the controls show."""
        return self._shown is not None and self._shown != self._key(self.settings())

    # ----- actions -----
    def _on_control(self, _change: dict) -> None:
        """A control changed: the cached answer at once, else a (debounced) recompute.

        With "auto" off, a run in flight goes on (and is cached), but the matrix is marked
        as the previous settings' and the status keeps asking for Run.
        """
        with self._runs.lock:
            if self._key(self.settings()) in self.cache:
                self.run()
            elif self.auto.value:
                self._runs.supersede()  # the run in flight is for old settings: stop it now
                self._owner = None  # ... and reports nothing: Cancel now stops the pending run
                self.run_button.disabled = self.cancel_button.disabled = False  # either may come
                self._set_status("changed: recomputing…")
                self._mark_stale()
                self._runs.later(self.run)
            else:
                self._set_status("settings changed: press Run")
                self._mark_stale()

    def _mark_stale(self) -> None:
        """Say over the matrix, and over an error, whether it belongs to earlier settings."""
        if self._stale():
            self.heatmap.message = RECOMPUTING if self.auto.value else PREVIOUS
        elif self.heatmap.message in (PREVIOUS, RECOMPUTING):
            self.heatmap.message = ""
        if self._failed is not None:
            self.message.mark_previous(self._failed != self._key(self.settings()))

    def run(self) -> None:
        """Compute the CKA for the current choices (from the cache when possible).

        A run in flight is cancelled first; the new one starts when it has stopped.
        """
        s = self.settings()
        key = self._key(s)
        if key in self.cache:
            with self._runs.lock:
                self._runs.supersede()
                self._owner = None
                self.show_result(self.cache.get(key, lambda: None))
                self._set_status("from cache")
                self._buttons(running=False)
            return
        with self._runs.lock:
            self.message.clear()
            self._failed = None
            self.heatmap.message = RECOMPUTING if self._stale() else ""
            self._buttons(running=True)
            self.progress.value = 0
            self._set_status("loading models…")
            self._owner = self._runs.start(self._work, s, key, on_skip=self._release)

    def cancel(self) -> None:
        """Stop after the current batch; the partial matrix stays on screen.

        A matrix of earlier settings does not: cancelling before the current settings had
        a batch (during the debounce, or while models load) leaves an empty view, so
        nothing on screen belongs to settings the controls no longer show.
        """
        with self._runs.lock:
            stopped = self._runs.cancel()
            if self._owner is None and stopped:  # a debounced run that never started
                self._report_cancel("cancelled")

    def show_result(self, result: SimilarityResult) -> None:
        """Display a (precomputed) result at once."""
        if not isinstance(result, result_class()):
            msg = f"expected a SimilarityResult, got {type(result).__name__}"
            raise TypeError(msg)
        self.result = result
        self._shown = self._key(self.settings())
        a = result.meta.get("model_a", "model A")
        b = result.meta.get("model_b", a)
        self._new_axes(f"{a} layers", f"{b} layers", list(result.layers_a), list(result.layers_b))
        self.heatmap.set_matrix(result.matrix, result.layers_a, result.layers_b)
        self.heatmap.message = ""
        n = result.meta.get("n_batches") or 1
        self.progress.max, self.progress.value = max(int(n), 1), max(int(n), 1)
        self.message.clear()
        self._failed = None
        self._set_status(f"{result.meta.get('n_images', '?')} images")
        self._apply_scale()
        self._show_details()

    def _new_axes(self, row_title: str, col_title: str, rows: list[str], cols: list[str]) -> None:
        """New axes: a selection made on other layers no longer applies, so it is cleared."""
        if rows != list(self.heatmap.row_labels) or cols != list(self.heatmap.col_labels):
            self.heatmap.selected = None
        self.heatmap.row_title, self.heatmap.col_title = row_title, col_title

    def _apply_scale(self) -> None:
        """The colour scale: 0 to 1, or the matrix's own range (the legend shows it)."""
        data = self.scale.value == "data"
        with self.heatmap.hold_sync():
            self.heatmap.vmin, self.heatmap.vmax = (None, None) if data else (0.0, 1.0)
            self.heatmap.value_label = "CKA (data range)" if data else "CKA"

    # ----- background work -----
    def _images_for(self, s: dict[str, Any]) -> Any:
        chosen = self._custom_images.get(s["images"])
        if isinstance(chosen, UnknownImages):
            raise ValueError(chosen.message)
        return image_source(s["images"], s["n_images"], self._custom_images)

    def _work(self, cancel: threading.Event, s: dict[str, Any], key: tuple) -> None:
        from ..api import cka_stream
        from ..models.layers import layer_catalog

        runs, done, nb = self._runs, 0, 0
        try:
            ma = self.models.load(s["model_a"])
            same = s["model_b"] == s["model_a"]
            mb = ma if same else self.models.load(s["model_b"])
            imgs = self._images_for(s)
            la, lb = split_layers(s["layers_a"]), split_layers(s["layers_b"])
            rows, cols = layer_catalog(ma).select(la), layer_catalog(mb).select(lb)
            label_b = s["model_a"] if same else s["model_b"]

            def begin() -> None:  # the axes and an all-pending matrix, before any batch
                self._new_axes(f"{s['model_a']} layers", f"{label_b} layers", rows, cols)
                self.heatmap.set_matrix(np.full((len(rows), len(cols)), np.nan), rows, cols)
                self.result, self._shown = None, key
                self.heatmap.message = ""
                self._mark_stale()
                self._show_details()

            runs.publish(cancel, begin)
            stream = cka_stream(ma, imgs, None if same else mb, layers_a=la, layers_b=lb,
                                token_mode=s["token_mode"], batch_size=self.batch_size,
                                device=self.device, progress=False, cache=False,
                                n_images=min(s["n_images"], len(imgs)))
            try:
                for res in stream:
                    if cancel.is_set():
                        break
                    nb = int(res.meta.get("n_batches", 1))
                    done = int(res.meta.get("partial", {}).get("batches_done", nb))

                    def show(res: Any = res, done: int = done, nb: int = nb) -> None:
                        self.result, self._shown = res, key
                        self.heatmap.set_matrix(res.matrix, res.layers_a, res.layers_b)
                        self.progress.max, self.progress.value = nb, done
                        if not self._stale():  # else the status asks for Run (auto off)
                            self._set_status(f"batch {done}/{nb}…" if done < nb else
                                             f"done: {res.meta['n_images']} images")
                        self._show_details()

                    runs.publish(cancel, show)
            finally:
                stream.close()
            if not cancel.is_set() and self.result is not None and done == nb:
                self.cache.put(key, self.result)
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            runs.publish(cancel, lambda err=err: self._show_error(err, key))
        finally:
            self._release(cancel, f"cancelled after {done}/{nb or '?'} batches")

    def _release(self, cancel: threading.Event, text: str = "cancelled before it started"
                 ) -> None:
        """A run has ended (or was cancelled before it began): if it still owns Run/Cancel
        and the status, hand them back, saying so if it was cancelled."""
        with self._runs.lock:
            if self._owner is cancel:
                self._owner = None
                if cancel.is_set():
                    self._report_cancel(text)
                self._buttons(running=False)

    def _report_cancel(self, text: str) -> None:
        """After a Cancel: Run again, and an empty view if the matrix was of earlier settings."""
        self._buttons(running=False)
        if self._stale() or self._shown is None:  # earlier settings' matrix, or none at all
            self._empty(NOT_COMPUTED)
            text += ": these settings are not computed, press Run"
        self._set_status(text)

    def _show_error(self, err: BaseException, key: tuple | None = None) -> None:
        """The error (of the settings ``key``), and empty views: nothing left from an earlier
        choice. Once the controls leave those settings, the error says it is theirs."""
        self.message.error(err)
        self._failed = key
        self._set_status("failed")
        self._empty("no result: see the message above")
        self.message.mark_previous(key is not None and key != self._key(self.settings()))

    def _empty(self, note: str) -> None:
        """No result: an empty heatmap (no layer names or axis titles) saying ``note``."""
        self.result, self._shown = None, None
        with self.heatmap.hold_sync():
            self.heatmap.clear()
            self.heatmap.row_title = self.heatmap.col_title = ""
            self.heatmap.message = note
        self.progress.value = 0
        self._show_details()

    # ----- details of the selected pair -----
    def _show_details(self) -> None:
        """The selected pair, read from the matrix on screen (a placeholder if none)."""
        sel = self.heatmap.selected
        if sel is None or self.heatmap.shape == (0, 0):
            self.details.value = PLACEHOLDER
            return
        self.details.value = pair_details(self.heatmap.matrix, self.heatmap.row_labels,
                                          self.heatmap.col_labels, *sel)

    def _static_views(self) -> list[Any]:
        return [self.heatmap]

    def __repr__(self) -> str:
        # Settings only: a live run's progress must not make notebook outputs differ.
        s = self.settings()
        return (f"SimilarityExplorer({s['model_a']} vs {s['model_b']}, {s['images']}, "
                f"n_images={s['n_images']}, layers={s['layers_a']!r}/{s['layers_b']!r}, "
                f"token_mode={s['token_mode']!r})")

    @classmethod
    def from_result(cls, result: SimilarityResult, *, model_a: str | nn.Module | None = None,
                    model_b: str | nn.Module | None = None, images: Any = None,
                    **kwargs: Any) -> SimilarityExplorer:
        """An explorer showing a precomputed (or loaded) result instantly.

        The controls show the result's settings (models, images, number of images, layers,
        token mode, batch size), so changing one recomputes from exactly there.

        Args:
            result: The result to show.
            model_a, model_b: The model objects the result came from (by default the names
                in the result, e.g. ``"vitlens/vit-cls"``).
            images: The image source the result was computed on. By default it is read from
                the result (``"synthetic"`` and ``"samples"`` are recognised); other sources
                show by name and must be passed here to recompute.
        """
        a, b, kwargs = result_settings(result, model_a, model_b, images, kwargs)
        return cls(a, b, result=result, **kwargs)
