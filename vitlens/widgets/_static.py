"""Static pictures of the views: an ``image/png`` in every widget's mime bundle.

Where no widget can run (GitHub, nbviewer, a notebook opened before its kernel), a front
end shows the PNG instead of a text repr. The pictures are drawn with Pillow from the same
data the browser has, with the same colour maps as ``_shared.js``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

#: The colour maps of ``_shared.js`` (nine stops each, interpolated linearly).
CMAPS = {
    "magma": ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55064", "#fb8761",
              "#fec287", "#fcfdbf"],
    "viridis": ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962",
                "#addc30", "#fde725"],
    "blues": ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5",
              "#08519c", "#08306b"],
    "rdbu": ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#f7f7f7", "#92c5de", "#4393c3",
             "#2166ac", "#053061"],
}
PENDING = (228, 228, 228)


def lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table of a colour map."""
    stops = np.array([[int(h[k:k + 2], 16) for k in (1, 3, 5)] for h in CMAPS.get(name,
                      CMAPS["viridis"])], dtype=np.float64)
    t = np.linspace(0, len(stops) - 1, 256)
    k = np.minimum(np.floor(t).astype(int), len(stops) - 2)
    f = (t - k)[:, None]
    return (stops[k] * (1 - f) + stops[k + 1] * f).astype(np.uint8)


def colourize(values: np.ndarray, lo: float, hi: float, cmap: str) -> np.ndarray:
    """(..., 3) uint8 colours of ``values`` on [lo, hi]; NaN is the "pending" grey."""
    v = np.asarray(values, dtype=np.float64)
    span = hi - lo if hi > lo else 1e-9
    idx = np.clip(np.round((np.nan_to_num(v, nan=lo) - lo) / span * 255), 0, 255).astype(int)
    out = lut(cmap)[idx]
    out[np.isnan(v)] = PENDING
    return out


def value_range(values: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """The colour scale's ends, as the browser computes them."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    return (lo, hi if hi > lo else lo + 1e-9)


def tick(v: float, span: float = 1.0) -> str:
    """A legend tick with 2 or 3 decimals, more only when the range is narrower than 0.01
    (scientific for tiny or huge values); the same rule as the browser's legend."""
    import math

    a = abs(v)
    if a >= 1e4 or (a and a < 1e-3 and span < 1e-2):
        return f"{v:.2e}"
    digits = 2 if span >= 1 else 3 if span >= 0.01 else min(6, 2 - math.floor(math.log10(span)))
    return f"{v:.{digits}f}"


def _font(size: int):
    from PIL import ImageFont

    try:  # DejaVu has the symbols of the labels (‖, –, ×); Pillow finds it in system fonts
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def legend(draw: Any, x: int, y: int, h: int, lo: float, hi: float, cmap: str,
           label: str) -> None:
    """A vertical colour bar with its title above the top tick, never on it."""
    table = lut(cmap)
    font, small = _font(12), _font(11)
    draw.text((x - 4, y), label, fill=(40, 40, 40), font=font)
    top = y + 22
    for k in range(h):
        c = table[int(round((1 - k / max(h - 1, 1)) * 255))]
        draw.line([(x, top + k), (x + 12, top + k)], fill=tuple(int(v) for v in c))
    draw.rectangle([x, top, x + 12, top + h], outline=(150, 150, 150))
    for frac, v in ((0.0, hi), (0.5, (lo + hi) / 2), (1.0, lo)):
        draw.text((x + 16, top + frac * h - 6), tick(v, hi - lo), fill=(40, 40, 40),
                  font=small)


def canvas(width: int, height: int, title: str = "") -> tuple[Any, Any, int]:
    """A white picture with a title line; returns (image, draw, y where content starts)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height + (22 if title else 0)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((6, 4), title, fill=(20, 20, 20), font=_font(13))
    return img, draw, 22 if title else 0


def side_by_side(pictures: list[Any]) -> Any:
    """Pictures in one row, top-aligned, on white."""
    from PIL import Image

    pictures = [p for p in pictures if p is not None]
    if not pictures:
        return Image.new("RGB", (240, 60), (255, 255, 255))
    w = sum(p.width for p in pictures) + 12 * (len(pictures) - 1)
    out = Image.new("RGB", (w, max(p.height for p in pictures)), (255, 255, 255))
    x = 0
    for p in pictures:
        out.paste(p, (x, 0))
        x += p.width + 12
    return out


def png_bytes(picture: Any) -> bytes:
    buf = io.BytesIO()
    picture.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def empty_picture(text: str, width: int = 320, height: int = 120) -> Any:
    """A grey panel with a note (a view with nothing to show)."""
    img, draw, y = canvas(width, height)
    draw.rectangle([0, y, width - 1, y + height - 1], fill=(244, 244, 244))
    draw.text((10, y + height // 2 - 7), text or "nothing to show", fill=(90, 90, 90),
              font=_font(12))
    return img


class StaticPicture:
    """Mixin: adds an ``image/png`` picture of :meth:`_static_views` to the mime bundle."""

    def _static_views(self) -> list[Any]:
        return [self]

    def static_picture(self) -> Any:
        """A PIL image of what the widget shows (its views side by side)."""
        pics = []
        for view in self._static_views():
            pics.append(view.static_picture() if view is not self else self._picture())
        return side_by_side(pics)

    def _picture(self) -> Any:  # views override this
        return empty_picture(type(self).__name__)

    def static_png(self) -> bytes:
        """:meth:`static_picture` as PNG bytes."""
        return png_bytes(self.static_picture())

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        out = super()._repr_mimebundle_(**kwargs)
        if out is None:
            return None
        data = out[0] if isinstance(out, tuple) else out
        try:
            data["image/png"] = base64.b64encode(self.static_png()).decode("ascii")
        except Exception:  # noqa: BLE001 - the live widget and its text still show
            pass
        return out
