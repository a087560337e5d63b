"""A torch ``DataLoader`` as an image source, as the CKA packages users come from take it.

The loader is read once, in its own order, and its batches are kept: batches of float
tensors (n, C, H, W) are already preprocessed (a model sees them as they are, as with an
(n, C, H, W) tensor), batches of uint8 images are raw (each model applies its own
preprocessing). A batch may be the images alone, an ``(images, labels)`` pair, or a dict
with an ``"image"`` / ``"pixel_values"`` entry; labels are kept in ``.labels``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import ImageError
from .source import ImageSource, tensor_item_bytes

__all__ = ["LoaderImages"]

_IMAGE_KEYS = ("image", "images", "pixel_values", "img", "x")


def _split(batch: Any, k: int) -> tuple[Any, Any]:
    """(images, labels or None) of one batch."""
    if isinstance(batch, dict):
        for key in _IMAGE_KEYS:
            if key in batch:
                labels = batch.get("label", batch.get("labels"))
                return batch[key], labels
        msg = (f"DataLoader batch {k} is a dict with keys {sorted(batch)}; vitlens reads the "
               f"images from one of {_IMAGE_KEYS}")
        raise ImageError(msg)
    if isinstance(batch, tuple | list):
        if not batch:
            msg = f"DataLoader batch {k} is empty"
            raise ImageError(msg)
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


class LoaderImages(ImageSource):
    """The images of one pass over a ``torch.utils.data.DataLoader``.

    Attributes:
        preprocessed: True for float batches (used as is), False for uint8 ones.
        labels: (n,) labels when the batches carry them, else None.

    Raises:
        ImageError: a batch that is not an image tensor, or batches that mix dtypes or
            image shapes.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, name: str | None = None, *,
                 to_image: Callable[..., Any] | None = None) -> None:
        self.to_image = to_image  # raw (uint8) images -> PIL, e.g. datasets.images.to_pil
        chunks: list[torch.Tensor] = []
        labels: list[Any] = []
        for k, batch in enumerate(loader):
            images, lab = _split(batch, k)
            if not isinstance(images, torch.Tensor) or images.dim() != 4:
                what = (f"a tensor of shape {tuple(images.shape)}" if isinstance(
                    images, torch.Tensor) else type(images).__name__)
                msg = (f"DataLoader batch {k} holds {what}; vitlens needs batches of images "
                       "(b, C, H, W) (or (b, H, W, C) uint8), alone or as (images, labels)")
                raise ImageError(msg)
            if chunks and (images.dtype != chunks[0].dtype
                           or images.shape[1:] != chunks[0].shape[1:]):
                msg = (f"DataLoader batch {k} is {images.dtype} {tuple(images.shape[1:])} but "
                       f"batch 0 was {chunks[0].dtype} {tuple(chunks[0].shape[1:])}; every "
                       "image must have the same size and dtype")
                raise ImageError(msg)
            chunks.append(images.detach().cpu())
            if lab is not None:
                labels.append(torch.as_tensor(lab).detach().cpu())
        if not chunks:
            msg = "the DataLoader yielded no batches"
            raise ImageError(msg)
        self.tensor = torch.cat(chunks)
        self.preprocessed = self.tensor.dtype.is_floating_point
        n = int(self.tensor.shape[0])
        self.labels = (torch.cat(labels).numpy() if labels and sum(len(x) for x in labels) == n
                       else None)
        self.name = name or f"DataLoader({type(loader.dataset).__name__})"

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def __getitem__(self, i: int) -> Any:
        if self.preprocessed or self.to_image is None:
            return self.tensor[i]
        return self.to_image(self.tensor[i], where=f"DataLoader image {i}")

    def _item_bytes(self, i: int) -> bytes:
        return tensor_item_bytes(self.tensor[i], self.preprocessed)
