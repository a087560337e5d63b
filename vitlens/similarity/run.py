"""The one run that drives minibatch CKA over batches of images.

:class:`CKARun` holds the models, their captures, the image streams and the accumulator,
for any number of models with row and column selections. :func:`vitlens.cka`,
:func:`vitlens.api.cka_stream`, the joint comparisons (:func:`joint_cka`: data scale,
fine-tuning, MLP-Mixer), :func:`vitlens.analyses.cka_with_confidence`, head-subset CKA and
token CKA (localization) all run through it; no other loop adds batches to a
:class:`~vitlens.similarity.MinibatchCKA`.

Under ``torchrun`` each rank takes every ``world``-th batch (whole batches, so each
per-batch HSIC is the single-process one) and one ``all_reduce`` joins the float64 sums.
With the cache on, the result is stored under a key of everything it depends on, and every
few seconds the accumulator is checkpointed, so an interrupted run resumes from its last
completed batch. Hooks are on the models only while a batch runs: a paused or abandoned
stream leaves none behind.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import cache as _cache
from .. import distributed as _dist
from ..capture import TOKEN_MODES, gram_route_applies
from ..datasets.images import as_images
from ..datasets.preprocess import balanced_batches
from ..distributed import resolve_device
from ..errors import CaptureError
from ..models.labels import model_label
from ..models.loading import load_model
from ..results.similarity import SimilarityResult
from ._minibatch import MinibatchCKA
from ._run_cache import RunCache
from ._run_checks import (
    check_data_config,
    check_models,
    check_run_args,
    check_token_counts,
    explain_forward_error,
)
from ._run_layout import ESTIMATOR, RunLayout
from ._run_support import _amp_dtype, _check_images, _prefetched

__all__ = ["ESTIMATOR", "PRECISIONS", "CKARun", "LayerSpec", "cka", "joint_cka"]

LayerSpec = str | Iterable[str] | None

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
AMP_TOLERANCE = 1e-4  # "auto" keeps mixed precision only within this of float32 (batch 1)
CHECKPOINT_EVERY_S = 5.0  # at most one checkpoint per this many seconds (0: every batch)
GRAM_IN_HOOKS = True  # flatten/spatial: reduce each layer to its Gram inside its hook
PREFETCH: bool | None = None  # load batch k+1 in a thread during batch k (None: on CUDA)

#: ``features(inputs, feats) -> (rows, cols)``: custom per-batch features, from the
#: per-source inputs and ``{label: {name: activation}}``.
FeatureFn = Callable[[tuple, dict], tuple[Any, Any]]


class CKARun(RunLayout, RunCache):
    """Minibatch CKA between the layers of one or two models (:func:`vitlens.cka`'s run).

    ``CKARun(model_a, images, model_b, layers_a=..., ...)`` is the pair form;
    :meth:`CKARun.joint` is the general one (any number of models, row and column
    selections, custom captures and features).

    Attributes:
        batches: Every batch of the run (``range`` of image indices), balanced.
        my_batches: This rank's share (all of them without ``torchrun``).
        layers_a, layers_b: The row and column names.
        engine: The :class:`~vitlens.similarity.MinibatchCKA` accumulator.
        label_a, label_b: The models' labels in the result's metadata.
    """

    def __init__(self, model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None,
                 *, layers_a: LayerSpec, layers_b: LayerSpec, token_mode: str, batch_size: int,
                 device: str | torch.device | None, n_images: int | None, images_b: Any,
                 cache: bool = False, precision: str = "float32",
                 distributed: bool | None = None) -> None:
        same = model_b is None or model_b is model_a
        models = {"a": model_a} if same else {"a": model_a, "b": model_b}
        rows = {"a": layers_a}
        if same and images_b is None:
            cols = {"a": layers_b if layers_b is not None else layers_a}
        else:
            cols = {"b": layers_b if layers_b is not None or not same else layers_a}
            if same:
                models["b"] = model_a
        self._setup(models, images, rows=rows, cols=cols,
                    images_of={"b": images_b} if images_b is not None else None,
                    token_mode=token_mode, batch_size=batch_size, device=device,
                    n_images=n_images, cache=cache, precision=precision,
                    distributed=distributed, pair=True)

    @classmethod
    def joint(cls, models: Mapping[str, str | nn.Module], images: Any, *,
              rows: Mapping[str, LayerSpec], cols: Mapping[str, LayerSpec] | None = None,
              images_of: Mapping[str, Any] | None = None, token_mode: str = "flatten",
              batch_size: int = 64, device: str | torch.device | None = None,
              n_images: int | None = None, cache: bool = False, precision: str = "float32",
              distributed: bool | None = None, captures: Mapping[str, Any] | None = None,
              features: FeatureFn | None = None,
              engine: Callable[[Any, Any], MinibatchCKA] | None = None,
              shuffles: int = 0, generator: torch.Generator | None = None,
              gram_in_hooks: bool | None = None, desc: str = "CKA",
              on_batch: Callable[[range], None] | None = None) -> CKARun:
        """A run over several models.

        Args:
            models: label -> model (name or module); one capture per distinct module.
            rows, cols: label -> layer selector. Every row layer is compared with every
                column layer; ``cols=None`` compares the rows with themselves in one pass.
                Names are ``"label::layer"`` when several models give rows (or columns).
            images_of: label -> a second image set for that model (paired one to one).
            captures: label -> a ready capture (a context manager with ``layers`` and
                ``run(x) -> {name: tensor}``), e.g. attention-head outputs.
            features: ``features(inputs, feats) -> (rows, cols)`` replaces the selection:
                it builds each batch's features from the per-source inputs and captured
                ``{label: {name: tensor}}`` (token CKA builds stacks here).
            engine: ``engine(rows, cols) -> accumulator`` for the first batch's features
                (e.g. a :class:`~vitlens.similarity.StackedCKA`).
            shuffles: Extra accumulators in :attr:`null_engines`, each fed the columns with
                the examples shuffled within every batch (a permutation null).
            generator: The shuffles' random generator.
            gram_in_hooks: Reduce wide layers to Grams inside the hooks (default: the
                module's ``GRAM_IN_HOOKS`` for flatten/spatial; off with custom features).
            desc: The progress bar's text.
            on_batch: Called with each batch's indices after it is added.

            The other arguments are those of :func:`vitlens.cka`.
        """
        run = cls.__new__(cls)
        run._setup(models, images, rows=rows, cols=cols, images_of=images_of,
                   token_mode=token_mode, batch_size=batch_size, device=device,
                   n_images=n_images, cache=cache, precision=precision,
                   distributed=distributed, captures=captures, features=features,
                   engine=engine, shuffles=shuffles, generator=generator,
                   gram_in_hooks=gram_in_hooks, desc=desc, on_batch=on_batch)
        return run

    # ------------------------------------------------------------------ set-up
    def _setup(self, models: Mapping[str, Any], images: Any, *, rows: Mapping[str, LayerSpec],
               cols: Mapping[str, LayerSpec] | None, images_of: Mapping[str, Any] | None,
               token_mode: str, batch_size: int, device: Any, n_images: int | None,
               cache: bool, precision: str, distributed: bool | None, pair: bool = False,
               captures: Mapping[str, Any] | None = None, features: FeatureFn | None = None,
               engine: Callable | None = None, shuffles: int = 0,
               generator: torch.Generator | None = None, gram_in_hooks: bool | None = None,
               desc: str = "CKA", on_batch: Callable | None = None) -> None:
        # n_images, batch_size and device: the checks every public run shares
        n_images, batch_size = check_run_args(n_images=n_images, batch_size=batch_size,
                                              device=device)
        if token_mode not in TOKEN_MODES:
            msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
            raise ValueError(msg)
        if precision not in PRECISIONS:
            msg = f"unknown precision {precision!r}; choose one of {PRECISIONS}"
            raise ValueError(msg)
        captures = dict(captures or {})
        unknown = [k for k in [*rows, *(cols or {}), *captures] if k not in models]
        if unknown:
            msg = f"layer selections name models {unknown} that are not in models={list(models)}"
            raise KeyError(msg)
        custom = bool(captures) or features is not None or engine is not None or shuffles > 0
        if custom and _cache.enabled(cache):
            msg = "a run with custom captures, features or shuffles cannot use the cache"
            raise ValueError(msg)
        self.pair = pair
        # Shard over torchrun's ranks unless told not to (a caller that runs this on one
        # rank only, inside a larger distributed job, passes distributed=False).
        self.sharded = distributed is not False and (_dist.init_from_env()
                                                     or _dist.is_distributed())
        self.device = resolve_device(device)
        self.token_mode, self.batch_size, self.precision = token_mode, batch_size, precision
        self.model_inputs = dict(models)
        loaded: dict[int, nn.Module] = {}
        self.models: dict[str, nn.Module] = {}
        for k, m in models.items():
            if id(m) not in loaded:
                loaded[id(m)] = load_model(m).to(self.device)
            self.models[k] = loaded[id(m)]
        check_models(self.models)
        self.labels = {k: model_label(m) for k, m in models.items()}
        self.images = as_images(images)
        extra = {k: as_images(v) for k, v in (images_of or {}).items() if v is not None}
        self.extra_images = extra
        self.images_b = next(iter(extra.values()), None)
        self.n = _check_images(self.images, self.images_b, n_images)
        for v in list(extra.values())[1:]:
            _check_images(self.images, v, n_images)
        for k, m in self.models.items():
            check_data_config(k, m, self.extra_images.get(k, self.images))
        self.batches = balanced_batches(self.n, batch_size)
        if self.sharded and not pair:
            self.my_batches = _dist.shard_batches(self.batches, what=desc)
        else:
            self.my_batches = _dist.shard(self.batches) if self.sharded else list(self.batches)
        self.amp_dtype = _amp_dtype(precision, self.device) if precision != "auto" else None
        self.use_cache = _cache.enabled(cache)
        if gram_in_hooks is None:
            gram_in_hooks = GRAM_IN_HOOKS and not custom
        self.in_hooks = bool(gram_in_hooks) and gram_route_applies(token_mode)
        self.features_fn, self.engine_factory = features, engine
        self.shuffles, self.generator = int(shuffles), generator
        self.desc, self.on_batch = desc, on_batch
        self._build_captures(rows, cols, captures)
        self._build_streams()
        self.engine: Any = None
        if engine is None:
            self.engine = MinibatchCKA(self.layers_a, None if self.self_only else self.layers_b,
                                       device=self.device)
        self.null_engines = [MinibatchCKA(self.layers_a, self.layers_b, device=self.device)
                             for _ in range(self.shuffles)]
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

    # ------------------------------------------------------------------ one batch
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _load(self, idx: range) -> tuple[torch.Tensor, ...]:
        """The preprocessed (b, 3, H, W) input of every source, in source order."""
        per_stream = [s.load(idx) for s in self.streams]
        return tuple(per_stream[s.stream][s.slot] for s in self.sources)

    def _captured(self, xs: tuple) -> dict[str, dict[str, torch.Tensor]]:
        """One forward pass per source; ``{label: {name: activation}}``."""
        by_source: list[dict[str, torch.Tensor]] = []
        with self._autocast():
            for s, x in zip(self.sources, xs, strict=True):
                try:
                    by_source.append(s.capture.run(x))
                except (RuntimeError, AssertionError) as err:
                    raise explain_forward_error(err, s.label, s.model, x, s.images) from err
        return {k: by_source[i] for k, i in self._source_of.items()}

    def _features(self, idx: range, xs: tuple | None = None) -> tuple[Any, Any]:
        xs = self._load(idx) if xs is None else xs
        feats = self._captured(xs)
        if self.features_fn is not None:
            return self.features_fn(xs, feats)
        fa = self._select(feats, self.row_sel)
        if self.self_only and not self.shuffles:
            return fa, None
        fb = self._select(feats, self.col_sel if self.col_sel is not None else self.row_sel)
        if not self.in_hooks:
            check_token_counts(self.token_mode, self.layers_a, fa, self.layers_b, fb)
        return fa, fb

    def _add(self, engine: Any, fa: Any, fb: Any, n: int) -> None:
        """Add one batch to ``engine``: the one place minibatch CKA batches are added."""
        if self.in_hooks:
            engine.update_grams(fa, fb, n)
            return
        try:
            engine.update(fa, fb)
        except ValueError as err:
            if "non-finite" in str(err):
                raise CaptureError(str(err)) from err
            raise

    def step(self, idx: range, xs: tuple | None = None) -> None:
        """Capture one batch from every model and add it to the accumulators (``xs``: its
        inputs, already loaded). Call it inside ``with run:``."""
        fa, fb = self._features(idx, xs)
        if self.engine is None:
            self.engine = self.engine_factory(fa, fb)
        self._add(self.engine, fa, None if self.self_only else fb, len(idx))
        for eng in self.null_engines:
            order = torch.randperm(len(idx), generator=self.generator).to(fb[0].device)
            self._add(eng, fa, [f[order] for f in fb], len(idx))
        if self.on_batch is not None:
            self.on_batch(idx)

    def result(self, done: int | None = None) -> SimilarityResult:
        """The matrix so far; ``done`` < the number of batches marks it partial."""
        meta = self.meta()
        if self.pair:
            meta["blocks_a"] = self._blocks_of("a", self.row_sel["a"])
            col = "b" if self.col_sel is not None and "b" in self.col_sel else "a"
            meta["blocks_b"] = self._blocks_of(col, (self.col_sel or self.row_sel)[col])
        if done is not None and done < len(self.my_batches):
            meta["partial"] = {"batches_done": done, "n_images_done": self.engine.n_examples}
        matrix = self.engine.compute().detach().cpu().numpy()
        return SimilarityResult(matrix, self.layers_a, self.layers_b, meta)

    def matrix(self) -> np.ndarray:
        """The (L_a, L_b) float64 matrix of the accumulated batches."""
        return self.engine.compute().detach().cpu().double().numpy()

    # ------------------------------------------------------------------ cache and resume
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
        if self.precision != "auto":
            return
        decision = None
        if self._main() and self.amp_note is not None:  # resumed from a checkpoint
            name = "none" if self.amp_dtype is None else str(self.amp_dtype)[len("torch."):]
            decision = (name, self.amp_note)
        elif self._main() and self.my_batches and self.done == 0:
            idx = self.my_batches[0]
            with self:
                fa, fb = self._features(idx)
                fb = None if self.self_only else fb
                self._add(self.engine, fa, fb, len(idx))
                self.done = 1
                ref = MinibatchCKA(device=self.device)
                self._add(ref, fa, fb, len(idx))
                self.amp_dtype = _amp_dtype("bfloat16", self.device)
                trial = MinibatchCKA(device=self.device)
                ta, tb = self._features(idx)
                self._add(trial, ta, None if self.self_only else tb, len(idx))
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
        """Run this rank's remaining batches, yielding how many are done after each.

        The hooks are registered for each batch and removed before the yield, so a paused
        (or abandoned) generator leaves no hook on the models.
        """
        from tqdm.auto import tqdm

        self.check_ranks()
        self.resume()
        desc = (f"CKA {self.label_a} vs {self.label_b}" if self.pair else self.desc)
        if self.sharded:
            desc += f" (rank 0 of {_dist.world()})"
        total = sum(len(b) for b in self.my_batches)
        prefetch = PREFETCH if PREFETCH is not None else self.device.type == "cuda"
        with tqdm(total=total, disable=not progress or not self._main(), unit="img",
                  desc=desc, initial=sum(len(b) for b in self.my_batches[:self.done])) as bar:
            before = self.done
            self.choose_precision()
            if self.done > before:
                bar.update(len(self.my_batches[before]))
                yield self.done
            todo = self.my_batches[self.done:]
            inputs = _prefetched(self._load, todo, prefetch)
            try:
                for idx, xs in zip(todo, inputs, strict=True):
                    with self:
                        self.step(idx, xs)
                    self.done += 1
                    self.checkpoint()
                    bar.update(len(idx))
                    try:
                        yield self.done
                    except GeneratorExit:  # the consumer stopped between batches: keep them
                        self.checkpoint(force=True)
                        raise
            finally:
                inputs.close()

    def run(self, progress: bool = True) -> CKARun:
        """Every remaining batch, then :meth:`reduce`; returns ``self``."""
        for _ in self.steps(progress):
            pass
        self.reduce()
        return self

    def reduce(self) -> None:
        """Join the sums of every rank (one ``all_reduce``); a no-op in one process."""
        if not self.sharded:
            return
        la = len(self.layers_a)
        lb = la if self.self_only else len(self.layers_b)
        # a rank without batches contributes zeros
        self.engine.all_reduce(sizes=(la, lb), self_comparison=self.self_only)
        for eng in self.null_engines:
            eng.all_reduce(sizes=(la, len(self.layers_b)))

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
        stack = ExitStack()
        try:
            seen: set[int] = set()
            for s in self.sources:
                if id(s.capture) not in seen:
                    seen.add(id(s.capture))
                    stack.enter_context(s.capture)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = getattr(self, "_stack", None), None
        if stack is not None:
            stack.close()


def cka(model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None = None, *,
        layers_a: LayerSpec = None, layers_b: LayerSpec = None, token_mode: str = "flatten",
        batch_size: int = 64, device: str | torch.device | None = None, progress: bool = True,
        n_images: int | None = None, images_b: Any = None, cache: bool = True,
        precision: str = "float32", distributed: bool | None = None) -> SimilarityResult:
    """:func:`vitlens.cka` (documented there)."""
    run = CKARun(model_a, images, model_b, layers_a=layers_a, layers_b=layers_b,
                 token_mode=token_mode, batch_size=batch_size, device=device,
                 n_images=n_images, images_b=images_b, cache=cache, precision=precision,
                 distributed=distributed)
    hit = run.cached()
    if hit is not None:
        return hit
    for _ in run.steps(progress):
        pass
    return run.finish()


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
    run = CKARun.joint(models, images, rows=rows, cols=cols, token_mode=token_mode,
                       batch_size=batch_size, device=device, n_images=n_images, desc=desc)
    return run.run(progress).blocks()
