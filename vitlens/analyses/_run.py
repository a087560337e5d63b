"""Shared plumbing of the analyses: image sources and batches, float64 sums, merging results.

- :func:`image_run` loads the models and cuts the images into (sharded) batches; every
  analysis that streams images through models starts there.
- :class:`SumState` holds an analysis's float64 sums (they merge by addition and join over
  ranks with one ``all_reduce``).
- :func:`feature_batches` streams one model's captured layers batch by batch.
- :class:`SubsetImages`, :func:`check_labels`, :func:`labels_of`: image subsets and labels.

Minibatch CKA itself is not here: every CKA of the analyses goes through
:class:`vitlens.similarity.run.CKARun`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as vd
from ..capture import Capture
from ..datasets.images import ImageSource, as_images
from ..datasets.preprocess import MultiModelBatches, balanced_batches
from ..distributed import resolve_device
from ..errors import ImageError
from ..models.labels import model_label
from ..models.loading import load_model
from ..similarity._run_checks import check_device, check_n_images, check_run_args


class SumState:
    """Named float64 sums and counts that merge by addition.

    Every statistic of an analysis is a sum over images, so shards computed on different
    processes (or at different times) join exactly: ``a.merge(b)`` or :meth:`all_reduce`.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor | float) -> None:
        """Add ``value`` (converted to float64) to the sum called ``name``."""
        t = torch.as_tensor(value).detach().to(torch.float64)
        if name in self.sums:
            self.sums[name] = self.sums[name] + t.to(self.sums[name].device)
        else:
            self.sums[name] = t.clone()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.sums[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sums

    def merge(self, other: SumState) -> SumState:
        """Add another shard's sums into this one (in place) and return ``self``."""
        for name, value in other.sums.items():
            self.add(name, value)
        return self

    def all_reduce(self) -> SumState:
        """Sum every statistic over the ranks of ``torch.distributed`` (one ``all_reduce``),
        in place; a no-op in a single process. Every rank must hold the same names."""
        if vd.is_distributed():
            self.sums = vd.all_reduce_state_(self.sums)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.sums.items()}

    def numpy(self, name: str) -> np.ndarray:
        return self.sums[name].detach().cpu().numpy()


def rank_bar(batches: Sequence[Sequence[int]], progress: bool, desc: str):
    """A progress bar over the images of this rank's batches, shown on rank 0 only."""
    from tqdm.auto import tqdm

    return tqdm(total=sum(len(b) for b in batches), disable=not progress or not vd.is_main(),
                unit="img", desc=desc)


@dataclass
class ImageRun:
    """One or more models, an image source, and balanced batches of it.

    Under ``torchrun`` (a process group with several ranks) :meth:`iterate` yields only this
    rank's batches (``my_batches``, round-robin); the analysis then joins its sums with
    :meth:`SumState.all_reduce`, so every rank ends with the single-process result.
    """

    models: list[nn.Module]
    labels: list[str]
    images: ImageSource
    n: int
    batches: list[range]
    stream: MultiModelBatches
    device: torch.device
    my_batches: list[range]

    @property
    def model(self) -> nn.Module:
        return self.models[0]

    def iterate(self, progress: bool, desc: str) -> Iterator[tuple[range, tuple[torch.Tensor, ...]]]:
        """Yield ``(indices, per-model preprocessed batches)`` with a progress bar."""
        with rank_bar(self.my_batches, progress, desc) as bar:
            for idx in self.my_batches:
                xs = self.stream.load(idx)
                yield idx, xs
                bar.update(len(idx))


def load(model: str | nn.Module, device: torch.device) -> nn.Module:
    """``load_model(model)`` on ``device``, in eval mode.

    Raises:
        ValueError: a device this machine does not have (before the model is moved).
    """
    check_device(device)
    return load_model(model).to(device).eval()


def image_run(models: Sequence[Any], images: Any, *, n_images: int | None, batch_size: int,
              device: Any, min_images: int = 1, default_n: int | None = None,
              what: str = "this analysis") -> ImageRun:
    """Load models onto ``device``, read the image source and cut it into batches.

    Args:
        models: Modules, timm names or ``"vitlens/<zoo name>"`` names.
        n_images: Use the first ``n_images`` images (``None``: all, or ``default_n`` if set
            and smaller).
        min_images: The fewest images (and the smallest batch) the statistic needs.

    Raises:
        ImageError: fewer images than ``n_images`` or than ``min_images``.
        TypeError: ``n_images`` or ``batch_size`` not a whole number.
        ValueError: a bad ``n_images``, ``batch_size`` or ``device`` (see
            :func:`vitlens.similarity._run_checks.check_run_args`), before any work.
    """
    n_images, batch_size = check_run_args(n_images=n_images, batch_size=batch_size,
                                          device=device, min_batch=min_images, what=what)
    dev = resolve_device(device)
    labels = [model_label(m) for m in models]
    loaded = [load_model(m).to(dev) for m in models]
    source, n = images_and_count(images, n_images, need=min_images, what=what,
                                 default_n=default_n)
    batches = balanced_batches(n, batch_size, min_size=min_images)
    mine = vd.shard_batches(batches, what=what)
    stream = MultiModelBatches(source, loaded, mine, dev)
    return ImageRun(loaded, labels, source, n, batches, stream, dev, mine)


def check_input_grid(x: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int] | None,
                     what: str) -> None:
    """The images' patch grid must be the model's own, on which ``what`` is measured.

    A ViT built with ``dynamic_img_size`` accepts other sizes and makes a larger grid; its
    maps then do not fit the distances and neighbourhoods of the model's grid.

    Raises:
        ImageError: the images are not the model's input size, naming both and the fix.
    """
    if patch is None:
        return
    got = (int(x.shape[-2]) // patch[0], int(x.shape[-1]) // patch[1])
    if got != tuple(grid):
        size = (grid[0] * patch[0], grid[1] * patch[1])
        msg = (f"the images are {x.shape[-2]}x{x.shape[-1]} px, a {got[0]}x{got[1]} patch grid, "
               f"but {what} is measured on the model's own {grid[0]}x{grid[1]} grid "
               f"({size[0]}x{size[1]} px); resize the images to {size[0]}x{size[1]}, or pass "
               "them unpreprocessed (vitlens then resizes them), or build the model with "
               f"img_size={int(x.shape[-2]) if x.shape[-2] == x.shape[-1] else tuple(x.shape[-2:])}")
        raise ImageError(msg)


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter (gradients w.r.t. inputs only); restore."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def weighted_merge(a: np.ndarray, ca: np.ndarray, b: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """The mean over the union of two shards, from their means and counts."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.asarray(ca, np.float64), np.asarray(cb, np.float64)
    total = ca + cb
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * ca + b * cb) / total


def check_same(meta_a: dict, meta_b: dict, keys: Sequence[str], what: str) -> None:
    """Raise if two results to be merged differ in any of ``keys`` of their metadata."""
    for key in keys:
        if meta_a.get(key) != meta_b.get(key):
            msg = (f"cannot merge {what} results with different {key!r}: "
                   f"{meta_a.get(key)!r} vs {meta_b.get(key)!r}")
            raise ValueError(msg)


class SubsetImages(ImageSource):
    """The images of ``source`` at ``indices``, in that order (preprocessing flag kept)."""

    def __init__(self, source: ImageSource, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = [int(i) for i in indices]
        self.preprocessed = getattr(source, "preprocessed", False)
        self.name = f"{getattr(source, 'name', 'images')}[{len(self.indices)} selected]"

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.source[self.indices[i]]


def images_and_count(images: Any, n_images: int | None, *, need: int = 4,
                     what: str = "this analysis", default_n: int | None = None,
                     ) -> tuple[ImageSource, int]:
    """An :class:`ImageSource` and how many of its images to use: the first ``n_images``
    (``None``: all, or ``default_n`` if set and smaller), checked against ``need``.

    Raises:
        ImageError: fewer images than ``n_images`` or than ``need``.
        TypeError: ``n_images`` not a whole number.
        ValueError: a non-positive ``n_images``.
    """
    n_images = check_n_images(n_images)  # before the source is read
    src = as_images(images)
    available = len(src)
    if n_images is not None:
        if n_images > available:
            msg = (f"n_images={n_images} but the image source has only {available} images; pass "
                   f"n_images<={available} or more images")
            raise ImageError(msg)
        n = n_images
    else:
        n = available if default_n is None else min(default_n, available)
    if n < need:
        why = " (the unbiased HSIC needs 4 per batch)" if need >= 4 else ""
        msg = (f"{what} needs at least {need} images{why} but got {n}; pass more images (a "
               "folder, a list, 'samples' or vitlens.datasets.synthetic(...))")
        raise ImageError(msg)
    return src, n


def feature_batches(model: nn.Module, images: ImageSource, n: int, layers: Any, *,
                    token_mode: str | None, batch_size: int, device: torch.device,
                    progress: bool, desc: str, min_size: int = 4, sharded: bool = False,
                    ) -> Iterator[tuple[range, torch.Tensor, dict[str, torch.Tensor]]]:
    """Yield ``(indices, preprocessed input (b, 3, H, W), {layer: activation})`` per batch.

    With ``sharded=True``, under ``torchrun`` only this rank's batches (round-robin): the
    caller joins its sums over the ranks afterwards.
    """

    batches = balanced_batches(n, batch_size, min_size=min_size)
    if sharded:
        batches = vd.shard_batches(batches, what=desc)
    stream = MultiModelBatches(images, [model], batches, device)
    with Capture(model, layers, token_mode=token_mode) as cap, \
            rank_bar(batches, progress, desc) as bar:
        for idx in batches:
            x = stream.load(idx)[0]
            yield idx, x, cap.run(x)
            bar.update(len(idx))


def check_labels(labels: Any, n: int, what: str) -> np.ndarray:
    """Integer class labels (n,) as int64; raises a clear error otherwise."""
    if labels is None:
        msg = f"{what}: labels are required (an integer class per image)"
        raise ValueError(msg)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        msg = (f"{what}: labels must be integers (class indices), got dtype {arr.dtype}; "
               "convert them, e.g. with np.unique(labels, return_inverse=True)[1]")
        raise ValueError(msg)
    if arr.ndim != 1 or len(arr) != n:
        msg = f"{what}: labels have shape {arr.shape}, expected ({n},): one label per image"
        raise ValueError(msg)
    return arr.astype(np.int64)


def labels_of(images: Any) -> Any:
    """Labels carried by an image source (e.g. ``vitlens.datasets.synthetic``), or ``None``."""
    for obj in (images, getattr(images, "dataset", None)):
        lab = getattr(obj, "labels", None)
        if lab is not None:
            return lab
    return None
