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
from ._live import BackgroundRuns
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
    A model given by name is loaded in the background too (the slider gets its layers
    when it is), so the constructor returns at once even when weights must be read.
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
        self.layer_names: list[str] = []
        self._init_run_controls("vitlens-localization", tooltip="compute the current layer again")
        self._where: tuple[str, Any] | None = None  # the clicked token's place, kept
        style = {"description_width": "60px"}
        self._spec = layers
        self._catalog: Any = None  # the model's LayerCatalog, once the model is loaded
        self._loading = False  # the model is being loaded in the background
        self._held = False  # Cancel was pressed while it loaded: compute only on Run
        self._constructed = False
        self._first = layer  # the slider's start, once the layers are known
        self._seeded: list[str] = []
        self._loader = BackgroundRuns("vitlens-localization-load")
        self.layers = W.Combobox(value=layers if isinstance(layers, str) else ", ".join(layers),
                                 options=["blocks", "all"], ensure_option=False,
                                 description="Layers", style=style, continuous_update=False)
        self.layer = W.IntSlider(value=0, min=0, max=1, description="Layer", style=style,
                                 disabled=True)
        self.layer.add_class("vitlens-layer-slider")
        self.layer_label = W.HTML("")
        self.message = MessageArea()
        self.view = ImageAttentionView(title="CKA of the clicked token with each input patch",
                                       value_label="CKA", show_heads=False, colormap="viridis",
                                       size=260)
        self.summary = W.HTML("")
        if results is not None:
            self._seed(results)
        self.layers.observe(lambda c: self._set_layers(_split(c["new"])), "value")
        self.layer.observe(lambda _c: self._request(debounce=True), "value")
        self.run_button.on_click(lambda _b: self.refresh())
        self.cancel_button.on_click(lambda _b: self.cancel())
        super().__init__([W.HBox([self.layers, self.layer, self.layer_label]),
                          W.HBox([self.run_button, self.cancel_button, self.status]),
                          self.message, W.HBox([self.view, self.summary]), SliderKeys()])
        self.add_class("vitlens-explorer")
        self.add_class("vitlens-localization-explorer")
        at_hand = self.models.loaded(self._label)
        if at_hand is not None:  # a model object: its layers at once (cheap)
            self._take_catalog(*_catalog_of(lambda: at_hand))
        else:  # a name: loaded off the kernel thread, the slider waits for its layers
            self._loading = True
            self._loader.start(self._load)
        with self._runs.lock:  # a load that ends meanwhile leaves the first request to us
            self._constructed = True
            self.refresh()

    # ----- the model's layers -----
    def _seed(self, results: Sequence[Any] | Mapping[str, Any]) -> None:
        """Precomputed results: cached, and on the slider until the model's layers join them."""
        items = list(results.items()) if isinstance(results, Mapping) else \
            [(r.meta.get("layer", f"layer {i}"), r) for i, r in enumerate(results)]
        self._seeded = [name for name, _ in items]
        self.n_images = int(items[0][1].meta.get("n_images", self.n_images)) if items else 0
        for name, res in items:
            self.cache.put(self._key(name), res)
        self.layer_names = list(self._seeded)
        self.layer.max = max(len(self._seeded) - 1, 0)
        self.layer.value = self.layer.max if self._first is None else \
            min(max(self._first, 0), self.layer.max)
        self.layer.disabled = not self._seeded

    def _load(self, _cancel: threading.Event) -> None:
        """On the loader thread: load the model, then hand its layers to the slider."""
        self._take_catalog(*_catalog_of(lambda: self.models.load(self._label)))

    def _take_catalog(self, catalog: Any, err: BaseException | None) -> None:
        """The model's layers are known (or it cannot be loaded): the slider gets them."""
        with self._runs.lock:
            self._loading = False
            self._catalog = catalog
            if err is None:
                self.layers.options = ["blocks", "all", *catalog.kinds]
                self._set_layers(self._spec, first=True)
                return
            if self._seeded:  # only the precomputed layers can be shown
                self.layers.disabled = True
                self.layers.tooltip = "the model cannot be loaded here"
                return
            self._runs.supersede()
            self.layer_names = []
            self.layer.disabled = True
            self.layer_label.value = "<i>no layers</i>"
            self._finish(lambda: self._show_error(err), f"failed: could not load {self._label}")

    @property
    def running(self) -> bool:
        """The model is loading, or a layer is computing or about to."""
        return self._loader.running or super().running

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the model is loaded and the current layer is shown (or ``timeout``)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        if not self._loader.wait(timeout):
            return False
        return super().wait(None if end is None else max(end - time.monotonic(), 0.0))

    def _key(self, layer: str) -> tuple:
        return (model_key(self.models.objects.get(self._label, self._label)), layer,
                self.n_images)

    def _set_layers(self, spec: str | Sequence[str], *, first: bool = False) -> None:
        """The slider's layers for a typed selector (``first``: the model's layers have just
        arrived; precomputed layers join them and the slider keeps the layer it shows)."""
        with self._runs.lock:
            self._spec = spec
            if self._catalog is None:  # loading (the newest spec is used when it ends), or
                return                 # the model cannot be loaded (its error is shown)
            try:
                if isinstance(spec, str) and not spec.strip():
                    msg = "no layers chosen: type 'blocks', 'all', a kind or a layer name"
                    raise ValueError(msg)
                names = self._catalog.select(spec)
            except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
                # No layer of the previous spec stays reachable: the slider has none until
                # the spec is fixed, and nothing of the old spec is drawn.
                self._runs.supersede()
                self.layer_names = []
                self.layer.disabled = True
                self.layer_label.value = "<i>no layers</i>"
                self._finish(lambda err=err: self._show_error(err), "failed: fix the layers")
                return
            shown = self.current_layer
            if first and self._seeded:  # the precomputed layers stay reachable
                chosen = set(names) | set(self._seeded)
                names = [n for n in self._catalog.names if n in chosen]
                names += [n for n in self._seeded if n not in names]
            self.message.clear()
            self.layer_names = names
            self.layer.disabled = False
            with self.layer.hold_trait_notifications():  # one request below, not one per step
                self.layer.max = max(len(names) - 1, 0)
                if first:  # the start asked for, else the layer shown, else the last
                    at = self._first if self._first is not None else \
                        names.index(shown) if shown in names else len(names) - 1
                    self.layer.value = min(max(at, 0), self.layer.max)
                elif self.layer.value > self.layer.max:
                    self.layer.value = self.layer.max
            if not self._constructed:  # the constructor makes the first request
                return
            if self._held:  # cancelled while the model loaded: Run computes
                self._runs.supersede()  # nor does the slider's move above
                self._busy = False
                layer = self.current_layer
                self.layer_label.value = f"<code>{html.escape(layer or '')}</code>"
                self._empty_view(f"cancelled: press Run to compute {layer}")
                self._set_status(f"cancelled; {self._label} has loaded: press Run to compute "
                                 f"{layer}")
                self._buttons(running=False)
                return
            self._request(debounce=False)

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
        with self._runs.lock:
            self._held = False
            self._request(debounce=False)

    def _request(self, *, debounce: bool) -> None:
        with self._runs.lock:
            self._runs.supersede()  # whatever is in flight is for another layer
            layer = self.current_layer
            if layer is None and self._loading:  # the layer comes once the model has loaded
                self._busy = True
                self.message.clear()
                self.layer_label.value = "<i>loading…</i>"
                self._empty_view(f"loading {self._label}…")
                self._set_status(f"loading {self._label}…")
                self._buttons(running=True)
                return
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
        if layer is None and self._loading:  # the load goes on; nothing is computed after it
            self._held = True
            self._empty_view(f"cancelled: press Run to compute once {self._label} has loaded")
            self._set_status(f"cancelled while {self._label} loads (press Run to compute)")
            return
        self._empty_view(f"cancelled: press Run to compute {layer}")
        self._set_status(f"{layer}: cancelled, nothing shown (press Run to compute)")

    def _can_run(self) -> bool:
        return self.current_layer is not None or self._loading

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


def _catalog_of(get_model: Any) -> tuple[Any, BaseException | None]:
    """``(layer_catalog(get_model()), None)``, or ``(None, the error)`` if that fails."""
    from ..models.layers import layer_catalog

    try:
        return layer_catalog(get_model()), None
    except Exception as err:  # noqa: BLE001 - shown in the widget, which stays usable
        return None, err


def _split(text: str | Sequence[str]) -> str | list[str]:
    """A typed selector: one kind or name, or several separated by commas."""
    if not isinstance(text, str):
        return list(text)
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return parts[0] if len(parts) == 1 else (parts or text)
