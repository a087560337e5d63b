"""Per-model preprocessing and streamed batches of the same images for several models."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ImageError
from .images import ImageSource


def data_config(model: nn.Module) -> dict:
    """timm's data config of ``model`` (input size, interpolation, mean, std, crop)."""
    from timm.data import resolve_model_data_config

    cfg = dict(resolve_model_data_config(model))
    # A ViT or Mixer built with another img_size keeps its hub cfg's size: trust the model.
    embed = getattr(model, "patch_embed", None) or getattr(model, "stem", None)
    size = getattr(embed, "img_size", None)
    if size is not None and not getattr(embed, "dynamic_img_size", False):
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if tuple(cfg["input_size"][1:]) != (h, w):
            cfg["input_size"] = (cfg["input_size"][0], int(h), int(w))
            cfg["crop_pct"] = 1.0
    return cfg


def transform_for(model: nn.Module):
    """timm's evaluation transform for ``model``: resize, centre crop, tensor, normalise."""
    from timm.data import create_transform

    return create_transform(**data_config(model), is_training=False)


def _config_key(cfg: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in cfg.items()))


def balanced_batches(n: int, batch_size: int, min_size: int = 4) -> list[range]:
    """Split ``range(n)`` into near-equal contiguous batches of at most ``batch_size``.

    No batch is smaller than ``min_size`` (the unbiased HSIC needs 4 examples), and no image
    is dropped: 1030 images at batch 256 give 5 batches of 206. Only when that is
    impossible otherwise (5 images at batch 4) does a batch exceed ``batch_size``.

    Raises:
        ValueError: fewer than ``min_size`` images, or ``batch_size < min_size``.
    """
    if batch_size < min_size:
        msg = f"batch_size={batch_size} is too small: minibatch CKA needs at least {min_size}"
        raise ValueError(msg)
    if n < min_size:
        msg = (f"only {n} image{'' if n == 1 else 's'}: at least {min_size} are needed for the "
               "unbiased estimator (and a few hundred for a stable CKA); pass more images")
        raise ValueError(msg)
    k = min(-(-n // batch_size), n // min_size)
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [range(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class MultiModelBatches:
    """Stream the same images through each model's own preprocessing, batch by batch.

    Models that share a data config share one preprocessed tensor. Iterating yields, per
    batch, a tuple with one (b, 3, H, W) tensor per model.
    """

    def __init__(self, images: ImageSource, models: Sequence[nn.Module], batches: list[range],
                 device: torch.device | str | None = None) -> None:
        self.images = images
        self.batches = batches
        self.device = device
        self.preprocessed = getattr(images, "preprocessed", False)
        self._transforms: dict[tuple, object] = {}
        self._model_keys: list[tuple] = []
        for model in models:
            cfg = data_config(model)
            key = _config_key(cfg)
            if key not in self._transforms:
                from timm.data import create_transform

                self._transforms[key] = create_transform(**cfg, is_training=False)
            self._model_keys.append(key)

    def __len__(self) -> int:
        return len(self.batches)

    def load(self, idx: range) -> tuple[torch.Tensor, ...]:
        if self.preprocessed:
            x = torch.stack([self.images[i] for i in idx]).float()
            if self.device is not None:
                x = x.to(self.device)
            return tuple(x for _ in self._model_keys)
        pil = [self.images[i] for i in idx]
        out: dict[tuple, torch.Tensor] = {}
        for key, tf in self._transforms.items():
            try:
                x = torch.stack([tf(img) for img in pil])
            except RuntimeError as err:
                msg = f"could not preprocess images {idx.start}..{idx.stop - 1}: {err}"
                raise ImageError(msg) from err
            out[key] = x.to(self.device) if self.device is not None else x
        return tuple(out[key] for key in self._model_keys)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for idx in self.batches:
            yield self.load(idx)
