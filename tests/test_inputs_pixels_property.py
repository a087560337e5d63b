"""Property tests of the image readers: every dtype, range, PIL mode and size.

Each case is compared with an independent expected conversion written here from the rules
(exact rational arithmetic for floats); a case the rules refuse must raise ImageError.
"""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from vitlens.datasets import to_pil
from vitlens.datasets.images import read_image_file
from vitlens.errors import ImageError

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

DTYPES = ["bool", "uint8", "uint16", "int16", "int32", "int64", "uint32",
          "float16", "float32", "float64"]


def _elements(dtype: np.dtype, kind: str):
    if dtype.kind == "b":
        return st.booleans()
    if dtype.kind in "iu":
        if kind in ("unit", "small"):
            return st.integers(0, 255)
        info = np.iinfo(dtype)
        return st.integers(max(int(info.min), -70000), min(int(info.max), 70000))
    width = dtype.itemsize * 8
    if kind == "unit":
        return st.floats(0.0, 1.0, width=width)
    if kind == "small":  # whole numbers 0..255, sometimes with a fraction
        return st.one_of(st.integers(0, 255).map(float),
                         st.floats(0.0, 255.0, width=width))
    return st.floats(allow_nan=True, allow_infinity=True, width=width, min_value=None)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    kind = draw(st.sampled_from(["unit", "small", "dtype"]))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4)]))
    return draw(hnp.arrays(dtype, shape, elements=_elements(dtype, kind)))


def _expected_gray_or_rgb(arr: np.ndarray) -> np.ndarray | None:
    """The rules, written independently: uint8 (H, W, 3) or None for 'must refuse'."""
    kind = arr.dtype.kind
    if kind == "b":
        out = arr.astype(np.int64) * 255
    elif arr.dtype == np.uint8:
        out = arr.astype(np.int64)
    elif arr.dtype == np.uint16:
        out = np.vectorize(lambda v: round(Fraction(int(v) * 255, 65535)))(arr).astype(np.int64)
    elif kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            return None
        out = arr.astype(np.int64)
    else:
        vals = [Fraction(float(v)) if np.isfinite(v) else None for v in arr.ravel()]
        if any(v is None for v in vals):
            return None
        if all(0 <= v <= 1 for v in vals):
            out = np.array([v * 255 for v in vals], dtype=object).reshape(arr.shape)
        elif all(0 <= v <= 255 and v.denominator == 1 for v in vals):
            out = np.array(vals, dtype=object).reshape(arr.shape)
        else:
            return None
    if out.ndim == 3 and out.shape[-1] == 1:
        out = out[..., 0]
    if out.ndim == 2:
        out = np.stack([out] * 3, axis=-1)
    return out[..., :3]


def _matches(got: Image.Image, expected: np.ndarray) -> bool:
    """Exact for integers; for floats the nearest integer to 255 x (within float rounding)."""
    assert got.mode == "RGB"
    g = np.asarray(got)
    assert g.shape == expected.shape
    diff = np.abs(g.astype(object) - expected)
    return bool(all(d <= Fraction(1, 2) + Fraction(1, 10**9) for d in diff.ravel()))


@SETTINGS
@given(arrays())
def test_arrays_scale_by_their_dtype_or_refuse(arr):
    expected = _expected_gray_or_rgb(arr)
    if expected is None:
        with pytest.raises(ImageError, match="pixel values|NaN"):
            to_pil(arr)
        return
    assert _matches(to_pil(arr), expected)


@SETTINGS
@given(arrays(), st.booleans())
def test_tensors_follow_the_array_rules(arr, chw):
    if arr.ndim == 3 and ((chw and arr.shape[-1] == 4) or (not chw and arr.shape[0] in (1, 3))):
        return  # (4, H, W) is not an image; (1 or 3, W, C) reads as (C, H, W), by the rule
    t = torch.from_numpy(arr.copy())
    if chw and t.dim() == 3:
        t = t.permute(2, 0, 1)
    expected = _expected_gray_or_rgb(arr)
    if expected is None:
        with pytest.raises(ImageError, match="pixel values|NaN"):
            to_pil(t)
        return
    assert _matches(to_pil(t), expected)


def _cmyk_expected(c: np.ndarray) -> np.ndarray:
    nk = 255 - c[..., 3:].astype(np.int64)
    return nk - np.vectorize(lambda v: round(Fraction(int(v), 255)))(c[..., :3] * nk)


@st.composite
def pil_images(draw):
    mode = draw(st.sampled_from(["1", "L", "LA", "RGB", "RGBA", "P", "I;16", "I", "F", "CMYK"]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    u8 = hnp.arrays(np.uint8, (h, w), elements=st.integers(0, 255))
    if mode == "1":
        a = draw(hnp.arrays(bool, (h, w)))
        return Image.fromarray(a), np.stack([a.astype(np.int64) * 255] * 3, -1)
    if mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        bands = len(mode)
        a = np.stack([draw(u8) for _ in range(bands)], -1)
        img = Image.fromarray(a if bands > 1 else a[..., 0], mode)
        if mode == "CMYK":
            return img, _cmyk_expected(a)
        rgb = a[..., :3] if bands >= 3 else np.stack([a[..., 0]] * 3, -1)
        return img, rgb.astype(np.int64)
    if mode == "P":
        idx = draw(u8)
        palette = np.array(draw(st.lists(st.integers(0, 255), min_size=768, max_size=768)),
                           dtype=np.uint8)
        img = Image.fromarray(idx, "P")
        img.putpalette(palette.tolist())
        return img, palette.reshape(256, 3)[idx].astype(np.int64)
    if mode in ("I;16", "I"):
        hi = 65535 if mode == "I;16" else draw(st.sampled_from([65535, 100000]))
        lo = 0 if mode == "I;16" else draw(st.sampled_from([0, -5]))
        v = draw(hnp.arrays(np.int64, (h, w), elements=st.integers(lo, hi)))
        img = (Image.fromarray(v.astype(np.uint16)) if mode == "I;16"
               else Image.fromarray(v.astype(np.int32), "I"))
        if v.min() < 0 or v.max() > 65535:
            return img, None
        g = np.vectorize(lambda x: round(Fraction(int(x) * 255, 65535)))(v).astype(np.int64)
        return img, np.stack([g] * 3, -1)
    f = draw(hnp.arrays(np.float32, (h, w), elements=st.one_of(
        st.floats(0.0, 1.0, width=32), st.integers(0, 255).map(float),
        st.floats(-300.0, 300.0, width=32))))
    return Image.fromarray(f, "F"), _expected_gray_or_rgb(f)


@SETTINGS
@given(pil_images())
def test_pil_modes_scale_by_their_range_or_refuse(case):
    img, expected = case
    if expected is None:
        with pytest.raises(ImageError, match="values"):
            to_pil(img)
        return
    assert _matches(to_pil(img), expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pil_images())
def test_files_read_as_their_in_memory_image(case):
    img, expected = case
    suffix = ".tif" if img.mode in ("F", "CMYK", "I") else ".png"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        img.save(path)
        if expected is None:
            with pytest.raises(ImageError, match="x.tif"):
                read_image_file(path)
            return
        assert _matches(read_image_file(path), expected)
