"""``vitlens.cka``: minibatch CKA between every pair of layers of one or two models."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from .capture import TOKEN_MODES, Capture
from .datasets.images import ImageSource, as_images
from .datasets.preprocess import MultiModelBatches, balanced_batches
from .errors import ImageError
from .models.loading import load_model
from .similarity_result import SimilarityResult

LayerSpec = str | Iterable[str] | None


def model_label(model: str | nn.Module) -> str:
    """A readable name for a model: its name, or its timm architecture."""
    if isinstance(model, str):
        return model
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = getattr(model, "vitlens_name", None) or cfg.get("architecture")
    if name and cfg.get("tag"):
        name = f"{name}.{cfg['tag']}"
    return name or type(model).__name__


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


class CKARun:
    """Set-up shared by :func:`cka` and :func:`cka_stream` (models, layers, batches)."""

    def __init__(self, model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None,
                 *, layers_a: LayerSpec, layers_b: LayerSpec, token_mode: str, batch_size: int,
                 device: str | torch.device | None, n_images: int | None, images_b: Any) -> None:
        from .similarity import MinibatchCKA

        if token_mode not in TOKEN_MODES:
            msg = f"unknown token_mode {token_mode!r}; choose one of {TOKEN_MODES}"
            raise ValueError(msg)
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
        self.token_mode = token_mode
        self.cap_a = Capture(self.model_a, layers_a, token_mode=token_mode)
        if self.same:
            self.cap_b = Capture(self.model_a, layers_b if layers_b is not None else layers_a,
                                 token_mode=token_mode)
            self.layers_a, self.layers_b = self.cap_a.layers, self.cap_b.layers
            union = list(dict.fromkeys(self.layers_a + self.layers_b))
            self.cap_a = Capture(self.model_a, union, token_mode=token_mode)
            self.self_only = self.layers_a == self.layers_b
        else:
            self.cap_b = Capture(self.model_b, layers_b, token_mode=token_mode)
            self.layers_a, self.layers_b = self.cap_a.layers, self.cap_b.layers
            self.self_only = False
        self.engine = MinibatchCKA(self.layers_a, None if self.self_only else self.layers_b,
                                   device=self.device)
        models = [self.model_a] if self.same and self.images_b is None else [self.model_a,
                                                                              self.model_b]
        self.stream_a = MultiModelBatches(self.images, models, self.batches, self.device)
        self.stream_b = (MultiModelBatches(self.images_b, [self.model_b], self.batches,
                                           self.device) if self.images_b is not None else None)
        self.batch_size = batch_size

    def meta(self) -> dict[str, Any]:
        return {
            "model_a": self.label_a, "model_b": self.label_b, "token_mode": self.token_mode,
            "estimator": "minibatch linear CKA, unbiased HSIC (Song et al. 2012)",
            "n_images": self.n, "batch_size": self.batch_size, "n_batches": len(self.batches),
            "images": getattr(self.images, "name", "images"),
        }

    def step(self, idx: range) -> None:
        """Capture one batch from both models and add it to the accumulator."""
        xs = self.stream_a.load(idx)
        feats_a = self.cap_a.run(xs[0])
        if self.same and self.images_b is None:
            fa = [feats_a[n] for n in self.layers_a]
            fb = None if self.self_only else [feats_a[n] for n in self.layers_b]
        else:
            xb = self.stream_b.load(idx)[0] if self.stream_b is not None else xs[1]
            cap_b = self.cap_a if self.same else self.cap_b
            feats_b = cap_b.run(xb)
            fa = [feats_a[n] for n in self.layers_a]
            fb = [feats_b[n] for n in self.layers_b]
        self.engine.update(fa, fb)

    def result(self, done: int | None = None) -> SimilarityResult:
        meta = self.meta()
        if done is not None and done < len(self.batches):
            meta["partial"] = {"batches_done": done, "n_images_done": self.engine.n_examples}
        matrix = self.engine.compute().detach().cpu().numpy()
        return SimilarityResult(matrix, self.layers_a, self.layers_b, meta)

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


def _steps(run: CKARun, progress: bool) -> Iterator[int]:
    """Run the batches with a progress bar, yielding the number of batches done."""
    from tqdm.auto import tqdm

    with run, tqdm(total=run.n, disable=not progress, unit="img",
                   desc=f"CKA {run.label_a} vs {run.label_b}") as bar:
        for k, idx in enumerate(run.batches, start=1):
            run.step(idx)
            bar.update(len(idx))
            yield k


def cka_stream(model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None = None,
               *, layers_a: LayerSpec = None, layers_b: LayerSpec = None,
               token_mode: str = "flatten", batch_size: int = 64,
               device: str | torch.device | None = None, progress: bool = True,
               n_images: int | None = None, images_b: Any = None,
               ) -> Iterator[SimilarityResult]:
    """Like :func:`cka`, but yields the matrix after every batch (for live views).

    Partial results carry ``meta["partial"]``; the last one is complete. Closing the
    generator stops the run and removes every hook.
    """
    run = CKARun(model_a, images, model_b, layers_a=layers_a, layers_b=layers_b,
                 token_mode=token_mode, batch_size=batch_size, device=device,
                 n_images=n_images, images_b=images_b)
    for k in _steps(run, progress):
        if k < len(run.batches):
            with warnings.catch_warnings():  # a constant layer is reported once, at the end
                warnings.simplefilter("ignore", RuntimeWarning)
                yield run.result(k)
        else:
            yield run.result()


def cka(model_a: str | nn.Module, images: Any, model_b: str | nn.Module | None = None, *,
        layers_a: LayerSpec = None, layers_b: LayerSpec = None, token_mode: str = "flatten",
        batch_size: int = 64, device: str | torch.device | None = None, progress: bool = True,
        n_images: int | None = None, images_b: Any = None) -> SimilarityResult:
    """Minibatch linear CKA between every pair of layers (Nguyen, Raghu & Kornblith 2021).

    Each batch's unbiased HSIC (Song et al. 2012) is accumulated in float64, weighted by
    the batch size, and never clamped. A model compared with itself runs in one pass.

    Args:
        model_a: A timm name, ``"vitlens/<zoo name>"`` or a module.
        images: A folder, ``"samples"``, a list of PIL images or arrays, a torch Dataset, or
            an (n, C, H, W) preprocessed tensor. Each model applies its own preprocessing.
        model_b: The second model; ``None`` compares ``model_a`` with itself.
        layers_a, layers_b: Layer selectors (``"blocks"`` by default, ``"all"``, a kind, or
            names; see :func:`vitlens.layer_catalog`).
        token_mode: ``"flatten"`` (the paper's), ``"cls"``, ``"mean"``, ``"tokens"`` or
            ``"spatial"``.
        batch_size: Images per batch (at least 4); batches are balanced so none is smaller
            than 4 and no image is dropped.
        device: ``"cpu"``, ``"cuda"``, ...; by default CUDA when available. Models are moved
            there.
        progress: Show a progress bar.
        n_images: Use only the first ``n_images`` images.
        images_b: A second image set for model B, paired with ``images`` one to one.

    Returns:
        A :class:`SimilarityResult` with ``.matrix`` of shape (L_a, L_b).
    """
    run = CKARun(model_a, images, model_b, layers_a=layers_a, layers_b=layers_b,
                 token_mode=token_mode, batch_size=batch_size, device=device,
                 n_images=n_images, images_b=images_b)
    for _ in _steps(run, progress):
        pass
    return run.result()
