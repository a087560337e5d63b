"""``vitlens.cka``: minibatch CKA between every pair of layers of one or two models.

Runs in one process or under ``torchrun`` (each rank takes a share of the batches, one
``all_reduce`` joins the float64 sums), and caches its results on disk (see
:mod:`vitlens.cache`): repeating a call loads the stored result, and an interrupted run
resumes from its last checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .distributed import resolve_device
from .models.labels import model_label
from .results.similarity import SimilarityResult
from .similarity.run import PRECISIONS, CKARun, LayerSpec
from .similarity.run import cka as _run_cka

__all__ = ["PRECISIONS", "CKARun", "cka", "cka_stream", "model_label", "resolve_device"]


def cka_stream(model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None = None,
               *, layers_a: LayerSpec = None, layers_b: LayerSpec = None,
               token_mode: str = "flatten", batch_size: int = 64,
               device: str | torch.device | None = None, progress: bool = True,
               n_images: int | None = None, images_b: Any = None, cache: bool = True,
               precision: str = "float32", distributed: bool | None = None,
               ) -> Iterator[SimilarityResult]:
    """Like :func:`cka`, but yields the matrix after every batch (for live views).

    Partial results carry ``meta["partial"]``; the last one is complete. A cached result is
    yielded once, complete. Hooks are on the models only while a batch runs, never between
    two yields, so a paused or abandoned stream leaves none behind. Closing the generator
    stops the run (with the cache on, it resumes from its last checkpoint next time).
    """
    run = CKARun(model_a, images, model_b, layers_a=layers_a, layers_b=layers_b,
                 token_mode=token_mode, batch_size=batch_size, device=device,
                 n_images=n_images, images_b=images_b, cache=cache, precision=precision,
                 distributed=distributed)
    hit = run.cached()
    if hit is not None:
        yield hit
        return
    steps = run.steps(progress)
    try:
        for k in steps:
            if k < len(run.my_batches):
                with warnings.catch_warnings():  # a constant layer is reported once, at the end
                    warnings.simplefilter("ignore", RuntimeWarning)
                    partial = run.result(k)
                yield partial
    finally:
        steps.close()  # a closed stream checkpoints its completed batches and removes hooks
    yield run.finish()


def cka(model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None = None, *,
        layers_a: LayerSpec = None, layers_b: LayerSpec = None, token_mode: str = "flatten",
        batch_size: int = 64, device: str | torch.device | None = None, progress: bool = True,
        n_images: int | None = None, images_b: Any = None, cache: bool = True,
        precision: str = "float32", distributed: bool | None = None) -> SimilarityResult:
    """Minibatch linear CKA between every pair of layers (Nguyen, Raghu & Kornblith 2021).

    Each batch's unbiased HSIC (Song et al. 2012) is accumulated in float64, weighted by
    the batch size, and never clamped. A model compared with itself runs in one pass.

    Under ``torchrun`` (or any initialised ``torch.distributed`` group) the batches are
    shared out round-robin between the ranks and one ``all_reduce`` joins the sums: every
    rank returns the same matrix, equal to the single-process one to float64 rounding, and
    only rank 0 writes the cache.

    Args:
        model_a: A timm name, ``"vitlens/<zoo name>"`` or a module.
        images: A folder, ``"samples"``, a list of PIL images or arrays, a torch Dataset, a
            torch DataLoader (of image batches or (image, label) batches, read as
            preprocessed tensors), or an (n, C, H, W) preprocessed tensor. Raw images get
            each model's own preprocessing.
        model_b: The second model; ``None`` compares ``model_a`` with itself.
        layers_a, layers_b: Layer selectors (``"blocks"`` by default, ``"all"``, a kind, or
            names; see :func:`vitlens.layer_catalog`). For any other ``nn.Module``, a list
            of its module names (``["features.3", "features.6"]``): their outputs are
            captured.
        token_mode: ``"flatten"`` (the paper's), ``"cls"``, ``"mean"``, ``"tokens"`` or
            ``"spatial"``.
        batch_size: Images per batch (at least 4); batches are balanced so none is smaller
            than 4 and no image is dropped.
        device: ``"cpu"``, ``"cuda"``, ...; by default CUDA when available (this rank's GPU
            under ``torchrun``). Models are moved there.
        progress: Show a progress bar (on rank 0).
        n_images: Use only the first ``n_images`` images.
        images_b: A second image set for model B, paired with ``images`` one to one.
        cache: Load the result from the on-disk cache when it is there, store it otherwise,
            and checkpoint the run so that it resumes if interrupted (see
            :mod:`vitlens.cache`; ``VITLENS_CACHE=0`` turns the cache off everywhere).
        precision: The forward passes' precision: ``"float32"``; ``"bfloat16"`` or
            ``"float16"`` (autocast; the CKA itself is always accumulated in float64); or
            ``"auto"``, which tests mixed precision on the first batch and keeps it only if
            that batch's CKA matrix is within 1e-4 of the float32 one.
        distributed: ``None`` shards over ``torchrun``'s ranks when there are several (every
            rank must call this function); ``False`` runs every batch in this process, for a
            call made on one rank only.

    Returns:
        A :class:`SimilarityResult` with ``.matrix`` of shape (L_a, L_b).
    """
    return _run_cka(model_a, images, model_b, layers_a=layers_a, layers_b=layers_b,
                    token_mode=token_mode, batch_size=batch_size, device=device,
                    progress=progress, n_images=n_images, images_b=images_b, cache=cache,
                    precision=precision, distributed=distributed)
