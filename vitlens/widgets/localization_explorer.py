"""``LocalizationExplorer``: click a token, see its CKA with every input patch (Fig 9, 10)."""

from __future__ import annotations

import html
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
from torch import nn

from ._base import LRUCache, MessageArea, model_key
from ._run_controls import CancellableImages, RunControls
from ._sources import ModelChoices, display_image, image_source, preprocess_one
from ._static import StaticPicture
from .image_attention import ImageAttentionView
from .slider_keys import SliderKeys

#: Seconds a notebook's display waits for the first map (its static picture shows it).
REPR_WAIT_S = 300.0


def _as_values(result: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """(1, gh*gw, gh*gw) values from a LocalizationResult (missing tokens are NaN rows)."""
    maps = np.asarray(result.maps, dtype=np.float64)  # (P, gh, gw)
    gh, gw = int(maps.shape[1]), int(maps.shape[2])
    full = np.full((gh * gw, gh * gw), np.nan)
    for k, (r, c) in enumerate(np.asarray(result.positions).reshape(-1, 2)):
        full[int(r) * gw + int(c)] = maps[k].reshape(-1)
    return full[None], (gh, gw)


class LocalizationExplorer(RunControls, StaticPicture, W.VBox):
    """Spatial localization: how much a token of a layer still describes its own patch.

    For the token you click on the grid, the overlay shows its CKA across images with the raw
    input patch at every position (:func:`vitlens.analyses.localization.localization`).
    The layer slider moves through the chosen layers; each layer is computed once and cached,
    so a layer seen before shows at once. A new layer is computed in a background thread
    (debounced: a drag computes only where it stops; a newer choice supersedes the run in
    flight and Cancel stops it after its current batch), with the view empty meanwhile.
    :meth:`wait` blocks until the current layer is shown (for scripts and tests).

    Args:
        model: A zoo name, timm name or model object.
        images: ``"synthetic"``, ``"samples"`` or any image source.
        layers: Layer selector (``"blocks"``, a kind, or names) for the slider.
        layer: Start position on the slider (default: the last layer).
        n_images: Images used for the CKA.
        results: Precomputed :class:`~vitlens.analyses.localization.LocalizationResult`
            objects (a list, or a mapping by layer name), shown without computing. When the
            model can be loaded, the slider still moves through all of ``layers`` (the
            other layers are computed on ``images`` when reached).
    """

    repr_wait_s = REPR_WAIT_S

    def __init__(self, model: str | nn.Module = "vitlens/vit-cls", images: Any = "synthetic", *,
                 layers: str | Sequence[str] = "blocks", layer: int | None = None,
                 n_images: int = 64, batch_size: int = 32, device: Any = None,
                 results: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        self.models = ModelChoices(model)
        self._label = self.models.add(model)
        self.n_images, self.batch_size, self.device = n_images, batch_size, device
        self.cache = LRUCache(64)
        self.images = images
        self._bg: np.ndarray | None = None
        self._start: int | None = None
        self.layer_names: list[str] = []
        self._init_run_controls("vitlens-localization", tooltip="compute the current layer again")
        self._where: tuple[str, Any] | None = None  # the clicked token's place, kept
        style = {"description_width": "60px"}
        self._spec = layers
        self.layers = W.Combobox(value=layers if isinstance(layers, str) else ", ".join(layers),
                                 options=self._layer_choices(), ensure_option=False,
                                 description="Layers", style=style, continuous_update=False)
        self.layer = W.IntSlider(value=0, min=0, max=1, description="Layer", style=style)
        self.layer.add_class("vitlens-layer-slider")
        self.layer_label = W.HTML("")
        self.message = MessageArea()
        self.view = ImageAttentionView(title="CKA of the clicked token with each input patch",
                                       value_label="CKA", show_heads=False, colormap="viridis",
                                       size=260)
        self.summary = W.HTML("")
        if results is not None:
            self._seed(results)
        else:
            self._set_layers(layers)
        self.layers.observe(lambda c: self._set_layers(_split(c["new"])), "value")
        self.layer.observe(lambda _c: self._request(debounce=True), "value")
        self.run_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        super().__init__([W.HBox([self.layers, self.layer, self.layer_label]),
                          W.HBox([self.run_button, self.cancel_button, self.status]),
                          self.message, W.HBox([self.view, self.summary]), SliderKeys()])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-localization-explorer")
        if self.layer_names:
            start = self._start if layer is None and self._start is not None else \
                len(self.layer_names) - 1 if layer is None else layer
            self.layer.value = min(max(start, 0), len(self.layer_names) - 1)
        self.refresh()

    def _layer_choices(self) -> list[str]:
        """"blocks", "all" and the layer kinds this model has (all of them if not loadable)."""
        from ..models.layers import layer_catalog

        try:
            kinds = layer_catalog(self.models.load(self._label)).kinds
        except Exception:  # noqa: BLE001 - the computation reports an unloadable model
            return ["blocks", "all"]
        return ["blocks", "all", *kinds]

    def _seed(self, results: Sequence[Any] | Mapping[str, Any]) -> None:
        items = list(results.items()) if isinstance(results, Mapping) else \
            [(r.meta.get("layer", f"layer {i}"), r) for i, r in enumerate(results)]
        seeded = [name for name, _ in items]
        self.n_images = int(items[0][1].meta.get("n_images", self.n_images)) if items else 0
        for name, res in items:
            self.cache.put(self._key(name), res)
        names = seeded
        try:  # the model's layers too, so the slider moves (the seeded ones are cached)
            from ..models.layers import layer_catalog

            cat = layer_catalog(self.models.load(self._label))
            chosen = set(cat.select(_split(self.layers.value))) | set(seeded)
            names = [n for n in cat.names if n in chosen]
            names += [n for n in seeded if n not in names]
        except Exception:  # noqa: BLE001 - only the precomputed layers can be shown
            self.layers.disabled = True
            self.layers.tooltip = "the model cannot be loaded here"
        self.layer_names = names
        self._start = names.index(seeded[-1]) if seeded else None
        self.layer.max = max(len(names) - 1, 0)

    def _key(self, layer: str) -> tuple:
        return (model_key(self.models.objects.get(self._label, self._label)), layer,
                self.n_images)

    def _set_layers(self, spec: str | Sequence[str]) -> None:
        from ..models.layers import layer_catalog

        try:
            if isinstance(spec, str) and not spec.strip():
                msg = "no layers chosen: type 'blocks', 'all', a kind or a layer name"
                raise ValueError(msg)
            model = self.models.load(self._label)
            names = layer_catalog(model).select(spec)
        except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
            # No layer of the previous spec stays reachable: the slider has none until the
            # spec is fixed, and nothing of the old spec is drawn.
            with self._runs.lock:
                self._runs.supersede()
                self.layer_names = []
                self.layer.disabled = True
                self.layer_label.value = "<i>no layers</i>"
                self._finish(lambda err=err: self._show_error(err), "failed: fix the layers")
            return
        with self._runs.lock:
            self.message.clear()
            self.layer_names = names
            self.layer.disabled = False
            with self.layer.hold_trait_notifications():  # one refresh below, not one per step
                self.layer.max = max(len(names) - 1, 0)
                if self.layer.value > self.layer.max:
                    self.layer.value = self.layer.max
            if hasattr(self, "children") and self.children:
                self.refresh()

    @property
    def current_layer(self) -> str | None:
        if not self.layer_names:
            return None
        return self.layer_names[min(self.layer.value, len(self.layer_names) - 1)]

    def compute(self, layer: str, cancel: threading.Event | None = None) -> Any:
        """The (cached) localization result of one layer, computed on this thread.

        Raises:
            RunCancelled: ``cancel`` was set (the run stops between batches).
        """
        from ..analyses.localization import localization

        def work() -> Any:
            model = self.models.load(self._label)
            images = image_source(self.images, self.n_images)
            if cancel is not None:
                images = CancellableImages(images, cancel)
            return localization(model, images, layer=layer, n_images=self.n_images,
                                batch_size=self.batch_size, device=self.device,
                                progress=False)

        return self.cache.get(self._key(layer), work)

    def _background(self, grid: tuple[int, int]) -> np.ndarray:
        """The first image as the model sees it (grey if it cannot be made)."""
        if self._bg is None:
            try:
                model = self.models.load(self._label)
                src = image_source(self.images, self.n_images)
                x = preprocess_one(src[0], model, getattr(src, "preprocessed", False))
                self._bg = display_image(x[0], model)
            except Exception:  # noqa: BLE001 - a grey background still shows the map
                return np.full((grid[0] * 8, grid[1] * 8, 3), 200, np.uint8)
        return self._bg

    def refresh(self) -> None:
        """Show the current layer: at once if computed before, else computed in the
        background (the view is empty meanwhile; :meth:`wait` blocks until shown)."""
        self._request(debounce=False)

    def _request(self, *, debounce: bool) -> None:
        with self._runs.lock:
            self._runs.supersede()  # whatever is in flight is for another layer
            layer = self.current_layer
            if layer is None:  # no layers (a bad spec): its error and empty view stay
                self._busy = False
                self._buttons(running=False)
                return
            self.layer_label.value = f"<code>{html.escape(layer)}</code>"
            if self._key(layer) in self.cache:
                self._finish(lambda: self._show_cached(layer), f"{layer}: from cache")
                return
            self.message.clear()
            self._empty_view(f"computing {layer}…")
            self._begin(self._work, layer, debounce=debounce,
                        status=f"computing {layer} on {self.n_images} images…")

    def _show_cached(self, layer: str) -> None:
        try:
            self._show(layer, self.compute(layer))
        except Exception as err:  # noqa: BLE001 - shown in the widget
            self._show_error(err)

    def _work(self, cancel: threading.Event, layer: str) -> None:
        def compute() -> Any:
            res = self.compute(layer, cancel)
            _as_values(res)  # a result that cannot be drawn fails here, off the kernel
            self._background(tuple(np.asarray(res.maps).shape[1:3]))
            return res

        self._outcome(cancel, compute, lambda res: self._show(layer, res), f"{layer}: done",
                      f"{layer}: failed")

    def _cancelled(self) -> None:
        layer = self.current_layer
        self._empty_view(f"cancelled: press Run to compute {layer}")
        self._set_status(f"{layer}: cancelled, nothing shown (press Run to compute)")

    def _can_run(self) -> bool:
        return self.current_layer is not None

    def _show(self, layer: str, res: Any) -> None:
        """Draw one layer's result (the clicked token keeps its place)."""
        values, grid = _as_values(res)
        where = self._where if self.view.empty else self.view._query_position()
        with self.view.hold_sync():
            self.message.clear()
            self.view.message = ""
            self.view.set_data(self._background(grid), values, grid=grid)
            self.view.query = self.view._query_at(where)
            self.view.title = f"{layer}: CKA of the clicked token with each input patch"
        s = res.meta.get("summary", {})
        self.summary.value = "" if not s else (
            "<div style='font-family:sans-serif;font-size:12px;padding-left:8px'>"
            f"<b>{html.escape(layer)}</b><br>interior tokens peaking at their own patch: "
            f"{s.get('peak_at_own_rate', float('nan')):.0%}<br>"
            f"mean CKA own patch {s.get('own_mean', float('nan')):.3f} vs other "
            f"{s.get('other_mean', float('nan')):.3f}<br>n_images = "
            f"{res.meta.get('n_images')}</div>")

    def _empty_view(self, note: str) -> None:
        """An empty view and summary with a note (the clicked token's place is kept)."""
        if not self.view.empty:
            self._where = self.view._query_position()
        with self.view.hold_sync():
            self.view.clear()
            self.view.message = note
        self.summary.value = ""

    def _show_error(self, err: BaseException) -> None:
        """The error, and an empty view and summary (no map of an earlier layer stays)."""
        self.message.error(err)
        self._empty_view("no map: see the message above")

    def _static_views(self) -> list[Any]:
        return [self.view]

    def __repr__(self) -> str:
        return (f"LocalizationExplorer({self._label}, layer={self.current_layer!r}, "
                f"n_layers={len(self.layer_names)}, n_images={self.n_images})")


def _split(text: str | Sequence[str]) -> str | list[str]:
    """A typed selector: one kind or name, or several separated by commas."""
    if not isinstance(text, str):
        return list(text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else (parts or text)
