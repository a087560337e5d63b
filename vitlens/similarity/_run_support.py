"""Helpers of :class:`vitlens.similarity.run.CKARun`: image checks, precision, prefetching."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from ..datasets.images import ImageSource
from ..errors import ImageError
from ..results.similarity import SimilarityResult


def _check_images(images: ImageSource, images_b: ImageSource | None,
                  n_images: int | None) -> int:
    n = len(images)
    if images_b is not None and len(images_b) != n:
        msg = (f"mismatched image sets: {n} images for model A but {len(images_b)} for model B; "
               "CKA compares the same examples, so pass image sets of equal length and order")
        raise ImageError(msg)
    if n_images is not None:
        if n_images > n:
            msg = f"n_images={n_images} but the image source has only {n} images"
            raise ImageError(msg)
        n = n_images
    return n


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "float32":
        return None
    if precision == "float16":
        return torch.float16
    if precision == "bfloat16" or device.type != "cuda" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _prefetched(load, batches: list[range], enabled: bool) -> Iterator[tuple]:
    """``load(b)`` for each batch; with ``enabled``, the next one loads in a thread while
    the caller works on the current one. Closing the generator waits for that thread."""
    if not enabled or len(batches) < 2:
        for b in batches:
            yield load(b)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="vitlens-prefetch") as pool:
        future = pool.submit(load, batches[0])
        for nxt in batches[1:]:
            xs = future.result()
            future = pool.submit(load, nxt)
            yield xs
        yield future.result()


def _warn_constant(result: SimilarityResult) -> None:
    """A cached result with NaN rows or columns warns like a fresh computation."""
    from ._checks import ConstantLayerWarning

    m = result.matrix
    if not np.isnan(m).any():
        return
    rows = [n for n, r in zip(result.layers_a, m, strict=True) if np.isnan(r).all()]
    cols = [n for n, c in zip(result.layers_b, m.T, strict=True) if np.isnan(c).all()
            and not (result.layers_a == result.layers_b and n in rows)]
    for side, names in (("A", rows), ("B", cols)):
        for name in names:
            msg = (f"layer {name!r} (model {side}): its unbiased HSIC with itself was 0 (to "
                   "rounding) in every batch (the layer is constant, or varies in too few "
                   "examples per batch), so its CKA is NaN (cached result); use more or larger "
                   "batches, or leave the layer out")
            warnings.warn(msg, ConstantLayerWarning, stacklevel=4)
