"""Image sources: folders, lists, arrays, datasets, the sample photos, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitlens.datasets import (
    FolderImages,
    MultiModelBatches,
    as_images,
    balanced_batches,
    samples,
)
from vitlens.datasets.images import SkippedFilesWarning
from vitlens.errors import ImageError


def test_folder_reads_sorted_rgb(tmp_path):
    for i, mode in enumerate(["RGB", "L", "RGBA"]):
        Image.new(mode, (10 + i, 12)).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.warns(SkippedFilesWarning, match=r"not an image type .*\(1\): notes\.txt"):
        src = as_images(tmp_path)
    assert len(src) == 3
    assert [src[i].size for i in range(3)] == [(10, 12), (11, 12), (12, 12)]
    assert all(src[i].mode == "RGB" for i in range(3))


def test_corrupt_image_file_is_named(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    src = FolderImages(tmp_path)
    with pytest.raises(ImageError, match="broken.jpg"):
        [src[i] for i in range(len(src))]


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(ImageError, match="no image files"):
        as_images(tmp_path)
    with pytest.raises(ImageError, match="does not exist"):
        as_images(tmp_path / "missing")


def test_arrays_lists_and_datasets_agree():
    arr = np.random.default_rng(0).integers(0, 256, (4, 9, 9, 3), dtype=np.uint8)
    from_array = as_images(arr)
    from_list = as_images(list(arr))
    ds = torch.utils.data.TensorDataset(torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255,
                                        torch.zeros(4))
    from_ds = as_images(ds)
    for i in range(4):
        a = np.asarray(from_array[i])
        assert np.array_equal(a, arr[i])
        assert np.array_equal(np.asarray(from_list[i]), a)
        assert np.abs(np.asarray(from_ds[i]).astype(int) - a).max() <= 1
    assert from_array.fingerprint() == from_list.fingerprint()


def test_bad_arrays():
    with pytest.raises(ImageError, match="shape"):
        as_images([np.zeros((3, 4, 5, 6))])[0]
    with pytest.raises(ImageError, match="NaN"):
        as_images([np.full((4, 4, 3), np.nan)])[0]
    with pytest.raises(ImageError, match="cannot use"):
        as_images(42)


def test_samples_are_offline_and_deterministic():
    a, b = samples(20), samples(20)
    assert len(a) == 20
    assert a.fingerprint() == b.fingerprint()
    assert samples(20, seed=1).fingerprint() != a.fingerprint()
    assert all(a[i].mode == "RGB" for i in range(20))


def test_balanced_batches_keep_every_image():
    for n, bs in [(4, 4), (5, 4), (9, 4), (1030, 256), (100, 7)]:
        batches = balanced_batches(n, bs)
        assert sum(len(b) for b in batches) == n
        assert min(len(b) for b in batches) >= 4
        # a batch may exceed batch_size only when keeping every batch >= 4 forces it
        forced = -(-n // bs) > n // 4  # not enough images for ceil(n / bs) batches of 4
        assert max(len(b) for b in batches) <= (bs + 3 if forced else bs)
    with pytest.raises(ValueError, match="at least 4"):
        balanced_batches(3, 64)
    with pytest.raises(ValueError, match="batch_size"):
        balanced_batches(100, 2)


def test_each_model_gets_its_own_preprocessing():
    import timm

    m224 = timm.create_model("resnet18", pretrained=False, num_classes=2)
    m32 = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                            depth=1, num_classes=2)
    stream = MultiModelBatches(samples(6), [m224, m32], balanced_batches(6, 6))
    xa, xb = next(iter(stream))
    assert xa.shape == (6, 3, 224, 224) and xb.shape == (6, 3, 32, 32)
