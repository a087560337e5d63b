"""The synthetic dataset: determinism (in-process and across processes), disjoint splits,
geometry metadata, the second domain, and bad input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from vitlens.datasets.synthetic import CLASSES, SyntheticDataset, synthetic


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def test_item_is_rgb_64_image_and_int_label():
    ds = synthetic("train", 10)
    assert isinstance(ds, SyntheticDataset) and len(ds) == 10
    img, label = ds[3]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    assert isinstance(label, int) and 0 <= label < len(CLASSES) == 10
    x, y = ds.arrays()
    assert x.shape == (10, 64, 64, 3) and x.dtype == np.uint8 and y.shape == (10,)
    np.testing.assert_array_equal(np.asarray(img), x[3])
    assert ds[-1][1] == y[-1]


def test_transform_is_applied():
    ds = synthetic("val", 4, transform=lambda im: np.asarray(im).sum())
    assert ds[0][0] == synthetic("val", 4).arrays()[0][0].sum()


def test_deterministic_and_prefix_stable():
    a = synthetic("train", 300, seed=3).arrays()[0]
    b = synthetic("train", 600, seed=3)
    np.testing.assert_array_equal(a, b.arrays()[0][:300])
    np.testing.assert_array_equal(
        a[250:290], synthetic("train", 300, seed=3).images_uint8(slice(250, 290))
    )
    assert _digest(a) != _digest(synthetic("train", 300, seed=4).arrays()[0])


def test_same_images_in_a_fresh_process():
    code = (
        "import hashlib, numpy as np;"
        "from vitlens.datasets.synthetic import synthetic;"
        "x, y = synthetic('test', 300, seed=7, domain=1).arrays();"
        "print(hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    x, y = synthetic("test", 300, seed=7, domain=1).arrays()
    assert out.stdout.strip() == hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()


def test_splits_are_disjoint():
    digests = {}
    for split in ("train", "val", "test"):
        x = synthetic(split, 512).arrays()[0]
        digests[split] = {_digest(im) for im in x}
        assert len(digests[split]) == 512  # no repeats within a split either
    assert not digests["train"] & digests["val"]
    assert not digests["train"] & digests["test"]
    assert not digests["val"] & digests["test"]


def test_labels_balanced_and_positions_cover_the_frame():
    ds = synthetic("train", 4000)
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.min() > 300  # about 400 each
    cx, cy = ds.object_centers.T
    assert cx.min() < 16 and cx.max() > 48 and cy.min() < 16 and cy.max() > 48
    x0, y0, x1, y1 = ds.object_boxes.T
    assert ((0 <= x0) & (x0 < cx) & (cx < x1) & (x1 <= 64)).all()
    assert ((0 <= y0) & (y0 < cy) & (cy < y1) & (y1 <= 64)).all()
    assert np.ptp(x1 - x0) > 8  # random scale


def test_object_is_where_the_box_says():
    import importlib

    syn = importlib.import_module("vitlens.datasets.synthetic")  # the module, not the function

    ds = synthetic("train", 256, seed=1)
    inside = syn._shape_field(ds._block_params(0)) < 0  # (256, 64, 64) target pixels
    for i in range(256):
        ys, xs = np.nonzero(inside[i])
        x0, y0, x1, y1 = ds.object_boxes[i]
        assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) + 1
        assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1) + 1
        cx, cy = ds.object_centers[i]
        assert abs(xs.mean() - cx) < 8 and abs(ys.mean() - cy) < 8


def test_second_domain_looks_different():
    a = synthetic("train", 200, domain=0).arrays()[0].astype(float)
    b = synthetic("train", 200, domain=1).arrays()[0].astype(float)
    # domain 1: checkerboards, outlines and pixel noise give far more high-frequency energy
    hf_a = np.abs(np.diff(a, axis=2)).mean()
    hf_b = np.abs(np.diff(b, axis=2)).mean()
    assert hf_b > 2 * hf_a
    np.testing.assert_array_equal(
        synthetic("train", 200, domain=1).labels, synthetic("train", 200, domain=1).labels
    )


def test_generation_is_fast():
    # CPU time of this process, so a busy machine does not fail the test
    t = time.process_time()
    synthetic("train", 2048, seed=5).arrays()
    per_image = (time.process_time() - t) / 2048
    assert per_image < 4e-3  # about 0.3-0.4 ms on one core


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "training", "n": 5}, "train.*val.*test"),
        ({"split": "train", "n": 0}, "positive"),
        ({"split": "train", "n": -3}, "positive"),
        ({"split": "train", "n": 5, "seed": -1}, "non-negative"),
        ({"split": "train", "n": 5, "domain": 2}, "domain"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic(**kwargs)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        synthetic("train", 5)[5]
