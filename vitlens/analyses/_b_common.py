"""Shared plumbing for the analyses of part B: image subsets, labels, joint multi-model CKA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as vd
from ..api import model_label, resolve_device
from ..capture import Capture
from ..datasets.images import ImageSource, as_images
from ..datasets.preprocess import MultiModelBatches, balanced_batches
from ..errors import ImageError
from ..models.loading import load_model
from ..similarity_result import SimilarityResult
from ._common import rank_bar

ESTIMATOR = "minibatch linear CKA, unbiased HSIC (Song et al. 2012)"


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
                     what: str = "this analysis") -> tuple[ImageSource, int]:
    """An :class:`ImageSource` and how many of its images to use (checked against ``need``)."""
    src = as_images(images)
    n = len(src)
    if n_images is not None:
        if n_images > n:
            msg = f"n_images={n_images} but the image source has only {n} images"
            raise ImageError(msg)
        n = int(n_images)
    if n < need:
        msg = (f"{what} needs at least {need} images (the unbiased HSIC needs 4 per batch); "
               f"got {n}. Pass more images")
        raise ImageError(msg)
    return src, n


def load(model: str | nn.Module, device: torch.device) -> nn.Module:
    return load_model(model).to(device).eval()


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


def joint_cka(models: Mapping[str, str | nn.Module], images: Any, *,
              rows: Mapping[str, Any], cols: Mapping[str, Any], token_mode: str = "flatten",
              batch_size: int = 64, device: str | torch.device | None = None,
              progress: bool = True, n_images: int | None = None, desc: str = "CKA",
              ) -> dict[tuple[str, str], SimilarityResult]:
    """Minibatch CKA between layers of several models in one pass over ``images``.

    Args:
        models: label -> model (name or module); each model is captured once per batch.
        rows, cols: label -> layer selector; every (row model, column model) pair is compared.

    Returns:
        ``{(row label, column label): SimilarityResult}``.
    """

    from ..similarity import MinibatchCKA

    dev = resolve_device(device)
    src, n = images_and_count(images, n_images)
    mods = {k: load(m, dev) for k, m in models.items()}
    unknown = [k for k in [*rows, *cols] if k not in mods]
    if unknown:
        msg = f"layer selections name models {unknown} that are not in models={list(mods)}"
        raise KeyError(msg)
    row_layers = {k: Capture(mods[k], spec, token_mode=None).layers for k, spec in rows.items()}
    col_layers = {k: Capture(mods[k], spec, token_mode=None).layers for k, spec in cols.items()}
    # one capture per distinct module (the same module may appear under two labels)
    uniq: dict[int, nn.Module] = {}
    wanted: dict[int, list[str]] = {}
    for k, ls in [*row_layers.items(), *col_layers.items()]:
        uniq.setdefault(id(mods[k]), mods[k])
        wanted[id(mods[k])] = list(dict.fromkeys(wanted.get(id(mods[k]), []) + ls))
    order = list(uniq)
    caps = {i: Capture(uniq[i], wanted[i], token_mode=token_mode) for i in order}
    names_a = [f"{k}::{name}" for k, ls in row_layers.items() for name in ls]
    names_b = [f"{k}::{name}" for k, ls in col_layers.items() for name in ls]
    engine = MinibatchCKA(names_a, names_b, device=dev)
    batches = balanced_batches(n, batch_size)
    mine = vd.shard_batches(batches, what=desc)  # under torchrun: this rank's batches
    stream = MultiModelBatches(src, [uniq[i] for i in order], mine, dev)
    with contextlib.ExitStack() as stack, rank_bar(mine, progress, desc) as bar:
        for cap in caps.values():
            stack.enter_context(cap)
        for idx in mine:
            xs = stream.load(idx)
            feats = {i: caps[i].run(x) for i, x in zip(order, xs, strict=True)}
            fa = [feats[id(mods[k])][name] for k, ls in row_layers.items() for name in ls]
            fb = [feats[id(mods[k])][name] for k, ls in col_layers.items() for name in ls]
            engine.update(fa, fb)
            bar.update(len(idx))
    matrix = engine.all_reduce().compute().detach().cpu().double().numpy()
    out: dict[tuple[str, str], SimilarityResult] = {}
    r0 = 0
    for ka, la in row_layers.items():
        c0 = 0
        for kb, lb in col_layers.items():
            meta = {"model_a": _label(ka, models[ka]), "model_b": _label(kb, models[kb]),
                    "token_mode": token_mode, "estimator": ESTIMATOR, "n_images": n,
                    "batch_size": batch_size, "n_batches": len(batches),
                    "images": getattr(src, "name", "images")}
            block = matrix[r0:r0 + len(la), c0:c0 + len(lb)]
            out[(ka, kb)] = SimilarityResult(block, la, lb, meta)
            c0 += len(lb)
        r0 += len(la)
    return out


def _label(key: str, model: str | nn.Module) -> str:
    name = model_label(model)
    return name if key == name else f"{key} ({name})"


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


def block_index(name: str) -> int | None:
    """``"blocks.3.attn"`` -> 3; ``"stages.1.blocks.0"`` -> None."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None
