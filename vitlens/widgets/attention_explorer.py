"""``AttentionExplorer``: a ViT's attention on one image, by layer and head, with rollout."""

from __future__ import annotations

import threading
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T
from torch import nn

from ._base import LRUCache, MessageArea, model_key
from ._run_controls import RunCancelled, RunControls
from ._sources import (
    IMAGE_SOURCES,
    ModelChoices,
    display_image,
    image_source,
    read_upload,
    source_label,
)
from ._static import StaticPicture
from .attention_data import compute_attention, maps_data
from .image_attention import ImageAttentionView
from .slider_keys import SliderKeys

#: Images offered in the dropdown (the first ones of a large source).
MAX_CHOICES = 256
#: Seconds a notebook's display waits for the first maps (its static picture shows them).
REPR_WAIT_S = 120.0


class AttentionExplorer(RunControls, StaticPicture, W.VBox):
    """Attention maps of a ViT for one image: pick the image, the layer and the head.

    Shows the attention of the clicked query patch (or CLS) in the chosen head, every head
    of the layer as a grid, the attention rollout through the layers up to the chosen one,
    and the layer's heads sorted by mean attention distance (click a bar to pick a head).
    Each image's maps are computed in one forward pass, in a background thread (the kernel
    stays responsive; a newer choice supersedes the run in flight and Cancel stops it), and
    cached, so sliders and images seen before are instant. :meth:`wait` blocks until the
    maps of the current choice are shown (for scripts and tests).

    Args:
        model: A zoo name, timm name or ViT-style model object.
        images: ``"samples"``, ``"synthetic"`` or any image source; an upload adds images.
        image: Index of the first image shown.
        layer, head: Start values (``head=-1``: the mean over heads).
        charts: Show the Altair chart of heads by distance.
    """

    repr_wait_s = REPR_WAIT_S

    def __init__(self, model: str | nn.Module = "vitlens/vit-cls", images: Any = "samples", *,
                 image: int = 0, layer: int = 0, head: int = -1, charts: bool = True,
                 n_images: int | None = None, _data: dict[str, Any] | None = None) -> None:
        self._static = _data is not None
        self.models = ModelChoices(model)
        label = self.models.add(model)
        self.cache = LRUCache(64)
        self._uploads: dict[str, Any] = {}
        self.data: dict[str, Any] | None = _data
        self.source = None
        self._init_run_controls("vitlens-attention",
                                tooltip="compute the maps of the current image again")
        self._quiet = False  # the image dropdown is being refilled: no refresh per step
        self._where: tuple[str, Any] | None = None  # the query's place when views were emptied
        style = {"description_width": "60px"}
        self.model = W.Combobox(value=label, options=self.models.options(), ensure_option=False,
                                description="Model", style=style, continuous_update=False)
        self._sources: dict[str, Any] = {name: name for name in IMAGE_SOURCES}
        first = images if isinstance(images, str) and images in IMAGE_SOURCES else None
        if first is None:
            first = source_label(images)
            self._sources[first] = images
        self.n_images = n_images
        self.source_choice = W.Dropdown(options=list(self._sources), value=first,
                                        description="Source", style=style)
        self.image = W.Dropdown(options=[], description="Image", style=style)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.layer = W.IntSlider(value=layer, min=0, max=max(layer, 1), description="Layer",
                                 style=style, continuous_update=True)
        self.head = W.IntSlider(value=head, min=-1, max=max(head, 1), description="Head",
                                style=style, continuous_update=True)
        self.layer.add_class("vitlens-layer-slider")
        self.head.add_class("vitlens-head-slider")
        self.head_note = W.HTML("<span style='font-size:11px;color:#666'>−1 = mean over heads"
                                "</span>")
        self.message = MessageArea()
        self.attention = ImageAttentionView(title="attention of the query", prefix_names=["CLS"],
                                            size=240)
        self.rollout = ImageAttentionView(title="attention rollout", show_heads=False,
                                          value_label="rollout", colormap="magma", size=200)
        T.link((self.attention, "query"), (self.rollout, "query"))
        T.link((self.head, "value"), (self.attention, "head"))
        self.chart = None
        self._charts = charts
        chart_box = self._chart_box = W.VBox([])
        if charts:
            from .charts import heads_by_distance_chart, jupyter_chart, on_point_select

            self.chart = jupyter_chart(heads_by_distance_chart([[0.0]]))
            on_point_select(self.chart, "head_sel", "head", self._on_chart_head)
            chart_box.children = (self.chart,)
        self._set_source(first, show=False)
        self.source_choice.observe(lambda c: self._set_source(c["new"]), "value")
        self.model.observe(self._on_model, "value")
        self.image.observe(lambda _c: None if self._quiet else self._request(debounce=True),
                           "value")
        self.run_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.upload.observe(self._on_upload, "value")
        self.layer.observe(lambda _c: self._show_layer(), "value")
        self.head.observe(lambda _c: self._update_params(), "value")
        super().__init__([
            W.HBox([self.model, self.source_choice, self.image, self.upload]),
            W.HBox([self.layer, self.head, self.head_note]),
            W.HBox([self.run_button, self.cancel_button, self.status]),
            self.message,
            W.HBox([self.attention, W.VBox([self.rollout, chart_box])]),
            SliderKeys(),
        ])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-attention-explorer")
        if self.image.options:
            self._quiet = True
            try:
                self.image.value = self.image.options[min(image, len(self.image.options) - 1)][1]
            finally:
                self._quiet = False
        if self._static:
            self.run_button.layout.display = self.cancel_button.layout.display = "none"
        self.refresh()

    # ----- sources -----
    def _set_source(self, label: str, *, show: bool = True) -> None:
        """Offer the images of a source ("samples", "synthetic" or the one passed in).

        The first image is selected and shown. A source that cannot be read leaves no image
        of the previous source offered or drawn: the dropdown is emptied, with the error.
        """
        try:
            source = image_source(self._sources[label], self.n_images)
            names = getattr(source, "photo_names", None)
            opts = []
            for i in range(min(len(source), MAX_CHOICES)):
                name = names[i] if names is not None and i < len(names) else f"image {i}"
                opts.append((f"{i}: {name}", ("source", label, i)))
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            source, opts, failed = None, [], err
        else:
            failed = None
        self._quiet = True  # one refresh for the new list, not one per step of the dropdown
        try:
            self.source = source
            self.image.options = opts
            if opts:
                self.image.value = opts[0][1]
        finally:
            self._quiet = False
        if failed is not None:
            with self._runs.lock:
                self._runs.supersede()
                self._finish(lambda: self._show_error(failed), "failed: no image to show")
        elif show:
            self.refresh()

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        f = files[-1] if isinstance(files, list | tuple) else next(iter(files.values()))
        name = f.get("name", "upload")
        try:
            pil = read_upload(f)
        except ValueError as err:
            self.message.error(str(err))
            return
        key = ("upload", name, len(self._uploads))
        self._uploads[key] = pil
        self.image.options = [*self.image.options, (f"upload: {name}", key)]
        self.image.value = key

    # ----- compute and show -----
    def _on_model(self, _change: dict) -> None:
        self._request(debounce=True)

    def _cache_key(self, label: str, key: tuple) -> tuple:
        return (model_key(self.models.objects.get(label, label)), key)

    def _maps(self, label: str, key: tuple, source: Any,
              cancel: threading.Event | None = None) -> dict[str, Any]:
        """The (cached) maps of image ``key`` of ``source`` for model ``label``."""
        from ._sources import preprocess_one

        def work() -> dict[str, Any]:
            model = self.models.load(label)
            if cancel is not None and cancel.is_set():
                raise RunCancelled("cancelled")
            pil = self._uploads[key] if key[0] == "upload" else source[key[2]]
            x = preprocess_one(pil, model, getattr(source, "preprocessed", False)
                               and key[0] == "source")
            out = compute_attention(model, x)
            out["image"] = display_image(x[0], model)
            return out

        return self.cache.get(self._cache_key(label, key), work)

    def compute(self, key: tuple | None = None) -> dict[str, Any]:
        """The (cached) maps of an image for the current model, computed on this thread."""
        key = key if key is not None else self.image.value
        return self._maps(self.model.value.strip(), key, self.source)

    def refresh(self) -> None:
        """Show the current image's maps: at once from the cache, else computed in the
        background (the views are empty meanwhile; :meth:`wait` blocks until shown)."""
        self._request(debounce=False)

    def _request(self, *, debounce: bool) -> None:
        if self._has_static():
            self._show(self.data)
            return
        with self._runs.lock:
            key, label = self.image.value, self.model.value.strip()
            self._runs.supersede()  # whatever is in flight is for an earlier choice
            if key is None:
                self._busy = False
                if not self.message.text:
                    self.message.notice("no image to show: choose a source with images or "
                                        "upload one")
                self._empty_views("no attention: see the message above")
                self._set_status("failed: no image to show" if self.message.level == "error"
                                 else "no image to show")
                self._buttons(running=False)
                return
            if self._cache_key(label, key) in self.cache:
                self._finish(lambda: self._show(self._maps(label, key, self.source)),
                             "from cache")
                return
            self.message.clear()
            self._empty_views("computing…")
            self._begin(self._work, label, key, self.source, debounce=debounce,
                        status=f"computing {self.image.label} on {label}…")

    def _work(self, cancel: threading.Event, label: str, key: tuple, source: Any) -> None:
        self._outcome(cancel, lambda: self._maps(label, key, source, cancel), self._show, "done",
                      "failed")

    def _cancelled(self) -> None:
        self._empty_views("cancelled: press Run to compute")
        self._set_status("cancelled: nothing shown (press Run to compute)")

    def _show(self, data: dict[str, Any]) -> None:
        """Draw ``data``: each view gets its image and maps in one message."""
        # The query stays where it was (kept while the views were empty).
        where = self._where if self.data is None else self.attention._query_position()
        with self.attention.hold_sync(), self.rollout.hold_sync():
            self.message.clear()
            self.attention.message = self.rollout.message = ""
            self._chart_box.layout.display = None
            self.data = data
            n_layers, n_heads = data["maps"].shape[:2]
            with self.layer.hold_trait_notifications():
                self.layer.max = n_layers - 1
            self.head.max = n_heads - 1
            self.attention.set_data(data["image"], None)
            self.rollout.set_data(data["image"], None)
            self._show_layer(where)
        self._new_chart()

    def _empty_views(self, note: str) -> None:
        """No map of an earlier model or image stays drawn (the query's place is kept)."""
        if self.data is not None and not self.attention.empty:
            self._where = self.attention._query_position()
        self.data = None
        with self.attention.hold_sync(), self.rollout.hold_sync():
            self.attention.clear(keep_head=True)
            self.rollout.clear()
            self.attention.message = note
            self.rollout.message = "no rollout" if note.startswith("no ") else note
        self._chart_box.layout.display = "none"

    def _show_error(self, err: BaseException) -> None:
        """The error, and empty views: no map of an earlier model or image stays drawn."""
        self.message.error(err)
        self._empty_views("no attention: see the message above")
        self.rollout.message = "no rollout"

    def _static_views(self) -> list[Any]:
        return [self.attention, self.rollout]

    def _has_static(self) -> bool:
        return self._static

    def _show_layer(self, where: tuple[str, Any] | None = None) -> None:
        """Draw the slider's layer; ``where``: the query's place (default: the current one)."""
        with self._runs.lock:
            if self.data is None:
                return
            d, layer = self.data, self.layer.value
            npt = d["num_prefix_tokens"]
            labels = [f"head {h} · {v:.1f}px" for h, v in enumerate(d["distance"][layer])]
            if where is None:  # the same patch after a model change
                where = self.attention._query_position()
            with self.attention.hold_sync(), self.rollout.hold_sync():
                self.attention.prefix_names = ["CLS", "DIST", "REG"][:npt] if npt else []
                self.attention.head_labels = labels
                self.attention.title = f"block {layer}: attention of the query"
                self.attention.set_data(None, d["maps"][layer], grid=d["grid"])
                self.rollout.prefix_names = self.attention.prefix_names
                self.rollout.title = f"rollout through blocks 0–{layer}"
                self.rollout.set_data(None, d["rollout"][layer][None], grid=d["grid"])
                self.attention.query = self.attention._query_at(where)  # linked: the rollout's
            self._update_params()

    def _new_chart(self) -> None:
        """Rebuild the chart for a new image (all blocks' distances in one chart)."""
        if self.chart is None or self.data is None:
            return
        from .charts import heads_by_distance_chart

        self.chart.chart = heads_by_distance_chart(self.data["distance"], layer=self.layer.value,
                                                   head=self.head.value)

    def _update_params(self) -> None:
        """A slider moved: only the chart's params change (no rebuild)."""
        if self.chart is None:
            return
        self.chart.params.layer = self.layer.value
        self.chart.params.head = self.head.value

    def _on_chart_head(self, heads: list[int]) -> None:
        if heads:
            self.head.value = int(heads[0])

    def __repr__(self) -> str:
        shape = "none" if self.data is None else "×".join(str(s) for s in self.data["maps"].shape)
        return (f"AttentionExplorer({self.model.value}, image={self.image.label!r}, "
                f"layer={self.layer.value}, head={self.head.value}, maps={shape})")

    @classmethod
    def from_maps(cls, image: Any, maps: Any, *, patch_size: int | tuple[int, int],
                  num_prefix_tokens: int = 1, label: str = "precomputed",
                  **kwargs: Any) -> AttentionExplorer:
        """An explorer for precomputed (L, H, N, N) maps of one image, shown instantly.

        Args:
            image: (h, w, 3) picture the maps belong to.
            maps: (L, H, N, N) attention probabilities (e.g. from
                :func:`vitlens.analyses.attention.attention_maps` for one image).
            patch_size: Patch size in pixels (for the mean distances).
            num_prefix_tokens: Prefix tokens at the front of the N tokens.
        """
        data = maps_data(image, maps, patch_size=patch_size, num_prefix_tokens=num_prefix_tokens)
        obj = cls(label, [np.asarray(image)], _data=data, **kwargs)
        obj.image.disabled = obj.model.disabled = obj.upload.disabled = True
        return obj


__all__ = ["AttentionExplorer", "compute_attention"]
