"""The run behind :func:`vitlens.cka`: batches, sharding, cache, resume and precision.

One :class:`CKARun` holds the models, their hooks, the image stream and a
:class:`~vitlens.similarity.MinibatchCKA`. Under ``torchrun`` each rank takes every
``world``-th batch (whole batches, so each per-batch HSIC is the single-process one) and one
``all_reduce`` joins the float64 sums. With the cache on, the result is stored under a key
of everything it depends on, and every few seconds the accumulator is checkpointed, so an
interrupted run resumes from its last completed batch.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from . import cache as _cache
from . import distributed as _dist
from ._cka_support import (
    _amp_dtype,
    _check_images,
    _prefetched,
    _warn_constant,
    model_label,
    resolve_device,
)
from ._gram_capture import GramCapture, accumulate_rows, gram_route_applies
from .capture import TOKEN_MODES, Capture
from .datasets.images import as_images
from .datasets.preprocess import MultiModelBatches, balanced_batches, data_config
from .errors import CaptureError
from .models.loading import load_model
from .similarity_result import SimilarityResult

LayerSpec = str | Iterable[str] | None

ESTIMATOR = "minibatch linear CKA, unbiased HSIC (Song et al. 2012)"
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
AMP_TOLERANCE = 1e-4  # "auto" keeps mixed precision only within this of float32 (batch 1)
CHECKPOINT_EVERY_S = 5.0  # at most one checkpoint per this many seconds (0: every batch)
GRAM_IN_HOOKS = True  # flatten/spatial: reduce each layer to its Gram inside its hook
PREFETCH: bool | None = None  # load batch k+1 in a thread during batch k (None: on CUDA)


class CKARun:
    """Set-up shared by :func:`~vitlens.cka` and :func:`~vitlens.api.cka_stream`.

    Attributes:
        batches: Every batch of the run (``range`` of image indices), balanced.
        my_batches: This rank's share (all of them without ``torchrun``).
        layers_a, layers_b: The resolved layer names.
        engine: The :class:`~vitlens.similarity.MinibatchCKA` accumulator.
    """

    def __init__(self, model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None,
                 *, layers_a: LayerSpec, layers_b: LayerSpec, token_mode: str, batch_size: int,
                 device: str | torch.device | None, n_images: int | None, images_b: Any,
                 cache: bool = False, precision: str = "float32",
                 distributed: bool | None = None) -> None:
        from .similarity import MinibatchCKA

        if token_mode not in TOKEN_MODES:
            msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
            raise ValueError(msg)
        if precision not in PRECISIONS:
            msg = f"unknown precision {precision!r}; choose one of {PRECISIONS}"
            raise ValueError(msg)
        # Shard over torchrun's ranks unless told not to (a caller that runs this on one
        # rank only, inside a larger distributed job, passes distributed=False).
        self.sharded = distributed is not False and (_dist.init_from_env()
                                                     or _dist.is_distributed())
        self.device = resolve_device(device)
        self.same = model_b is None or model_b is model_a
        self.model_a = load_model(model_a).to(self.device)
        self.model_b = self.model_a if self.same else load_model(model_b).to(self.device)
        self.label_a = model_label(model_a)
        self.label_b = self.label_a if self.same else model_label(model_b)
        self.images = as_images(images)
        self.images_b = as_images(images_b) if images_b is not None else None
        self.n = _check_images(self.images, self.images_b, n_images)
        self.batches = balanced_batches(self.n, batch_size)
        self.my_batches = _dist.shard(self.batches) if self.sharded else list(self.batches)
        self.token_mode = token_mode
        self.batch_size = batch_size
        self.precision = precision
        self.amp_dtype = _amp_dtype(precision, self.device) if precision != "auto" else None
        self.use_cache = _cache.enabled(cache)
        self.in_hooks = GRAM_IN_HOOKS and gram_route_applies(token_mode)
        if self.in_hooks:  # layers are reduced to Grams as they are computed
            def capture(model, layers):
                return GramCapture(model, layers, token_mode=token_mode)
        else:  # the engine checks finiteness (and names the layer): skip Capture's pass
            def capture(model, layers):
                return Capture(model, layers, token_mode=token_mode, check_finite=False)
        self.cap_a = capture(self.model_a, layers_a)
        if self.same:
            self.cap_b = capture(self.model_a, layers_b if layers_b is not None else layers_a)
            self.layers_a, self.layers_b = self.cap_a.layers, self.cap_b.layers
            union = list(dict.fromkeys(self.layers_a + self.layers_b))
            self.cap_a = capture(self.model_a, union)
            self.self_only = self.layers_a == self.layers_b
        else:
            self.cap_b = capture(self.model_b, layers_b)
            self.layers_a, self.layers_b = self.cap_a.layers, self.cap_b.layers
            self.self_only = False
        self.engine = MinibatchCKA(self.layers_a, None if self.self_only else self.layers_b,
                                   device=self.device)
        models = [self.model_a] if self.same and self.images_b is None else [self.model_a,
                                                                              self.model_b]
        self.stream_a = MultiModelBatches(self.images, models, self.batches, self.device)
        self.stream_b = (MultiModelBatches(self.images_b, [self.model_b], self.batches,
                                           self.device) if self.images_b is not None else None)
        self.done = 0  # batches of my_batches already in the accumulator
        self.amp_note: str | None = None
        self._key: str | None = None
        self._last_ckpt = time.monotonic()

    # ------------------------------------------------------------------ description
    def meta(self) -> dict[str, Any]:
        meta = {
            "model_a": self.label_a, "model_b": self.label_b, "token_mode": self.token_mode,
            "estimator": ESTIMATOR, "n_images": self.n, "batch_size": self.batch_size,
            "n_batches": len(self.batches), "images": getattr(self.images, "name", "images"),
        }
        if self.precision != "float32":
            meta["precision"] = self.amp_note or self.precision
        if self._key is not None:
            meta["cache_key"] = self._key
        return meta

    def key_parts(self) -> dict[str, Any]:
        """Everything the result depends on (hashed into the cache key)."""
        def model(m: nn.Module, label: str) -> dict[str, Any]:
            cfg = {k: str(v) for k, v in data_config(m).items()}
            return {"label": label, "weights": _cache.model_fingerprint(m), "data_config": cfg}

        return {
            "model_a": model(self.model_a, self.label_a),
            "model_b": "same" if self.same else model(self.model_b, self.label_b),
            "images": _cache.images_fingerprint(self.images, self.n),
            "images_b": (None if self.images_b is None
                         else _cache.images_fingerprint(self.images_b, self.n)),
            "layers_a": self.layers_a, "layers_b": self.layers_b,
            "token_mode": self.token_mode, "estimator": ESTIMATOR,
            "engine": f"route={self.engine.route},gram_dtype={self.engine.gram_dtype}",
            "batch_size": self.batch_size, "n_images": self.n, "precision": self.precision,
        }

    @property
    def key(self) -> str:
        """The cache key of this run (computed once: it hashes the weights and images)."""
        if self._key is None:
            self._key = _cache.make_key("cka", self.key_parts())
        return self._key

    # ------------------------------------------------------------------ one batch
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _load(self, idx: range) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The preprocessed (b, 3, H, W) inputs of model A and B (None: A's pass serves)."""
        xs = self.stream_a.load(idx)
        if self.same and self.images_b is None:
            return xs[0], None
        return xs[0], self.stream_b.load(idx)[0] if self.stream_b is not None else xs[1]

    def _features(self, idx: range, xs: tuple | None = None
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        xa, xb = self._load(idx) if xs is None else xs
        with self._autocast():
            feats_a = self.cap_a.run(xa)
            if xb is None:
                fa = [feats_a[n] for n in self.layers_a]
                return fa, (None if self.self_only else [feats_a[n] for n in self.layers_b])
            feats_b = (self.cap_a if self.same else self.cap_b).run(xb)
        return [feats_a[n] for n in self.layers_a], [feats_b[n] for n in self.layers_b]

    def _add(self, engine: Any, fa: list[torch.Tensor], fb: list[torch.Tensor] | None,
             n: int) -> None:
        if self.in_hooks:
            accumulate_rows(engine, fa, fb, n)
            return
        try:
            engine.update(fa, fb)
        except ValueError as err:
            if "non-finite" in str(err):
                raise CaptureError(str(err)) from err
            raise

    def step(self, idx: range, xs: tuple | None = None) -> None:
        """Capture one batch from both models and add it to the accumulator (``xs``: its
        inputs, already loaded)."""
        self._add(self.engine, *self._features(idx, xs), len(idx))

    def result(self, done: int | None = None) -> SimilarityResult:
        """The matrix so far; ``done`` < the number of batches marks it partial."""
        meta = self.meta()
        if done is not None and done < len(self.my_batches):
            meta["partial"] = {"batches_done": done, "n_images_done": self.engine.n_examples}
        matrix = self.engine.compute().detach().cpu().numpy()
        return SimilarityResult(matrix, self.layers_a, self.layers_b, meta)

    # ------------------------------------------------------------------ cache and resume
    def _main(self) -> bool:
        return not self.sharded or _dist.is_main()

    def _bcast(self, obj: Any) -> Any:
        return _dist.broadcast_object(obj) if self.sharded else obj

    def check_ranks(self) -> None:
        """Under ``torchrun``, fail on every rank if the ranks see different models,
        weights, images or parameters (e.g. an unseeded random init)."""
        if not self.sharded:
            return
        keys = _dist.all_gather_object(self.key)
        if len(set(keys)) > 1:
            bad = [r for r, k in enumerate(keys) if k != keys[0]]
            msg = (f"ranks {bad} differ from rank 0 in models, weights, images or parameters; "
                   "every rank must load the same models (seed random inits) and images")
            raise RuntimeError(msg)

    def cached(self) -> SimilarityResult | None:
        """The stored result of this run, if any (rank 0 reads it, every rank gets it)."""
        if not self.use_cache:
            return None
        hit = _cache.load_result("cka", self.key) if self._main() else None
        hit = self._bcast(hit)
        if hit is not None:
            _warn_constant(hit)
        return hit

    def _ckpt_path(self):
        rank, world = (_dist.rank(), _dist.world()) if self.sharded else (0, 1)
        return _cache.checkpoint_path("cka", self.key, rank, world)

    def resume(self) -> int:
        """Load this rank's checkpoint, if any; returns the number of batches it holds."""
        if not self.use_cache:
            return 0
        state = _cache.load_checkpoint(self._ckpt_path())
        if (state is None or state.get("key") != self.key
                or not 0 < int(state.get("done", 0)) < len(self.my_batches)):
            return 0
        self.engine.load_state_dict(state["engine"])
        self.done = int(state["done"])
        if state.get("amp") is not None:
            self.amp_dtype = getattr(torch, state["amp"]) if state["amp"] != "none" else None
            self.amp_note = state.get("amp_note")
        return self.done

    def checkpoint(self, force: bool = False) -> None:
        """Persist the accumulator (atomically), at most every ``CHECKPOINT_EVERY_S``."""
        if not self.use_cache or self.done >= len(self.my_batches):
            return
        now = time.monotonic()
        if not force and now - self._last_ckpt < CHECKPOINT_EVERY_S:
            return
        amp = "none" if self.amp_dtype is None else str(self.amp_dtype)[len("torch."):]
        _cache.save_checkpoint(self._ckpt_path(), {
            "key": self.key, "done": self.done, "engine": self.engine.state_dict(),
            "amp": amp if self.precision == "auto" else None, "amp_note": self.amp_note})
        self._last_ckpt = now

    # ------------------------------------------------------------------ precision
    def choose_precision(self) -> None:
        """``precision="auto"``: on the first batch, compare the per-batch CKA of a mixed
        precision forward pass with the float32 one; keep mixed precision if they agree to
        ``AMP_TOLERANCE``. The float32 features are accumulated. Rank 0 decides for all."""
        from .similarity import MinibatchCKA

        if self.precision != "auto":
            return
        decision = None
        if self._main() and self.amp_note is not None:  # resumed from a checkpoint
            name = "none" if self.amp_dtype is None else str(self.amp_dtype)[len("torch."):]
            decision = (name, self.amp_note)
        elif self._main() and self.my_batches and self.done == 0:
            idx = self.my_batches[0]
            fa, fb = self._features(idx)
            self._add(self.engine, fa, fb, len(idx))
            self.done = 1
            ref = MinibatchCKA(device=self.device)
            self._add(ref, fa, fb, len(idx))
            self.amp_dtype = _amp_dtype("bfloat16", self.device)
            trial = MinibatchCKA(device=self.device)
            self._add(trial, *self._features(idx), len(idx))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                diff = np.nan_to_num(np.abs(trial.compute().cpu().numpy()
                                            - ref.compute().cpu().numpy()), nan=0.0).max()
            name = str(self.amp_dtype)[len("torch."):]
            keep = bool(diff <= AMP_TOLERANCE)
            decision = (name if keep else "none",
                        f"{name if keep else 'float32'} (auto: max |CKA difference| of {name} "
                        f"on batch 1 = {diff:.1e}, tolerance {AMP_TOLERANCE:g})")
        decision = self._bcast(decision)
        if decision is None:
            self.amp_note = "float32 (auto: no batch to test)"
            return
        self.amp_dtype = None if decision[0] == "none" else getattr(torch, decision[0])
        self.amp_note = decision[1]

    # ------------------------------------------------------------------ execution
    def steps(self, progress: bool = True) -> Iterator[int]:
        """Run this rank's remaining batches, yielding how many are done after each."""
        from tqdm.auto import tqdm

        self.check_ranks()
        self.resume()
        desc = f"CKA {self.label_a} vs {self.label_b}"
        if self.sharded:
            desc += f" (rank 0 of {_dist.world()})"
        total = sum(len(b) for b in self.my_batches)
        with self, tqdm(total=total, disable=not progress or not self._main(), unit="img",
                        desc=desc, initial=sum(len(b) for b in self.my_batches[:self.done])) as bar:
            before = self.done
            self.choose_precision()
            if self.done > before:
                bar.update(len(self.my_batches[before]))
                yield self.done
            todo = self.my_batches[self.done:]
            prefetch = PREFETCH if PREFETCH is not None else self.device.type == "cuda"
            for idx, xs in zip(todo, _prefetched(self._load, todo, prefetch), strict=True):
                self.step(idx, xs)
                self.done += 1
                self.checkpoint()
                bar.update(len(idx))
                try:
                    yield self.done
                except GeneratorExit:  # the consumer stopped between batches: keep them
                    self.checkpoint(force=True)
                    raise

    def reduce(self) -> None:
        """Join the sums of every rank (one ``all_reduce``); a no-op in one process."""
        if not self.sharded:
            return
        la = len(self.layers_a)
        lb = la if self.self_only else len(self.layers_b)
        # a rank without batches contributes zeros
        self.engine.all_reduce(sizes=(la, lb), self_comparison=self.self_only)

    def finish(self) -> SimilarityResult:
        """Reduce over ranks, compute the matrix, store it (rank 0) and drop checkpoints."""
        self.reduce()
        if self.use_cache:
            _ = self.key  # the key goes into the result's meta
        result = self.result()
        if self.use_cache:
            if self._main():
                _cache.store_result("cka", self.key, result)
            _cache.remove_checkpoint(self._ckpt_path())
        return result

    def __enter__(self) -> CKARun:
        self.cap_a.__enter__()
        try:
            if not self.same:
                self.cap_b.__enter__()
        except BaseException:
            self.cap_a.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.cap_a.__exit__(*exc)
        finally:
            if not self.same:
                self.cap_b.__exit__(*exc)
