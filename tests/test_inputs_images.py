"""Images read faithfully: 16-bit, float, CMYK and LAB files, tensors, hidden files, bombs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.datasets import FolderImages, as_images, to_pil
from vitlens.errors import ImageError


def _gray(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    assert img.mode == "RGB" and (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()
    return a[..., 0].astype(np.int64)


def test_12_bit_png_stored_as_16_bit_is_scaled_by_65535_not_white(tmp_path):
    rng = np.random.default_rng(0)
    v = rng.integers(0, 4096, (20, 30)).astype(np.uint16)  # a 12-bit sensor in 16-bit PNG
    Image.fromarray(v).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode.startswith("I;16")
    got = _gray(FolderImages(tmp_path)[0])
    expected = np.floor(v.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.int64)
    assert np.array_equal(got, expected)
    assert (got == 255).mean() == 0.0  # main read 93% of it as white


def test_full_range_16_bit_png(tmp_path):
    v = np.array([[0, 1, 128, 129, 257, 385, 386, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "a.png")
    assert _gray(FolderImages(tmp_path)[0]).tolist() == [[0, 0, 0, 1, 1, 1, 2, 255, 255]]


def test_float_tiff_in_unit_range_is_not_black(tmp_path):
    f = np.random.default_rng(1).random((16, 12)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "depth.tif")
    assert Image.open(tmp_path / "depth.tif").mode == "F"
    got = _gray(FolderImages(tmp_path)[0])
    assert np.array_equal(got, np.floor(f.astype(np.float64) * 255 + 0.5).astype(np.int64))
    assert got.max() > 200


def test_float_tiff_outside_unit_range_is_refused_with_the_file_name(tmp_path):
    f = np.linspace(-3.0, 40.5, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageError, match=r"hdr\.tif.*\[-3, 40\.5\].*never clips"):
        FolderImages(tmp_path)[0]


def test_cmyk_tiff_and_adobe_jpeg_follow_the_cmyk_formula(tmp_path):
    # a guard: Pillow's CMYK conversion (and Adobe un-inversion) is right; keep it
    rng = np.random.default_rng(2)
    cmyk = rng.integers(0, 256, (6, 7, 4)).astype(np.uint8)
    img = Image.fromarray(cmyk, mode="CMYK")
    img.save(tmp_path / "a.tif")
    img.save(tmp_path / "b.jpg", quality=100)  # Pillow writes Adobe (inverted) CMYK JPEGs
    nk = 255 - cmyk[..., 3:].astype(np.int64)
    expected = nk - np.round(cmyk[..., :3].astype(np.int64) * nk / 255).astype(np.int64)
    src = FolderImages(tmp_path)
    assert np.array_equal(np.asarray(src[0]).astype(np.int64), expected)
    stored = np.asarray(Image.open(tmp_path / "b.jpg")).astype(np.int64)  # JPEG is lossy
    nk = 255 - stored[..., 3:]
    assert np.array_equal(np.asarray(src[1]).astype(np.int64),
                          nk - np.round(stored[..., :3] * nk / 255).astype(np.int64))
    assert np.abs(np.asarray(src[1]).astype(np.int64) - expected).max() < 40


def test_lab_image_goes_through_a_colour_transform():
    # a guard: Pillow 13 converts LAB correctly, and vitlens must keep using its conversion
    # Pillow's LAB: L in 0..255 for 0..100, a and b signed bytes; a = b = 0 is neutral grey
    ls = np.array([0, 40, 128, 200, 255])
    lab = Image.fromarray(np.stack([ls, 0 * ls, 0 * ls], -1)[None].astype(np.uint8), "LAB")
    got = np.asarray(to_pil(lab))[0].astype(np.float64)  # (5, 3)
    # independent reference: CIE L* -> luminance Y (D50 = D65 white for a grey), sRGB encoding
    lstar = ls / 255 * 100
    y = np.where(lstar > 8, ((lstar + 16) / 116) ** 3, lstar / 903.3)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * y ** (1 / 2.4) - 0.055)
    assert np.abs(got - srgb[:, None] * 255).max() <= 2
    red = Image.fromarray(np.array([[[136, 81, 70]]], dtype=np.uint8), "LAB")  # sRGB red
    assert np.asarray(to_pil(red))[0, 0, 0] > 240 and np.asarray(to_pil(red))[0, 0, 1:].max() < 15


def test_chw_tensors_in_0_255_do_not_saturate():
    rng = np.random.default_rng(3)
    hwc = rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    assert np.array_equal(np.asarray(to_pil(chw.float())), hwc)  # main: almost all 255
    assert np.array_equal(np.asarray(to_pil(chw)), hwc)
    assert np.array_equal(np.asarray(to_pil(chw.double() / 255)), hwc)


def test_floats_that_are_neither_unit_nor_whole_0_255_are_refused():
    with pytest.raises(ImageError, match="divide by 255"):
        to_pil(torch.full((3, 4, 4), 127.5))
    with pytest.raises(ImageError, match="normalised"):
        to_pil(torch.linspace(-2.1, 2.6, 48).reshape(3, 4, 4))


def test_uint16_arrays_are_scaled_by_65535():
    v = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    assert _gray(to_pil(v)).tolist() == [[0, 1, 128, 255]]
    rgb = np.stack([v, v, v], axis=-1)
    assert np.asarray(as_images([rgb])[0])[..., 0].tolist() == [[0, 1, 128, 255]]


def test_wide_integers_outside_0_255_are_refused_with_the_dtype():
    with pytest.raises(ImageError, match=r"int32 pixel values in \[0, 4095\].*uint16"):
        to_pil(np.array([[0, 4095]], dtype=np.int32))
    assert _gray(to_pil(np.array([[0, 7, 255]]))).tolist() == [[0, 7, 255]]  # int64 0-255


def test_hidden_and_macos_resource_files_are_skipped(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "photo.jpg")
    (tmp_path / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (tmp_path / ".hidden.png").write_bytes(b"not a png")
    (tmp_path / ".thumbs").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / ".thumbs" / "t.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (9, 9)).save(tmp_path / "sub" / "b.png")
    (tmp_path / "sub" / "._b.png").write_bytes(b"\x00\x05\x16\x07")
    assert [p.name for p in FolderImages(tmp_path).paths] == ["photo.jpg"]
    src = FolderImages(tmp_path, recursive=True)
    assert [p.name for p in src.paths] == ["photo.jpg", "b.png"]
    assert [src[i].size for i in range(len(src))] == [(8, 8), (9, 9)]


def test_decompression_bomb_names_the_file_and_the_fix(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px > 2 x the limit
    with pytest.raises(ImageError, match=r"huge\.png.*MAX_IMAGE_PIXELS"):
        FolderImages(tmp_path)[0]


def test_image_above_the_bomb_limit_is_read_with_a_warning_naming_it(tmp_path, monkeypatch):
    """Between Pillow's limit and twice it, Pillow decodes with an anonymous warning: vitlens
    reads the image too, and its warning names the file."""
    Image.new("L", (40, 40), 7).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 px: above it, below twice it
    with pytest.warns(Image.DecompressionBombWarning, match=r"big\.png.*was read") as rec:
        img = FolderImages(tmp_path)[0]
    assert img.size == (40, 40) and img.getpixel((3, 3)) == (7, 7, 7)
    assert all("big.png" in str(w.message) for w in rec
               if issubclass(w.category, Image.DecompressionBombWarning))


def test_truncated_file_is_named(tmp_path):
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png.*remove or replace"):
        FolderImages(tmp_path)[0]


def test_empty_images_are_refused():
    with pytest.raises(ImageError, match="no pixels"):
        to_pil(np.zeros((0, 5, 3), dtype=np.uint8))


def test_a_uint8_image_tensor_is_raw_images_not_model_input():
    rng = np.random.default_rng(4)
    hwc = rng.integers(0, 256, (5, 10, 12, 3)).astype(np.uint8)
    chw = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()
    src = as_images(chw)  # main: used as a preprocessed input, 0..255 as is
    assert not getattr(src, "preprocessed", False)
    assert all(np.array_equal(np.asarray(src[i]), hwc[i]) for i in range(5))
    assert src.fingerprint() == as_images(list(hwc)).fingerprint()
    assert getattr(as_images(chw.float() / 255), "preprocessed", False)  # floats: as is


def test_a_preprocessed_tensor_must_be_float():
    from vitlens.datasets import TensorImages

    with pytest.raises(ImageError, match=r"floating point; got torch.int64.*raw images"):
        TensorImages(torch.zeros(2, 3, 4, 4, dtype=torch.int64))


def test_16_bit_colour_tiff_is_within_one_level_of_the_65535_scale(tmp_path):
    # a guard: Pillow reduces 16-bit RGB itself; vitlens must keep that scale, not clip
    import tifffile  # a dependency of scikit-image, which vitlens requires
    v = np.random.default_rng(5).integers(0, 65536, (6, 7, 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "rgb16.tif", v, photometric="rgb")
    got = np.asarray(FolderImages(tmp_path)[0]).astype(np.int64)
    assert np.abs(got - np.floor(v / 257 + 0.5)).max() <= 1
