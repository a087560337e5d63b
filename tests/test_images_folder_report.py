"""An image folder uses every file Pillow can read, and says what it leaves out and why
(review defect 7)."""

from __future__ import annotations

import os
import warnings

import pytest
from PIL import Image

from vitlens.datasets import FolderImages
from vitlens.datasets.images import SkippedFilesWarning, image_extensions
from vitlens.errors import ImageError


def _save(path, size=8):
    Image.new("RGB", (size, size), (10, 20, 30)).save(path, format="PNG")


def _listing(folder, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = FolderImages(folder, **kw)
    return src, [str(w.message) for w in caught if issubclass(w.category, SkippedFilesWarning)]


def test_every_type_pillow_reads_is_used(tmp_path):
    _save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jfif", format="JPEG")
    Image.new("RGB", (8, 8)).save(tmp_path / "c.ppm")
    Image.new("RGB", (8, 8)).save(tmp_path / "d.TGA")
    src, msgs = _listing(tmp_path)
    assert [p.name for p in src.paths] == ["a.png", "b.jfif", "c.ppm", "d.TGA"]
    assert [src[i].size for i in range(len(src))] == [(8, 8)] * 4
    assert msgs == []


def test_extensions_come_from_pillow_less_what_it_cannot_decode():
    exts = image_extensions()
    assert {".jpg", ".jfif", ".png", ".ppm", ".webp", ".tif"} <= exts
    assert not {".h5", ".grib", ".mpg", ".pdf", ".txt"} & exts


def test_left_out_files_are_listed_once_with_reasons(tmp_path):
    for i in range(2):
        _save(tmp_path / f"img{i}.png")
    for name in ["README.txt", "a.csv", "b.json", "c.md", "d.py"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "more").mkdir()
    _save(tmp_path / "more" / "deep.png")
    os.symlink(tmp_path / "missing.txt", tmp_path / "gone.txt")
    (tmp_path / ".DS_Store").write_bytes(b"\0")  # hidden: documented, not listed
    src, msgs = _listing(tmp_path)
    assert [p.name for p in src.paths] == ["img0.png", "img1.png"]
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert "not an image type Pillow reads (5): README.txt, a.csv, b.json, ..." in msg
    assert "subfolders, not searched without recursive=True (1): more/" in msg
    assert "broken links (1): gone.txt" in msg
    assert ".DS_Store" not in msg and "7 entries" in msg


def test_recursive_reads_subfolders_without_a_warning(tmp_path):
    _save(tmp_path / "a.png")
    (tmp_path / "more").mkdir()
    _save(tmp_path / "more" / "b.png")
    src, msgs = _listing(tmp_path, recursive=True)
    assert [p.name for p in src.paths] == ["a.png", "b.png"]
    assert msgs == []


def test_a_broken_link_to_an_image_is_an_error(tmp_path):
    _save(tmp_path / "a.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "photo.png")
    with pytest.raises(ImageError, match=r"photo\.png' is a broken link .*nowhere\.png"):
        FolderImages(tmp_path)


def test_a_folder_without_images_says_what_it_found(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageError, match=r"no image files .*notes\.txt"):
        FolderImages(tmp_path)
