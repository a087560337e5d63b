"""``SimilarityExplorer``: pick two models and watch their CKA heatmap fill in, batch by batch."""

from __future__ import annotations

import html
import threading
import warnings
from typing import Any

import ipywidgets as W
import numpy as np
from torch import nn

from ..capture import TOKEN_MODES
from ..similarity_result import SimilarityResult
from ._base import LRUCache, MessageArea, model_key
from ._sources import IMAGE_SOURCES, ModelChoices, image_source
from .heatmap import HeatmapView

#: Layer selectors offered in the dropdowns (any kind or layer name can be typed).
LAYER_CHOICES = ("blocks", "all", "attn", "mlp_hidden", "resid_mid", "norm1", "unit", "branch",
                 "stage")


def _source_size(images: Any) -> int:
    """How many images a custom source holds (512 if it cannot be read now)."""
    from ..datasets import as_images

    try:
        return max(len(as_images(images)), 4)
    except Exception:  # noqa: BLE001 - the run reports a bad source in the widget
        return 512


class SimilarityExplorer(W.VBox):
    """Minibatch CKA between every pair of layers of two models, live.

    The heatmap fills in as batches arrive, in a background thread, so the kernel stays
    responsive; Cancel stops after the current batch. Results are cached in memory, so going
    back to an earlier choice is instant. Clicking a cell shows that layer pair's details.

    Args:
        model_a, model_b: Zoo names (``"vitlens/vit-cls"``), timm names or model objects.
            ``model_b=None`` compares model A with itself.
        images: ``"samples"``, ``"synthetic"`` or any image source
            (:func:`vitlens.datasets.as_images`).
        n_images: Number of images (the slider's start value).
        layers, layers_b: Layer selectors for models A and B (``"blocks"``, ``"all"``, a kind).
        token_mode: One of :data:`vitlens.TOKEN_MODES`.
        batch_size: Images per batch (one heatmap update per batch).
        device: Torch device (CUDA when available by default).
        result: A precomputed :class:`~vitlens.SimilarityResult` to show at once.
        run: Start computing immediately (ignored with ``result``).

    Example:
        >>> vitlens.widgets.SimilarityExplorer("vitlens/vit-cls", "vitlens/resnet")
    """

    def __init__(self, model_a: str | nn.Module = "vitlens/vit-cls",
                 model_b: str | nn.Module | None = "vitlens/resnet", *, images: Any = "samples",
                 n_images: int = 64, layers: str = "blocks", layers_b: str | None = None,
                 token_mode: str = "flatten", batch_size: int = 16, device: Any = None,
                 result: SimilarityResult | None = None, run: bool = True) -> None:
        self.models = ModelChoices(model_a, model_b if model_b is not None else model_a)
        label_a = self.models.add(model_a)
        label_b = self.models.add(model_b) if model_b is not None else label_a
        self._custom_images: dict[str, Any] = {}
        img_choice = images
        if not (isinstance(images, str) and images in IMAGE_SOURCES):
            img_choice = f"custom: {getattr(images, 'name', None) or type(images).__name__}"
            self._custom_images[img_choice] = images
        self.device = device
        self.batch_size = batch_size
        self.cache = LRUCache(32)
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self.result: SimilarityResult | None = None
        self.status_text = ""

        opts = self.models.options()
        style = {"description_width": "70px"}
        self.model_a = W.Combobox(value=label_a, options=opts, description="Model A",
                                  ensure_option=False, style=style)
        self.model_b = W.Combobox(value=label_b, options=opts, description="Model B",
                                  ensure_option=False, style=style)
        self.images = W.Dropdown(options=list(IMAGE_SOURCES) + list(self._custom_images),
                                 value=img_choice, description="Images", style=style)
        most = _source_size(images) if self._custom_images else 512
        self.n_images = W.IntSlider(value=min(n_images, most), min=min(8, most), max=most, step=8,
                                    description="# images", style=style, continuous_update=False)
        self.layers_a = W.Combobox(value=layers, options=list(LAYER_CHOICES), ensure_option=False,
                                   description="Layers A", style=style)
        self.layers_b = W.Combobox(value=layers_b or layers, options=list(LAYER_CHOICES),
                                   ensure_option=False, description="Layers B", style=style)
        self.token_mode = W.Dropdown(options=list(TOKEN_MODES), value=token_mode,
                                     description="Tokens", style=style)
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Batches", style=style)
        self.status = W.HTML("")
        self.message = MessageArea()
        self.heatmap = HeatmapView(title="CKA", value_label="CKA", vmin=0.0, vmax=1.0,
                                   origin="lower", size=380)
        self.details = W.HTML("<i>Click a cell to see that layer pair.</i>")
        self.run_button.on_click(lambda _b: self.run())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.heatmap.observe(self._on_select, "selected")

        controls = W.VBox([
            W.HBox([self.model_a, self.model_b]),
            W.HBox([self.images, self.n_images]),
            W.HBox([self.layers_a, self.layers_b, self.token_mode]),
            W.HBox([self.run_button, self.cancel_button, self.progress, self.status]),
        ])
        super().__init__([controls, self.message, W.HBox([self.heatmap, self.details])])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-similarity-explorer")
        if result is not None:
            self.show_result(result)
            self.cache.put(self._key(self.settings()), result)
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
        return self._thread is not None and self._thread.is_alive()

    # ----- actions -----
    def run(self) -> None:
        """Compute the CKA for the current choices (from the cache when possible)."""
        if self.running:
            self.cancel()
            self.wait()
        s = self.settings()
        key = self._key(s)
        if key in self.cache:
            self.show_result(self.cache.get(key, lambda: None))
            self._set_status("from cache")
            return
        self.message.clear()
        self.heatmap.message = ""
        self._cancel = threading.Event()
        self.run_button.disabled, self.cancel_button.disabled = True, False
        self.progress.value = 0
        self._set_status("loading models…")
        self._thread = threading.Thread(target=self._work, args=(s, key, self._cancel),
                                        name="vitlens-cka", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Stop after the current batch; the partial matrix stays on screen."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background computation ends; True if it did within ``timeout``."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def show_result(self, result: SimilarityResult) -> None:
        """Display a (precomputed) result at once."""
        if not isinstance(result, SimilarityResult):
            msg = f"expected a SimilarityResult, got {type(result).__name__}"
            raise TypeError(msg)
        self.result = result
        a = result.meta.get("model_a", "model A")
        b = result.meta.get("model_b", a)
        self.heatmap.row_title, self.heatmap.col_title = f"{a} layers", f"{b} layers"
        self.heatmap.set_matrix(result.matrix, result.layers_a, result.layers_b)
        self.heatmap.message = ""
        n = result.meta.get("n_batches") or 1
        self.progress.max, self.progress.value = max(int(n), 1), max(int(n), 1)
        self.message.clear()
        self._set_status(f"{result.meta.get('n_images', '?')} images")
        self._on_select({"new": self.heatmap.selected})

    # ----- background work -----
    def _work(self, s: dict[str, Any], key: tuple, cancel: threading.Event) -> None:
        from ..api import CKARun

        try:
            ma = self.models.load(s["model_a"])
            same = s["model_b"] == s["model_a"]
            mb = None if same else self.models.load(s["model_b"])
            imgs = image_source(s["images"], s["n_images"], self._custom_images)
            run = CKARun(ma, imgs, mb, layers_a=s["layers_a"], layers_b=s["layers_b"],
                         token_mode=s["token_mode"], batch_size=self.batch_size,
                         device=self.device, n_images=min(s["n_images"], len(imgs)),
                         images_b=None)
            run.label_a, run.label_b = s["model_a"], s["model_a"] if same else s["model_b"]
            nb = len(run.batches)
            pending = np.full((len(run.layers_a), len(run.layers_b)), np.nan)
            self.heatmap.row_title = f"{run.label_a} layers"
            self.heatmap.col_title = f"{run.label_b} layers"
            self.heatmap.set_matrix(pending, run.layers_a, run.layers_b)
            self.progress.max = nb
            with run:
                for k, idx in enumerate(run.batches, start=1):
                    if cancel.is_set():
                        self._set_status(f"cancelled after {k - 1}/{nb} batches")
                        return
                    self._set_status(f"batch {k}/{nb}…")
                    run.step(idx)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        res = run.result(k if k < nb else None)
                    self.result = res
                    self.heatmap.set_matrix(res.matrix)
                    self.progress.value = k
                    self._on_select({"new": self.heatmap.selected})
            self.cache.put(key, res)
            self._set_status(f"done: {run.n} images")
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            self.message.error(err)
            self._set_status("failed")
            if self.result is None or self.heatmap.shape == (0, 0):
                self.heatmap.message = "no result: see the message above"
        finally:
            self.run_button.disabled, self.cancel_button.disabled = False, True

    def _set_status(self, text: str) -> None:
        self.status_text = text
        self.status.value = f"<span style='font-size:12px;color:#555'>{html.escape(text)}</span>"

    # ----- details of the selected pair -----
    def _on_select(self, change: dict) -> None:
        sel = change["new"]
        if sel is None or self.heatmap.shape == (0, 0):
            return
        m = self.heatmap.matrix.astype(np.float64)
        i, j = sel
        la, lb = self.heatmap.row_labels, self.heatmap.col_labels
        row, col = m[i], m[:, j]
        best_b = lb[int(np.nanargmax(row))] if np.isfinite(row).any() else "n/a"
        best_a = la[int(np.nanargmax(col))] if np.isfinite(col).any() else "n/a"
        v = m[i, j]
        val = "pending" if np.isnan(v) else f"{v:.4f}"
        self.details.value = (
            "<div style='font-family:sans-serif;font-size:13px;line-height:1.5;padding-left:8px'>"
            f"<b>{html.escape(la[i])}</b> × <b>{html.escape(lb[j])}</b><br>"
            f"CKA = <b class='vitlens-selected-value'>{val}</b><br>"
            f"closest to {html.escape(la[i])} in B: {html.escape(best_b)}<br>"
            f"closest to {html.escape(lb[j])} in A: {html.escape(best_a)}</div>")

    def __repr__(self) -> str:
        # Settings only: a live run's progress must not make notebook outputs differ.
        s = self.settings()
        return (f"SimilarityExplorer({s['model_a']} vs {s['model_b']}, {s['images']}, "
                f"n_images={s['n_images']}, layers={s['layers_a']!r}/{s['layers_b']!r}, "
                f"token_mode={s['token_mode']!r})")

    @classmethod
    def from_result(cls, result: SimilarityResult, **kwargs: Any) -> SimilarityExplorer:
        """An explorer showing a precomputed (or loaded) result instantly."""
        meta = result.meta
        kwargs.setdefault("token_mode", meta.get("token_mode", "flatten"))
        kwargs.setdefault("n_images", int(meta.get("n_images", 64)))
        return cls(meta.get("model_a", "vitlens/vit-cls"), meta.get("model_b"), result=result,
                   **kwargs)
