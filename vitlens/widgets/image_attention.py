"""``ImageAttentionView``: an image with an attention (or any per-patch) map overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as T

from ._base import decode_array, encode_array, esm_source
from ._static import StaticPicture

_HERE = Path(__file__).parent


class ImageAttentionView(StaticPicture, anywidget.AnyWidget):
    """An image with a per-patch map drawn over it, a head grid, and a clickable query patch.

    The view holds ``values`` of shape (K, Nq, Nk): K panels (heads), Nq queries and Nk keys,
    where the last ``gh * gw`` keys are the patches of the ``grid`` (row-major) and any keys
    before them are prefix tokens (CLS, ...). The main canvas shows the map of the query
    :attr:`query` in panel :attr:`head` (``-1``: the mean over panels). The head grid shows
    every panel for that query; clicking a panel selects it.

    * Attention (``Nq == Nk``, e.g. (H, 65, 65) for an 8x8 grid with CLS): clicking a patch
      makes it the query; the prefix buttons make a prefix token the query.
    * Per-position maps (``Nq == gh * gw``, e.g. a localization CKA map for each token).
    * A single map (``Nq == 1``, e.g. an effective receptive field): clicks only set
      :attr:`clicked`.

    Args:
        image: (h, w, 3) uint8 or float in [0, 1] image, or ``None``.
        values: (K, Nq, Nk) array, or (Nq, Nk), or (gh, gw) for one map.
        grid: (gh, gw) patch grid; inferred from a (gh, gw) map.
        **kwargs: Any public trait (``title``, ``prefix_names``, ``head_labels``, ...).
    """

    _esm = esm_source("image_attention.js")
    _css = _HERE / "image_attention.css"

    # --- public traits ---
    grid = T.List(T.Int(), default_value=[0, 0], minlen=2, maxlen=2).tag(sync=True)
    query = T.Int(None, allow_none=True, help="query index in the values' query axis").tag(sync=True)
    head = T.Int(-1, help="panel shown large; -1 is the mean over panels").tag(sync=True)
    clicked = T.List(T.Int(), default_value=None, allow_none=True, minlen=2, maxlen=2,
                     help="[row, col] of the last clicked patch").tag(sync=True)
    prefix_names = T.List(T.Unicode(), help="names of the prefix tokens, e.g. ['CLS']").tag(sync=True)
    head_labels = T.List(T.Unicode(), help="one caption per panel").tag(sync=True)
    title = T.Unicode("").tag(sync=True)
    value_label = T.Unicode("attention").tag(sync=True)
    colormap = T.Enum(("magma", "viridis", "blues", "rdbu"), "viridis").tag(sync=True)
    opacity = T.Float(0.65, min=0.0, max=1.0).tag(sync=True)
    size = T.Int(256, help="side of the main image in CSS pixels").tag(sync=True)
    show_heads = T.Bool(True, help="show the grid of per-panel maps").tag(sync=True)
    message = T.Unicode("").tag(sync=True)

    # --- internal traits: binary arrays ---
    _image = T.Bytes(b"").tag(sync=True)
    _image_shape = T.List(T.Int(), default_value=[0, 0, 3]).tag(sync=True)
    _values = T.Bytes(b"").tag(sync=True)
    _dtype = T.Unicode("float32").tag(sync=True)
    _shape = T.List(T.Int(), default_value=[0, 0, 0]).tag(sync=True)
    _version = T.Int(0).tag(sync=True)

    def __init__(self, image: Any = None, values: Any = None, *,
                 grid: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if image is not None or values is not None:
            self.set_data(image, values, grid=grid)

    def set_data(self, image: Any = None, values: Any = None, *,
                 grid: tuple[int, int] | None = None, keep_query: bool = True) -> None:
        """Send a new image and/or map values (shapes as in the class docstring).

        Raises:
            ValueError: the shapes do not fit the grid; the message gives both.
        """
        with self.hold_sync():
            if image is not None:
                img = _as_uint8_image(image)
                self._image, _, self._image_shape = encode_array(img, "uint8")
            if values is not None:
                vals, g = _as_panels(values, grid or tuple(self.grid))
                where = self._query_position() if keep_query else None
                self.grid = list(g)
                self._values, self._dtype, self._shape = encode_array(vals, "float32")
                self.query = self._query_at(where)
                if self.head >= vals.shape[0]:
                    self.head = -1
            self._version += 1

    @property
    def values(self) -> np.ndarray:
        """The (K, Nq, Nk) values as the browser has them."""
        return decode_array(self._values, self._dtype, self._shape)

    @property
    def image(self) -> np.ndarray:
        return decode_array(self._image, "uint8", self._image_shape)

    @property
    def num_prefix_tokens(self) -> int:
        """Prefix tokens on the key axis (keys before the grid patches)."""
        return int(self._shape[2]) - self.grid[0] * self.grid[1] if self._shape[2] else 0

    @property
    def query_prefix(self) -> int:
        """Prefix tokens on the query axis (0 for per-position maps)."""
        nq = int(self._shape[1])
        return 0 if nq <= 1 else nq - self.grid[0] * self.grid[1]

    def default_query(self) -> int | None:
        """CLS when queries include prefix tokens, else the centre patch; None for one map."""
        nq = int(self._shape[1])
        if nq <= 1:
            return None
        if self.query_prefix:
            return 0
        gh, gw = self.grid
        return (gh // 2) * gw + gw // 2

    def query_of(self, row: int, col: int) -> int:
        """The query index of the patch at grid position (row, col)."""
        gh, gw = self.grid
        if not (0 <= row < gh and 0 <= col < gw):
            msg = f"patch ({row}, {col}) is outside the {gh}x{gw} grid"
            raise ValueError(msg)
        return self.query_prefix + row * gw + col

    def current_map(self) -> np.ndarray:
        """The (gh, gw) map the main canvas shows (query, head; spatial keys only)."""
        vals = self.values
        q = 0 if self.query is None else self.query
        panel = vals.mean(axis=0) if self.head < 0 else vals[self.head]
        gh, gw = self.grid
        return panel[q, self.num_prefix_tokens:].reshape(gh, gw)

    def _query_position(self) -> tuple[str, Any] | None:
        """Where the query is: ``("prefix", k)`` or ``("patch", (row, col))``; None if unset."""
        q = self.query
        if q is None or not self._shape[1]:
            return None
        npre = self.query_prefix
        if q < npre:
            return ("prefix", q)
        gw = max(self.grid[1], 1)
        return ("patch", divmod(q - npre, gw))

    def _query_at(self, where: tuple[str, Any] | None) -> int | None:
        """The query index of the same place in the new values (the same patch of the grid
        when prefix tokens come or go, e.g. switching a CLS ViT for a GAP one)."""
        nq = int(self._shape[1])
        if where is not None and nq > 1:
            kind, pos = where
            if kind == "prefix" and pos < self.query_prefix:
                return pos
            if kind == "patch" and pos[0] < self.grid[0] and pos[1] < self.grid[1]:
                return self.query_of(*pos)
        return self.default_query()

    def _query_ok(self, q: int | None) -> bool:
        nq = int(self._shape[1])
        return (q is None and nq <= 1) or (q is not None and 0 <= q < nq)

    @T.validate("query")
    def _check_query(self, proposal: dict) -> int | None:
        q = proposal["value"]
        nq = int(self._shape[1])
        if q is not None and nq and not 0 <= q < nq:
            msg = f"query {q} is outside the {nq} queries of this view"
            raise T.TraitError(msg)
        return q

    @T.validate("head")
    def _check_head(self, proposal: dict) -> int:
        h = int(proposal["value"])
        k = int(self._shape[0])
        if h < -1 or (k and h >= k):
            msg = f"head {h} is outside 0..{k - 1} (or -1 for the mean)"
            raise T.TraitError(msg)
        return h

    @T.observe("clicked")
    def _on_clicked(self, change: dict) -> None:
        # A click from the browser sets the query too (also when set from Python).
        if change["new"] is not None and int(self._shape[1]) > 1:
            self.query = self.query_of(*change["new"])

    @classmethod
    def from_erf(cls, result: Any, *, where: str = "after", image: Any = None,
                 **kwargs: Any) -> ImageAttentionView:
        """Effective receptive fields as panels, one per layer, each scaled to its own range.

        Args:
            result: An :class:`~vitlens.analyses.receptive_field.ERFResult` ((K, H, W) maps).
            where: ``"after"`` or ``"before"`` the residual add.
            image: An (H, W, 3) picture to draw under the maps (white by default).
        """
        keep = [k for k, w in enumerate(result.where) if w == where]
        if not keep:
            msg = f"this ERF result has no maps {where!r} the add; it has {sorted(set(result.where))}"
            raise ValueError(msg)
        erf = np.asarray(result.erf, dtype=np.float64)[keep]  # (K, H, W)
        k, h, w = erf.shape
        kwargs.setdefault("title", f"effective receptive field ({where} the residual add)")
        kwargs.setdefault("value_label", "mean |∂y/∂x|")
        kwargs.setdefault("colormap", "magma")
        view = cls(**kwargs)
        view.head_labels = [result.layers[i] for i in keep]
        view.set_data(image if image is not None else np.full((h, w, 3), 255, np.uint8),
                      erf.reshape(k, 1, h * w), grid=(h, w))
        view.head = k - 1  # the deepest layer, large
        return view

    def clear(self, *, keep_head: bool = False) -> None:
        """Remove the image and the map (an empty view, e.g. after an error).

        Args:
            keep_head: Keep :attr:`head` (a view emptied while its next map is computed keeps
                the panel the user picked; :meth:`set_data` resets it if the new map lacks it).
        """
        with self.hold_sync():
            self.query = None
            if not keep_head:
                self.head = -1
            self._image, self._image_shape = b"", [0, 0, 3]
            self._values, self._shape = b"", [0, 0, 0]
            self.head_labels = []
            self._version += 1

    @property
    def empty(self) -> bool:
        return not self._shape[0] and not self._image_shape[0]

    def _picture(self) -> Any:
        """The image with the current map over it (as the main canvas draws it) and a legend."""
        from PIL import Image

        from ._static import canvas, colourize, empty_picture, legend, value_range

        side = max(96, int(self.size))
        if self.empty:
            return empty_picture(self.message or "nothing to show", side, side // 2)
        img, draw, y0 = canvas(side + 110, side + 8, self.title)
        if self._image_shape[0]:
            base = Image.fromarray(self.image).resize((side, side), Image.BILINEAR)
        else:
            base = Image.new("RGB", (side, side), (255, 255, 255))
        lo, hi = 0.0, 1.0
        if self._shape[0] and self.grid[0]:
            m = self.current_map()
            lo, hi = value_range(m, None, None)
            over = Image.fromarray(colourize(m, lo, hi, self.colormap)).resize((side, side),
                                                                                Image.NEAREST)
            base = Image.blend(base, over, float(self.opacity))
        img.paste(base, (0, y0 + 4))
        legend(draw, side + 16, y0 + 4, min(160, side - 40), lo, hi, self.colormap,
               self.value_label)
        return img

    def __repr__(self) -> str:
        k, nq, nk = (int(s) for s in self._shape)
        gh, gw = self.grid
        return (f"ImageAttentionView({k} panels, {gh}×{gw} grid, {nq}→{nk} tokens, "
                f"query={self.query}, head={self.head})")


def _as_uint8_image(image: Any) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        msg = f"image must be (h, w, 3); got shape {arr.shape}"
        raise ValueError(msg)
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(np.asarray(arr, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return arr


def _as_panels(values: Any, grid: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, int]]:
    """(K, Nq, Nk) float32 and the grid, from (K, Nq, Nk), (Nq, Nk) or a (gh, gw) map.

    A 2-D array is one (gh, gw) map unless ``grid`` is given and differs from its shape.
    """
    vals = np.asarray(values, dtype=np.float64)
    g = (int(grid[0]), int(grid[1])) if len(grid) == 2 and grid[0] > 0 else None
    if vals.ndim == 2 and (g is None or g == vals.shape):
        g = (int(vals.shape[0]), int(vals.shape[1]))
        vals = vals.reshape(1, 1, g[0] * g[1])
    elif vals.ndim == 2:
        vals = vals[None]
    if vals.ndim != 3:
        msg = f"values must be (K, Nq, Nk), (Nq, Nk) or a (gh, gw) map; got shape {vals.shape}"
        raise ValueError(msg)
    _, nq, nk = vals.shape
    if g is None:  # a square grid after 0..4 prefix tokens
        for npt in range(5):
            side = int(round(max(nk - npt, 0) ** 0.5))
            if side and side * side == nk - npt:
                g = (side, side)
                break
    if g is None:
        msg = f"cannot infer the patch grid of {nk} keys; pass grid=(gh, gw)"
        raise ValueError(msg)
    npatch = g[0] * g[1]
    if nk < npatch or nq not in (1, npatch, nk):
        msg = (f"values of shape {vals.shape} do not fit a {g[0]}x{g[1]} grid: keys must be "
               f"prefix tokens + {npatch} patches, and queries 1, {npatch} or all {nk} tokens")
        raise ValueError(msg)
    return vals.astype(np.float32), g
