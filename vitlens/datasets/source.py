"""The base of every image source: a sequence of images with a name and a fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["ImageSource"]


class ImageSource(Sequence):
    """A sequence of RGB PIL images with a stable name and content fingerprint."""

    name: str = "images"

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i):  # pragma: no cover - abstract
        raise NotImplementedError

    def _item_bytes(self, i: int) -> bytes:
        img = self[i]
        return f"{img.size}".encode() + img.tobytes()

    def fingerprint(self) -> str:
        """SHA-256 over every image's content, in order (for caching)."""
        h = hashlib.sha256(f"{type(self).__name__}:{len(self)}".encode())
        for i in range(len(self)):
            h.update(self._item_bytes(i))
        return h.hexdigest()[:32]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)})"


def tensor_item_bytes(t: torch.Tensor, preprocessed: bool) -> bytes:
    """What the cache key hashes of one image held as a tensor: its shape, dtype, whether
    models see it as is (``preprocessed``) or preprocess it, and its raw bytes. The same
    bytes reshaped, or read as another dtype, are other images."""
    import torch

    flat = t.detach().cpu().contiguous().reshape(-1)
    head = f"{tuple(t.shape)}|{t.dtype}|preprocessed={bool(preprocessed)}|".encode()
    return head + (flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
