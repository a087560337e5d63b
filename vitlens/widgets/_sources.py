"""What the explorers let users choose: models (names or objects), image sources, uploads."""

from __future__ import annotations

import io
import re
import threading
from typing import Any

import numpy as np
import torch
from torch import nn

#: Image sources offered by name in the explorers' dropdowns.
IMAGE_SOURCES = ("samples", "synthetic")


def source_label(images: Any) -> str:
    """The dropdown text for an image source passed in by the user (never a bare type name).

    A folder shows its path, a named source its name, a list or tensor its length.
    """
    if isinstance(images, str | bytes) or hasattr(images, "__fspath__"):
        import os

        return f"folder: {os.fspath(images)!s}"
    name = getattr(images, "name", None)
    if isinstance(name, str) and name:
        return f"custom: {name}"
    try:
        n = len(images)
    except TypeError:
        return f"custom: {type(images).__name__}"
    return f"custom: {type(images).__name__} of {n} images"


def zoo_choices() -> list[str]:
    """``"vitlens/<name>"`` for every zoo model."""
    from .. import zoo

    return [f"vitlens/{n}" for n in zoo.names()]


def object_label(model: nn.Module, taken: set[str]) -> str:
    """A readable, unique label for a model object passed to an explorer."""
    from ..api import model_label

    base = model_label(model)
    label, k = base, 2
    while label in taken:
        label, k = f"{base} ({k})", k + 1
    return label


class ModelChoices:
    """Model names and objects an explorer can switch between, loaded once each.

    Args:
        *models: Names (zoo, timm) or ``nn.Module`` objects offered first.
    """

    def __init__(self, *models: str | nn.Module) -> None:
        self.objects: dict[str, nn.Module] = {}
        self._loaded: dict[str, nn.Module] = {}
        self._lock = threading.Lock()
        self.labels: list[str] = []
        for m in models:
            self.add(m)

    def add(self, model: str | nn.Module) -> str:
        """Register a model and return its label (the text shown in the dropdown)."""
        if isinstance(model, nn.Module):
            for label, obj in self.objects.items():
                if obj is model:
                    return label
            label = object_label(model, set(self.labels))
            self.objects[label] = model
        elif isinstance(model, str):
            label = model
        else:
            msg = f"a model must be a name or a torch.nn.Module, got {type(model).__name__}"
            raise TypeError(msg)
        if label not in self.labels:
            self.labels.append(label)
        return label

    def options(self) -> list[str]:
        return list(dict.fromkeys(self.labels + zoo_choices()))

    def loaded(self, label: str) -> nn.Module | None:
        """The model for a label if it is at hand (a passed object, or loaded before), else
        ``None``; never loads anything."""
        label = (label or "").strip()
        if label in self.objects:
            return self.objects[label].eval()
        return self._loaded.get(label)  # no lock: a load in flight holds it for long

    def load(self, label: str) -> nn.Module:
        """The model for a label: a passed object, or ``vitlens.load_model(label)`` (cached).

        Raises:
            ValueError: an empty name.
            KeyError, WeightsUnavailableError: from :func:`vitlens.load_model`.
        """
        label = (label or "").strip()
        if not label:
            msg = "no model chosen: type a zoo name (vitlens/vit-cls) or a timm model name"
            raise ValueError(msg)
        if label in self.objects:
            return self.objects[label].eval()
        with self._lock:
            if label not in self._loaded:
                from ..models.loading import load_model

                self._loaded[label] = load_model(label)
            return self._loaded[label]


def image_source(choice: Any, n: int | None = None, custom: dict[str, Any] | None = None):
    """An :class:`~vitlens.datasets.ImageSource` for a dropdown choice.

    Args:
        choice: ``"samples"``, ``"synthetic"``, a key of ``custom``, or anything
            :func:`vitlens.datasets.as_images` accepts.
        n: How many images are wanted (sample photos then add deterministic crops, the
            synthetic set is generated at that size).
        custom: Named image sources the user passed in.
    """
    from ..datasets import as_images, samples

    if isinstance(choice, str) and custom and choice in custom:
        return as_images(custom[choice])
    if choice == "samples":
        return samples(n)
    if choice == "synthetic":
        from ..datasets import synthetic

        return as_images(synthetic("test", int(n or 64)))
    return as_images(choice)


def display_image(x: torch.Tensor, model: nn.Module) -> np.ndarray:
    """The (H, W, 3) uint8 picture a model saw, from its preprocessed (3, H, W) input."""
    from ..datasets import data_config

    cfg = data_config(model)
    mean = torch.tensor(cfg["mean"], dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(cfg["std"], dtype=torch.float32).view(3, 1, 1)
    img = (x.detach().cpu().float() * std + mean).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def preprocess_one(image: Any, model: nn.Module, preprocessed: bool = False) -> torch.Tensor:
    """One image as a (1, 3, H, W) model input.

    Args:
        image: A PIL image or an array; with ``preprocessed=True``, a (3, H, W) tensor that is
            used as is.
    """
    from ..datasets import to_pil, transform_for

    if preprocessed:
        return torch.as_tensor(image)[None].float()
    return transform_for(model)(to_pil(image))[None]


def read_upload(upload: dict[str, Any]) -> Any:
    """The RGB PIL image of one ``FileUpload`` entry (``name`` and ``content``).

    Raises:
        ValueError: The file is not an image Pillow can open (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    name = upload.get("name", "upload")
    try:
        with Image.open(io.BytesIO(bytes(upload["content"]))) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        # Pillow names the in-memory buffer (<_io.BytesIO object at 0x...>): drop it.
        why = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(err)).strip()
        msg = (f"could not read the uploaded file {name!r}: it is not an image Pillow "
               f"can open (PNG, JPEG, WebP, ...){f'; {why}' if why else ''}")
        raise ValueError(msg) from None
