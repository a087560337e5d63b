"""CKA with error bars: spread over disjoint image subsets and a permutation null.

The images are split at random into ``repeats`` disjoint subsets. Each subset gives its own
minibatch CKA matrix; their standard deviation is the spread reported as ``std``. The
matrix itself pools every subset (the sums of all subsets' HSIC terms): the same estimator
as :func:`vitlens.cka`, with batches drawn within the random subsets. For the null, model B's features
are shuffled relative to model A's within every batch (``permutations`` times per batch,
reusing the captured features), which breaks the pairing of examples: the unbiased
estimator then reads about 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as vd
from ..capture import TOKEN_MODES
from ..distributed import resolve_device
from ..models.labels import model_label
from ..results.similarity import SimilarityResult
from ..similarity import MinibatchCKA
from ..similarity.run import ESTIMATOR, CKARun, LayerSpec
from ._run import SubsetImages, images_and_count, load, rank_bar

__all__ = ["cka_with_confidence", "disjoint_subsets"]


def disjoint_subsets(n: int, repeats: int, seed: int = 0) -> list[np.ndarray]:
    """A random split of ``range(n)`` into ``repeats`` disjoint, sorted, near-equal subsets."""
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(perm, repeats)]


def cka_with_confidence(model_a: str | nn.Module, images: Any,
                        model_b: str | nn.Module | None = None, *, layers_a: LayerSpec = None,
                        layers_b: LayerSpec = None, token_mode: str = "flatten",
                        repeats: int = 5, permutations: int = 2, seed: int = 0,
                        batch_size: int = 64, device: str | torch.device | None = None,
                        progress: bool = True, n_images: int | None = None) -> SimilarityResult:
    """Minibatch CKA with its spread over disjoint image subsets and a permutation null.

    Args:
        model_a, images, model_b, layers_a, layers_b, token_mode, batch_size, device,
            progress, n_images: As in :func:`vitlens.cka`.
        repeats: Number of disjoint random image subsets (at least 2).
        permutations: Shuffles of model B's examples per batch for the null (0 to skip).
        seed: Seed of the subset split and the shuffles.

    Returns:
        A :class:`SimilarityResult` whose ``matrix`` pools all subsets, with extra arrays
        ``std`` (L_a, L_b) (standard deviation over the subsets' matrices, ddof=1; each
        subset holds about n / repeats images, so the pooled matrix's standard error is
        about ``std / sqrt(repeats)``), ``null_mean`` and ``null_std`` (over subsets and
        shuffles), ``repeat_matrices`` (repeats, L_a, L_b) and ``subset_of`` (n,): the
        subset each image was assigned to.

    Raises:
        ImageError: fewer than ``4 * repeats`` images.
        ValueError: ``repeats < 2`` or a negative ``permutations``.
    """

    if not isinstance(repeats, int | np.integer) or repeats < 2:
        msg = f"repeats={repeats!r}: a spread needs at least 2 disjoint subsets"
        raise ValueError(msg)
    if not isinstance(permutations, int | np.integer) or permutations < 0:
        msg = f"permutations={permutations!r}: pass a non-negative number of shuffles"
        raise ValueError(msg)
    if token_mode not in TOKEN_MODES:
        msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
        raise ValueError(msg)
    dev = resolve_device(device)
    src, n = images_and_count(images, n_images, need=4 * repeats,
                              what=f"cka_with_confidence with repeats={repeats}")
    same = model_b is None or model_b is model_a
    mod_a = load(model_a, dev)
    mod_b = mod_a if same else load(model_b, dev)
    subsets = disjoint_subsets(n, repeats, seed)
    # under torchrun each rank takes whole subsets, round-robin; every subset's shuffles come
    # from its own generator, so the result does not depend on the number of ranks
    mine = vd.shard_batches(list(range(len(subsets))), what="cka_with_confidence (each rank "
                            "takes whole repeats as its batches)", fix="pass more repeats")
    pooled: MinibatchCKA | None = None
    la = lb = None
    done: list[tuple[int, np.ndarray, list[np.ndarray], int]] = []  # (repeat, real, nulls, batches)
    with rank_bar([subsets[r] for r in mine], progress,
                  f"CKA±std {model_label(model_a)} vs {model_label(model_b or model_a)}") as bar:
        for r in mine:
            sub = SubsetImages(src, subsets[r])
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + r)
            run = CKARun.joint({"a": mod_a} if same else {"a": mod_a, "b": mod_b}, sub,
                               rows={"a": layers_a},
                               cols={"a" if same else "b": layers_b if (layers_b is not None
                                                                         or not same)
                                     else layers_a},
                               token_mode=token_mode, batch_size=batch_size, device=dev,
                               distributed=False, shuffles=permutations, generator=gen,
                               gram_in_hooks=False, on_batch=lambda idx: bar.update(len(idx)))
            run.run(progress=False)
            la, lb = run.layers_a, run.layers_b
            done.append((r, run.matrix(),
                         [eng.compute().detach().cpu().double().numpy()
                          for eng in run.null_engines], len(run.batches)))
            pooled = run.engine if pooled is None else pooled.merge(run.engine)
    pooled.all_reduce()
    done = sorted((d for part in vd.all_gather_object(done) for d in part),  # every rank's
                  key=lambda d: d[0])
    stack = np.stack([d[1] for d in done])  # (R, L_a, L_b)
    nulls = [m for d in done for m in d[2]]
    n_batches = sum(d[3] for d in done)
    subset_of = np.full(n, -1, dtype=np.int64)
    for r, part in enumerate(subsets):
        subset_of[part] = r
    extra: dict[str, np.ndarray] = {"std": stack.std(axis=0, ddof=1), "repeat_matrices": stack,
                                    "subset_of": subset_of}
    if nulls:
        ns = np.stack(nulls)
        extra["null_mean"] = ns.mean(axis=0)
        extra["null_std"] = ns.std(axis=0, ddof=1) if len(ns) > 1 else np.zeros_like(ns[0])
    meta = {
        "model_a": model_label(model_a),
        "model_b": model_label(model_a if model_b is None else model_b),
        "token_mode": token_mode, "estimator": ESTIMATOR, "n_images": n,
        "batch_size": batch_size, "n_batches": n_batches,
        "images": getattr(src, "name", "images"), "repeats": int(repeats),
        "permutations": int(permutations), "seed": int(seed),
        "subset_sizes": [len(p) for p in subsets],
        "std": "standard deviation (ddof=1) of the CKA over disjoint random image subsets",
        "null": "CKA with model B's examples shuffled within each batch (pairing broken)",
    }
    matrix = pooled.compute().detach().cpu().double().numpy()
    return SimilarityResult(matrix, la, lb, meta, **extra)

