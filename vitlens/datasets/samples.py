"""The offline sample photos: scikit-image's and scikit-learn's bundled pictures."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .source import ImageSource

#: scikit-image photos that ship inside the package (no download), then scikit-learn's two.
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
    "retina", "camera", "coins", "moon", "brick", "grass", "gravel", "clock",
)
SKLEARN_PHOTOS = ("china", "flower")


def _load_photo(name: str) -> Image.Image:
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return Image.fromarray(load_sample_image(f"{name}.jpg")).convert("RGB")
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr).convert("RGB")


class SamplePhotos(ImageSource):
    """The 16 bundled photos; with ``n`` larger than that, deterministic random crops follow.

    Args:
        n: Number of images. ``None`` gives the 16 photos. Beyond 16, image ``i`` is a random
            square crop (a third to all of the shorter side, flipped at random) of photo
            ``i % 16``, drawn from ``seed``.
        seed: Seed of the crops.
    """

    def __init__(self, n: int | None = None, *, seed: int = 0) -> None:
        self.photo_names = SKIMAGE_PHOTOS + SKLEARN_PHOTOS
        self.n = len(self.photo_names) if n is None else int(n)
        if self.n < 1:
            msg = f"samples(n={n}) needs n >= 1"
            raise ValueError(msg)
        self.seed = seed
        self.name = f"samples(n={self.n}, seed={seed})"
        self._cache: dict[str, Image.Image] = {}

    def __len__(self) -> int:
        return self.n

    def photo(self, name: str) -> Image.Image:
        if name not in self._cache:
            self._cache[name] = _load_photo(name)
        return self._cache[name]

    def __getitem__(self, i: int) -> Image.Image:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        k = len(self.photo_names)
        img = self.photo(self.photo_names[i % k])
        if i < k:
            return img
        rng = np.random.default_rng([self.seed, i])
        w, h = img.size
        side = int(min(w, h) * rng.uniform(1 / 3, 1.0))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        crop = img.crop((x0, y0, x0 + side, y0 + side))
        return crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def samples(n: int | None = None, *, seed: int = 0) -> SamplePhotos:
    """The offline sample photos (see :class:`SamplePhotos`)."""
    return SamplePhotos(n, seed=seed)
