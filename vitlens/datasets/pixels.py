"""Pixel values to 8-bit RGB: each dtype and PIL mode is scaled by its own range, or refused.

The models' timm transforms read 8-bit RGB ``PIL.Image`` objects, so every image vitlens
reads ends as one. The rules, the same for files, PIL images, arrays and tensors:

* ``uint8`` and 8-bit PIL modes (``1``, ``L``, ``LA``, ``P``, ``RGB``, ``RGBA``, ``CMYK``,
  ``YCbCr``, ``HSV``, ...) are used as they are. Alpha is dropped, not composited, as timm's
  own loaders do. ``CMYK`` uses Pillow's conversion ``R = (255 - C)(255 - K) / 255`` (JPEGs
  written by Adobe software, stored inverted, are un-inverted by Pillow on reading; an
  embedded ICC profile is not applied). ``LAB`` uses Pillow's CIELAB to sRGB conversion.
* 16-bit data (``uint16`` arrays, PIL modes ``I;16*``, so 16-bit PNG and TIFF files) are
  scaled by the range of the type, ``round(v * 255 / 65535)``, whatever bits the camera
  filled: a 12-bit image stored as 16-bit (values 0..4095) looks dark, as in any viewer.
  Scale it yourself first if you want it stretched, e.g. ``arr / 4095``. 16-bit *colour*
  files (RGB PNG, TIFF) are reduced to 8 bits by Pillow itself as it reads them, to within
  one level of the same scale.
* PIL mode ``I`` (32-bit integers, the mode older Pillow gives 16-bit PNGs) is read as
  16-bit when its values lie in 0..65535, and refused otherwise.
* Floats (arrays, tensors and PIL mode ``F``, e.g. float TIFFs) in [0, 1] are scaled by
  255. Floats outside [0, 1] are read as 0..255 only when every value is a whole number in
  [0, 255] (``uint8`` data cast to float); anything else (normalised tensors, 0..255 floats
  after resampling, HDR data) is refused with the range found. NaN and inf are refused.
* ``bool`` is 0 or 255. Other integer dtypes (``int64`` from a list of Python ints, ...)
  are read as 0..255 when their values lie there, and refused otherwise.

Nothing is ever clipped: values outside the rule's range raise :class:`ImageError`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import ImageError

__all__ = ["array_to_rgb", "pil_to_rgb"]

_ACCEPTED = ("uint8 (0-255), uint16 (0-65535), bool, integers in 0-255 or floats in [0, 1] "
             "(or whole-numbered floats in 0-255)")


def _range(arr: np.ndarray) -> tuple[float, float]:
    return float(arr.min()), float(arr.max())


def _uint16_to_8(arr: np.ndarray) -> np.ndarray:
    # round(v * 255 / 65535) exactly in integers (v / 257 is never halfway between two)
    return ((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _float_to_8(arr: np.ndarray, where: str) -> np.ndarray:
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        msg = (f"{where} holds NaN or inf pixel values ({n_nan} NaN, {n_inf} inf in shape "
               f"{arr.shape}); replace them before passing the image")
        raise ImageError(msg)
    lo, hi = _range(a)
    if lo >= 0.0 and hi <= 1.0:
        return np.floor(a * 255.0 + 0.5).astype(np.uint8)
    if lo >= 0.0 and hi <= 255.0 and bool((a == np.round(a)).all()):
        return a.astype(np.uint8)
    if lo < 0.0:
        hint = ("it looks normalised (mean/std): pass images before normalisation, or pass "
                "the already preprocessed batch as one (n, 3, H, W) tensor, used as is")
    elif hi <= 255.0:
        hint = ("if it is 0-255 data, divide by 255; floats must be in [0, 1], or whole "
                "numbers in 0-255")
    else:
        hint = "scale it to [0, 1] first (e.g. divide by the maximum of its bit depth)"
    msg = (f"{where} has {arr.dtype} pixel values in [{lo:.6g}, {hi:.6g}], outside [0, 1] and "
           f"not whole numbers in 0-255; {hint}. vitlens never clips pixel values")
    raise ImageError(msg)


def _to_uint8(arr: np.ndarray, where: str) -> np.ndarray:
    """``arr`` scaled to uint8 by the rules of this module's docstring."""
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "b":
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.size == 0:
        return arr.astype(np.uint8)
    if kind == "u" and arr.dtype.itemsize == 2:
        return _uint16_to_8(arr)
    if kind in "iu":
        lo, hi = _range(arr)
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        msg = (f"{where} has {arr.dtype} pixel values in [{lo:.0f}, {hi:.0f}]; vitlens reads "
               f"{_ACCEPTED}. Convert it, e.g. to uint16 for 16-bit data or to floats in "
               "[0, 1]; vitlens never clips pixel values")
        raise ImageError(msg)
    if kind == "f":
        return _float_to_8(arr, where)
    msg = f"{where} has dtype {arr.dtype}; vitlens reads {_ACCEPTED}"
    raise ImageError(msg)


def array_to_rgb(arr: np.ndarray, where: str = "image") -> Image.Image:
    """An RGB PIL image from an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array.

    Args:
        arr: Pixel values; the dtype sets the scale (see the module docstring).
        where: How error messages name the image.

    Raises:
        ImageError: an unsupported shape or dtype, no pixels, NaN/inf, or values outside
            the range of the dtype's rule.
    """
    shape = arr.shape
    if not (arr.ndim == 2 or (arr.ndim == 3 and shape[-1] in (1, 3, 4))):
        msg = (f"{where} has array shape {shape}; expected (H, W), (H, W, 1), (H, W, 3) or "
               "(H, W, 4) (a tensor may be (C, H, W) with C = 1 or 3)")
        raise ImageError(msg)
    if shape[0] == 0 or shape[1] == 0:
        msg = f"{where} has no pixels (array shape {shape})"
        raise ImageError(msg)
    a8 = _to_uint8(np.asarray(arr), where)
    if a8.ndim == 3 and a8.shape[-1] == 1:
        a8 = a8[..., 0]
    return Image.fromarray(np.ascontiguousarray(a8)).convert("RGB")


def pil_to_rgb(img: Image.Image, where: str = "image") -> Image.Image:
    """An RGB copy of a PIL image of any mode, scaled by the mode's range.

    Args:
        img: A PIL image (``I;16`` from 16-bit PNGs, ``F`` from float TIFFs, ``CMYK``, ...).
        where: How error messages name the image (a file name, ``image 3``, ...).

    Raises:
        ImageError: no pixels, a mode Pillow cannot convert, or values outside the mode's
            range (see the module docstring).
    """
    if img.width == 0 or img.height == 0:
        msg = f"{where} has no pixels (size {img.size})"
        raise ImageError(msg)
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16"):
        return array_to_rgb(np.asarray(img).astype(np.uint16), where)
    if mode == "I":
        arr = np.asarray(img)
        lo, hi = _range(arr)
        if lo < 0 or hi > 65535:
            msg = (f"{where} is a 32-bit integer image (PIL mode 'I') with values in "
                   f"[{lo:.0f}, {hi:.0f}], outside the 16-bit range 0-65535 that vitlens "
                   "reads it as; convert it to 8 or 16 bits, or pass an array scaled to [0, 1]")
            raise ImageError(msg)
        return array_to_rgb(arr.astype(np.uint16), where)
    if mode == "F":
        return array_to_rgb(np.asarray(img), where)
    if mode == "La":
        img = img.convert("LA")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as err:
        msg = (f"{where} has PIL mode {mode!r}, which Pillow cannot convert to RGB ({err}); "
               "save it as an 8-bit or 16-bit RGB or grayscale image")
        raise ImageError(msg) from err
