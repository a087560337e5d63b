"""Image sources: folders, PIL images or arrays, torch Datasets, and the sample photos.

Every source is a sequence of RGB ``PIL.Image`` objects, so each model can apply its own
timm preprocessing to the same images in the same order.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import ImageError
from .pixels import array_to_rgb, pil_to_rgb
from .source import ImageSource, tensor_item_bytes

_FIRST = 3  # how many names a skipped-files warning lists per reason


class SkippedFilesWarning(UserWarning):
    """Files in an image folder that are not used (the message lists them and why)."""


@functools.cache
def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of every format Pillow can decode:
    its registered extensions whose format has an open handler, less the stub formats
    (BUFR, GRIB, HDF5, WMF) and MPEG, which Pillow identifies but cannot read."""
    Image.init()
    found = set()
    for ext, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get(fmt)
        if opener is None or fmt == "MPEG":
            continue
        if isinstance(opener[0], type) and issubclass(opener[0], ImageFile.StubImageFile):
            continue
        found.add(ext.lower())
    return frozenset(found)


def to_pil(obj: Any, where: str = "image") -> Image.Image:
    """An RGB PIL image from a PIL image, an (H, W[, C]) array or a (C, H, W) / (H, W) tensor.

    Pixel values are scaled by the range of their dtype or PIL mode, or refused with an
    :class:`ImageError`; nothing is clipped. ``uint8`` is used as is, ``uint16`` and 16-bit
    PIL images are divided by 65535, floats must lie in [0, 1] (or be whole numbers in
    0-255), ``bool`` is 0 or 255. See :mod:`vitlens.datasets.pixels` for every rule.

    Args:
        obj: The image.
        where: How error messages name it.

    Raises:
        ImageError: an unsupported type, shape, dtype or mode, or values out of range.
    """
    if isinstance(obj, Image.Image):
        return pil_to_rgb(obj, where)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3):
            t = t.permute(1, 2, 0)
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        if t.dtype.is_complex:
            msg = f"{where} is a complex tensor ({t.dtype}); pass real pixel values"
            raise ImageError(msg)
        obj = t.numpy()
    if isinstance(obj, np.ndarray):
        return array_to_rgb(obj, where)
    msg = f"{where} is a {type(obj).__name__}; expected a PIL image, a NumPy array or a tensor"
    raise ImageError(msg)


def _is_hidden(path: Path, root: Path) -> bool:
    """A dot file or a file inside a dot folder (``.DS_Store``, macOS ``._*`` copies)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def read_image_file(path: str | os.PathLike) -> Image.Image:
    """Read one image file as an RGB PIL image (see :func:`to_pil` for the scaling rules).

    Raises:
        ImageError: the file is unreadable, not an image, too large for Pillow's
            decompression-bomb limit, or holds pixel values vitlens refuses; the message
            names the file.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                rgb = pil_to_rgb(img, where=f"image file {str(path)!r}")
        _rewarn(caught, path)
        return rgb
    except Image.DecompressionBombError as err:
        msg = (f"image file {str(path)!r} is larger than Pillow's decompression-bomb limit "
               f"({err}). If you trust the file, raise the limit before reading it: "
               "PIL.Image.MAX_IMAGE_PIXELS = None (or a larger number of pixels); "
               "or downscale the file")
        raise ImageError(msg) from err
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        msg = (f"could not read image file {str(path)!r} ({type(err).__name__}: {err}); "
               "it is corrupt or not an image: remove or replace it")
        raise ImageError(msg) from err


def _rewarn(caught: list[warnings.WarningMessage], path: Path) -> None:
    """Pass on the warnings of reading ``path``; Pillow's decompression-bomb warning (a file
    above its pixel limit but below twice it, which it decodes) now names the file."""
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            msg = (f"image file {str(path)!r} is above Pillow's decompression-bomb limit "
                   f"({w.message}); it was read. If you do not trust it, remove it")
            warnings.warn(msg, Image.DecompressionBombWarning, stacklevel=4)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _list_folder(root: Path, recursive: bool) -> tuple[list[Path], dict[str, list[str]]]:
    """The image files under ``root`` (sorted), and what was left out, by reason.

    Raises:
        ImageError: a link with an image file's name whose target is missing.
    """
    exts = image_extensions()
    paths: list[Path] = []
    skipped: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*") if recursive else root.iterdir()):
        if _is_hidden(p, root):
            continue
        rel = str(p.relative_to(root))
        if p.is_dir():
            if not recursive:
                skipped.setdefault("subfolders, not searched without recursive=True",
                                   []).append(rel + "/")
        elif p.is_symlink() and not p.exists():
            if p.suffix.lower() in exts:
                msg = (f"image file {str(p)!r} is a broken link (to {os.readlink(p)!r}); "
                       "restore its target, or remove the link")
                raise ImageError(msg)
            skipped.setdefault("broken links", []).append(rel)
        elif not p.is_file():
            skipped.setdefault("not regular files", []).append(rel)
        elif p.suffix.lower() in exts:
            paths.append(p)
        else:
            skipped.setdefault("not an image type Pillow reads", []).append(rel)
    return paths, skipped


def _skipped_text(skipped: dict[str, list[str]]) -> str:
    parts = []
    for why, names in skipped.items():
        first = ", ".join(names[:_FIRST]) + (", ..." if len(names) > _FIRST else "")
        parts.append(f"{why} ({len(names)}): {first}")
    return "; ".join(parts)


class FolderImages(ImageSource):
    """Every image file in a folder (sorted by name; subfolders with ``recursive=True``):
    every file type Pillow can read (see :func:`image_extensions`).

    Hidden files and folders (names starting with ``.``, such as the ``._photo.jpg`` copies
    macOS leaves on shared drives) are skipped. Anything else left out (other files,
    subfolders when not recursive, broken links to non-image names) is listed in one
    :class:`SkippedFilesWarning` per folder.

    Raises:
        ImageError: the folder is missing or holds no image, or a link named like an image
            file is broken (an image that cannot be read is an error, never left out).
    """

    def __init__(self, folder: str | os.PathLike, *, recursive: bool = False) -> None:
        root = Path(folder)
        if not root.is_dir():
            msg = f"image folder {str(root)!r} does not exist or is not a directory"
            raise ImageError(msg)
        self.paths, self.skipped = _list_folder(root, recursive)
        if not self.paths:
            found = f"; found {_skipped_text(self.skipped)}" if self.skipped else ""
            msg = (f"no image files in {str(root)!r} (looked for every type Pillow reads, "
                   f"such as .jpg, .png, .webp, .tif{found}); point --images at a folder of "
                   "photos, or use 'samples'")
            raise ImageError(msg)
        if self.skipped:
            n = sum(len(v) for v in self.skipped.values())
            msg = (f"{n} entr{'y' if n == 1 else 'ies'} in image folder {str(root)!r} "
                   f"{'is' if n == 1 else 'are'} not used: {_skipped_text(self.skipped)}; "
                   f"the {len(self.paths)} image file{'' if len(self.paths) == 1 else 's'} "
                   f"in it {'is' if len(self.paths) == 1 else 'are'} used")
            warnings.warn(msg, SkippedFilesWarning, stacklevel=2)
        self.name = str(root)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Image.Image:
        return read_image_file(self.paths[i])

    def _item_bytes(self, i: int) -> bytes:
        return self.paths[i].name.encode() + self.paths[i].read_bytes()


class ListImages(ImageSource):
    """A list of PIL images, arrays or tensors, or an (n, H, W, C) uint8 array."""

    def __init__(self, items: Sequence[Any], name: str = "images") -> None:
        self.items = items
        self.name = name

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Image.Image:
        return to_pil(self.items[i], where=f"image {i}")


class DatasetImages(ImageSource):
    """A torch Dataset whose items are images or ``(image, label)`` pairs."""

    def __init__(self, dataset: torch.utils.data.Dataset, name: str | None = None) -> None:
        self.dataset = dataset
        self.name = name or type(dataset).__name__

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Image.Image:
        item = self.dataset[i]
        if isinstance(item, tuple | list):
            item = item[0]
        return to_pil(item, where=f"dataset item {i}")


class TensorImages(ImageSource):
    """An already preprocessed (n, 3, H, W) float tensor: models see it as is."""

    preprocessed = True

    def __init__(self, tensor: torch.Tensor, name: str = "tensor") -> None:
        if tensor.dim() != 4:
            msg = f"a tensor of images must be (n, C, H, W); got shape {tuple(tensor.shape)}"
            raise ImageError(msg)
        if not tensor.dtype.is_floating_point:
            msg = (f"an already preprocessed tensor must be floating point; got {tensor.dtype} "
                   f"of shape {tuple(tensor.shape)}. A uint8 tensor holds raw images: pass it "
                   "to as_images (or vitlens.cka) as is, and each model preprocesses it")
            raise ImageError(msg)
        self.tensor = tensor
        self.name = name

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tensor[i]

    def _item_bytes(self, i: int) -> bytes:
        return tensor_item_bytes(self.tensor[i], self.preprocessed)


def as_images(images: Any) -> ImageSource:
    """Turn what a user passes as images into an :class:`ImageSource`.

    Accepts a folder path, ``"samples"`` (the scikit-image and scikit-learn photos), a list
    of PIL images or arrays, an (n, H, W, C) uint8 array, a torch Dataset, a torch
    DataLoader (see :class:`~vitlens.datasets.loaders.LoaderImages`), an already
    preprocessed (n, C, H, W) float tensor (models see it as is), an (n, C, H, W) or
    (n, H, W, C) uint8 tensor of raw images (each model preprocesses them), or an
    ImageSource.
    """
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, str) and images == "samples":
        from .samples import samples

        return samples()
    if isinstance(images, str | os.PathLike):
        return FolderImages(images)
    if isinstance(images, torch.Tensor):
        if images.dim() == 4 and images.dtype in (torch.uint8, torch.bool):
            # uint8 pixels are raw images, never model inputs: each model preprocesses them
            return ListImages(list(images), name="uint8 tensor")
        return TensorImages(images)
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            msg = f"an array of images must be (n, H, W, C); got shape {images.shape}"
            raise ImageError(msg)
        return ListImages(images, name="array")
    if isinstance(images, torch.utils.data.DataLoader):
        from .loaders import LoaderImages

        return LoaderImages(images, to_image=to_pil)
    if isinstance(images, torch.utils.data.Dataset):
        return DatasetImages(images)
    if isinstance(images, Sequence):
        return ListImages(images)
    msg = (f"cannot use {type(images).__name__} as images: pass a folder, 'samples', a list of "
           "PIL images or arrays, an (n, H, W, C) array, a torch Dataset or DataLoader, or an "
           "(n, C, H, W) tensor")
    raise ImageError(msg)
