"""A deterministic, offline synthetic dataset: shapes in clutter.

Each 64x64 RGB image shows one target object from 10 shape classes (disc, ring, square,
frame, triangle, hollow triangle, plus, cross, bars, crescent) at a random position in the
frame, with random size (18-30 px across), rotation (+-20 degrees) and fill colour inside a
dark rim. It sits on a textured background (smooth colour noise plus stripes) among up to
three smaller distractor shapes (discs, rings, boxes, bars). Domain 1 renders the same classes
in a visibly different style (grey checkerboard backgrounds, hollow outlines, pixel noise)
and serves the fine-tuning analysis.

Determinism: image ``i`` depends only on ``(split, i, seed, domain)``. Images are rendered in
fixed blocks of 256 indices, each from its own ``np.random.default_rng([seed, split, domain,
block, ...])`` streams, so ``synthetic("train", 500)`` is a prefix of ``synthetic("train",
1000)`` and the result is the same in every process. The splits use disjoint streams.

Speed: rendering is vectorised in NumPy over blocks: 50,000 images take about 15-20 s on one
core (about 0.3-0.4 ms per image).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch.utils.data
from PIL import Image

__all__ = ["CLASSES", "SPLITS", "SyntheticDataset", "synthetic"]

SPLITS = ("train", "val", "test")
CLASSES = (
    "disc", "ring", "square", "frame", "triangle",
    "hollow-triangle", "plus", "cross", "bars", "crescent",
)  # fmt: skip
SIZE = 64
_BLOCK = 256
_N_DISTRACT = 3


def _interp_matrix(n_in: int, n_out: int = SIZE) -> np.ndarray:
    """(n_out, n_in) bilinear upsampling matrix (align-corners)."""
    pos = np.linspace(0, n_in - 1, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


_GRID = np.arange(SIZE, dtype=np.float32) + 0.5  # pixel centres
_UP5 = _interp_matrix(5)


def _params(split_id: int, seed: int, domain: int, block: int) -> dict[str, np.ndarray]:
    """Every non-pixel random choice of one block (cheap; used for labels and boxes too)."""
    rng = np.random.default_rng([seed, split_id, domain, block, 0])
    b = _BLOCK
    label = rng.integers(0, len(CLASSES), b)
    radius = rng.uniform(9, 15, b).astype(np.float32)  # px
    theta = np.deg2rad(rng.uniform(-20, 20, b)).astype(np.float32)
    half = radius * (np.abs(np.cos(theta)) + np.abs(np.sin(theta)))
    margin = 0.75 * half  # the object may touch and slightly cross the border
    cx = (margin + rng.random(b) * (SIZE - 2 * margin)).astype(np.float32)
    cy = (margin + rng.random(b) * (SIZE - 2 * margin)).astype(np.float32)
    return {
        "label": label,
        "radius": radius,
        "theta": theta,
        "cx": cx,
        "cy": cy,
        "half": half.astype(np.float32),
        "colour": rng.uniform(0, 1, (b, 3)).astype(np.float32),
        "base": rng.uniform(0.1, 0.9, (b, 3)).astype(np.float32),
        "stripe": rng.uniform(0, 1, (b, 5)).astype(np.float32),
        "d_on": rng.random((b, _N_DISTRACT)) < np.array([0.7, 0.35, 0.1]),
        "d_kind": rng.integers(0, 4, (b, _N_DISTRACT)),
        "d_pos": rng.uniform(0, SIZE, (b, _N_DISTRACT, 2)).astype(np.float32),
        "d_size": rng.uniform(2.5, 6, (b, _N_DISTRACT, 2)).astype(np.float32),
        "d_angle": rng.uniform(0, np.pi, (b, _N_DISTRACT)).astype(np.float32),
        "d_colour": rng.uniform(0, 1, (b, _N_DISTRACT, 3)).astype(np.float32),
    }


def _lum(c: np.ndarray) -> np.ndarray:
    return c @ np.array([0.299, 0.587, 0.114], np.float32)


def _tri(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # triangle with vertices (0, -1), (+-0.87, 0.5) (centroid at 0), distance-like
    return np.maximum(v - 0.5, (1.732 * np.abs(u) - v - 1) / 2)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.minimum(
        np.maximum(np.abs(u) - 0.28, np.abs(v) - 1), np.maximum(np.abs(v) - 0.28, np.abs(u) - 1)
    )


def _shape_distance(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) of shape class ``kind``, in radii."""
    rho = np.sqrt(u * u + v * v)
    box = np.maximum(np.abs(u), np.abs(v))
    if kind == 0:  # disc
        return rho - 1
    if kind == 1:  # ring
        return np.abs(rho - 0.75) - 0.25
    if kind == 2:  # square
        return box - 0.85
    if kind == 3:  # frame
        return np.abs(box - 0.65) - 0.2
    if kind == 4:  # triangle
        return _tri(u, v)
    if kind == 5:  # hollow triangle
        return np.maximum(_tri(u, v), -0.4 * _tri(u / 0.4, v / 0.4))
    if kind == 6:  # plus
        return _cross(u, v)
    if kind == 7:  # cross (a plus turned 45 degrees)
        return _cross(0.7071 * (u + v), 0.7071 * (v - u))
    if kind == 8:  # two bars
        return np.maximum(np.abs(u) - 0.95, np.abs(np.abs(v) - 0.45) - 0.2)
    return np.maximum(rho - 1, 0.8 - np.sqrt((u - 0.5) ** 2 + v * v))  # crescent


def _shape_field(p: dict[str, np.ndarray]) -> np.ndarray:
    """Signed distance (B, 64, 64) in pixels to each image's target (negative inside)."""
    cos, sin = np.cos(p["theta"])[:, None, None], np.sin(p["theta"])[:, None, None]
    dx = _GRID[None, None, :] - p["cx"][:, None, None]
    dy = _GRID[None, :, None] - p["cy"][:, None, None]
    r = p["radius"][:, None, None]
    u = (cos * dx + sin * dy) / r
    v = (-sin * dx + cos * dy) / r
    out = np.empty_like(u)
    for kind in range(len(CLASSES)):
        sel = np.nonzero(p["label"] == kind)[0]
        if len(sel):
            out[sel] = _shape_distance(kind, u[sel], v[sel]) * r[sel]
    return out


def _distractor_masks(p: dict[str, np.ndarray], k: int) -> np.ndarray:
    """Mask (B, 64, 64) of distractor slot ``k``: disc, ring, box or thin bar."""
    dx = _GRID[None, None, :] - p["d_pos"][:, k, 0, None, None]
    dy = _GRID[None, :, None] - p["d_pos"][:, k, 1, None, None]
    a = p["d_angle"][:, k, None, None]
    u = np.cos(a) * dx + np.sin(a) * dy
    v = -np.sin(a) * dx + np.cos(a) * dy
    sa = p["d_size"][:, k, 0, None, None]
    sb = p["d_size"][:, k, 1, None, None]
    r = np.sqrt((u / sa) ** 2 + (v / sb) ** 2)
    kind = p["d_kind"][:, k, None, None]
    disc = r <= 1
    ring = (r <= 1) & (r >= 0.6)
    box = (np.abs(u) <= sa) & (np.abs(v) <= 0.7 * sb)
    bar = (np.abs(u) <= sa + 4) & (np.abs(v) <= 1.2)
    m = np.where(kind == 0, disc, np.where(kind == 1, ring, np.where(kind == 2, box, bar)))
    return m & p["d_on"][:, k, None, None]


def _render(p: dict[str, np.ndarray], noise_rng: np.random.Generator, domain: int) -> np.ndarray:
    """Images (B, 64, 64, 3) uint8 for one block of parameters."""
    b = len(p["label"])
    st = p["stripe"]
    ang, freq = st[:, 0] * np.pi, 0.06 + 0.2 * st[:, 1]
    phase = (
        np.cos(ang)[:, None, None] * _GRID[None, None, :]
        + np.sin(ang)[:, None, None] * _GRID[None, :, None]
    ) * freq[:, None, None]
    if domain == 0:
        # a muted, low-contrast colour field: grey level, slight tint, smooth noise
        level = (0.3 + 0.4 * p["base"][:, :1]) + 0.16 * (p["base"] - 0.5)
        grid = level[:, None, None, :] + 0.06 * noise_rng.standard_normal((b, 5, 5, 3), np.float32)
        grid = grid.transpose(0, 3, 1, 2)  # (B, 3, 5, 5)
        img = (_UP5 @ (_UP5 @ grid).transpose(0, 1, 3, 2)).transpose(0, 3, 2, 1)  # (B, 64, 64, 3)
        img = np.ascontiguousarray(img)
        wave = np.sin(2 * np.pi * phase + 6.3 * st[:, 2, None, None])
        amp = (
            (0.08 * st[:, 3])[:, None, None, None]
            * (noise_rng.random((b, 1, 1, 3), np.float32) - 0.5)
            * 2
        )
        img += wave[..., None] * amp
        bg_mean = grid.mean(axis=(2, 3))  # (B, 3), about the image mean
    else:  # grey checkerboard in a single tint
        check = (
            np.floor(phase * 2)
            + np.floor(
                (
                    np.cos(ang)[:, None, None] * _GRID[None, :, None]
                    - np.sin(ang)[:, None, None] * _GRID[None, None, :]
                )
                * freq[:, None, None]
                * 2
            )
        ) % 2
        lo = 0.15 + 0.5 * p["base"][:, 0]
        contrast = 0.1 + 0.2 * p["base"][:, 1]
        grey = (lo[:, None, None] + contrast[:, None, None] * check)[..., None]
        tint = 0.85 + 0.15 * p["base"][:, None, None, :]
        img = grey * tint
        bg_mean = (lo + 0.5 * contrast)[:, None] * tint[:, 0, 0, :]
    d_col = p["d_colour"] if domain == 0 else _lum(p["d_colour"])[..., None].repeat(3, -1)
    for k in range(_N_DISTRACT):
        m = _distractor_masks(p, k)[..., None]
        np.copyto(img, d_col[:, k, None, None, :], where=m)
    dist = _shape_field(p)
    alpha = np.clip(0.5 - dist, 0, 1)  # anti-aliased fill
    if domain == 0:  # a bright fill inside a dark rim: the target stands out from the clutter
        colour = 0.45 + 0.55 * p["colour"]
        rim = np.clip(2.0 - dist, 0, 1)[..., None]
        img = img * (1 - rim)
    else:  # hollow outline, dark on light or light on dark
        colour = np.where(_lum(bg_mean)[:, None] > 0.45, 0.05, 0.95) * np.ones_like(p["colour"])
        alpha = np.clip(1.5 - np.abs(dist), 0, 1)
    img = img + alpha[..., None] * (colour[:, None, None, :] - img)
    sigma = 0.03 if domain == 0 else 0.08
    img += (2 * 3**0.5 * sigma) * (noise_rng.random(img.shape, np.float32) - 0.5)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


class SyntheticDataset(torch.utils.data.Dataset):
    """Shapes-in-clutter images (see the module docstring); build with :func:`synthetic`.

    ``ds[i]`` is ``(PIL.Image RGB 64x64, int label)`` (or ``(transform(image), label)``).
    Fast paths: :meth:`arrays` gives all images as ``(n, 64, 64, 3)`` uint8 and
    :meth:`images_uint8` a slice of them. ``labels`` (n,), ``object_boxes`` (n, 4) as
    ``x0, y0, x1, y1`` pixels (clipped to the frame) and ``object_centers`` (n, 2) as ``x, y``
    pixels are computed without rendering.
    """

    classes = CLASSES

    def __init__(self, split: str, n: int, *, seed: int = 0, domain: int = 0, transform=None):
        if split not in SPLITS:
            msg = f"split must be one of {list(SPLITS)}, got {split!r}"
            raise ValueError(msg)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            msg = f"n must be a positive integer, got {n!r}"
            raise ValueError(msg)
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            msg = f"seed must be a non-negative integer, got {seed!r}"
            raise ValueError(msg)
        if domain not in (0, 1):
            msg = f"domain must be 0 (default style) or 1 (second style), got {domain!r}"
            raise ValueError(msg)
        self.split, self.n, self.seed, self.domain = split, int(n), int(seed), int(domain)
        self.transform = transform
        self._split_id = SPLITS.index(split)
        self._n_blocks = -(-self.n // _BLOCK)
        params = [self._block_params(b) for b in range(self._n_blocks)]
        cat = {
            k: np.concatenate([p[k] for p in params])[: self.n]
            for k in ("label", "cx", "cy", "half")
        }
        self.labels: np.ndarray = cat["label"].astype(np.int64)
        self.object_centers: np.ndarray = np.stack([cat["cx"], cat["cy"]], 1)
        half = cat["half"][:, None]
        lo = np.clip(self.object_centers - half, 0, SIZE)
        hi = np.clip(self.object_centers + half, 0, SIZE)
        self.object_boxes: np.ndarray = np.concatenate([lo, hi], 1)
        self._blocks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._all: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"SyntheticDataset(split={self.split!r}, n={self.n}, seed={self.seed}, domain={self.domain})"

    def __len__(self) -> int:
        return self.n

    def _block_params(self, block: int) -> dict[str, np.ndarray]:
        return _params(self._split_id, self.seed, self.domain, block)

    def _render_block(self, block: int) -> np.ndarray:
        if block in self._blocks:
            self._blocks.move_to_end(block)
            return self._blocks[block]
        noise = np.random.default_rng([self.seed, self._split_id, self.domain, block, 1])
        out = _render(self._block_params(block), noise, self.domain)
        self._blocks[block] = out
        if len(self._blocks) > 4:
            self._blocks.popitem(last=False)
        return out

    def images_uint8(self, idx: slice | None = None) -> np.ndarray:
        """Images ``(m, 64, 64, 3)`` uint8 for a slice of indices (all by default)."""
        start, stop, step = (idx or slice(None)).indices(self.n)
        if self._all is not None:
            return self._all[start:stop:step]
        if stop <= start:
            return np.zeros((0, SIZE, SIZE, 3), np.uint8)
        b0, b1 = start // _BLOCK, (stop - 1) // _BLOCK
        parts = [
            self._render_block(b) if b1 - b0 < 4 else self._render_fresh(b)
            for b in range(b0, b1 + 1)
        ]
        return np.concatenate(parts)[start - b0 * _BLOCK : stop - b0 * _BLOCK : step]

    def _render_fresh(self, block: int) -> np.ndarray:
        noise = np.random.default_rng([self.seed, self._split_id, self.domain, block, 1])
        return _render(self._block_params(block), noise, self.domain)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images ``(n, 64, 64, 3)`` uint8 and labels ``(n,)`` int64 (cached)."""
        if self._all is None:
            self._all = self.images_uint8()
            self._blocks.clear()
        return self._all, self.labels

    def __getitem__(self, i: int):
        if not -self.n <= i < self.n:
            msg = f"index {i} out of range for a dataset of {self.n} images"
            raise IndexError(msg)
        i %= self.n
        if self._all is not None:
            arr = self._all[i]
        else:
            arr = self._render_block(i // _BLOCK)[i % _BLOCK]
        img = Image.fromarray(arr, "RGB")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])


def synthetic(
    split: str, n: int, *, seed: int = 0, domain: int = 0, transform=None
) -> SyntheticDataset:
    """The synthetic shapes-in-clutter dataset.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``; the splits never share an image, and
            each split draws from its own random streams.
        n: Number of images (> 0). A smaller ``n`` gives a prefix of a larger one.
        seed: Non-negative seed; together with ``split``, index and ``domain`` it fixes
            each image exactly, in every process.
        domain: 0 for the default style, 1 for the second rendering style (same classes).
        transform: Optional callable applied to each PIL image in ``__getitem__``.

    Returns:
        A :class:`SyntheticDataset` of ``(PIL.Image 64x64 RGB, label)`` pairs.
    """
    return SyntheticDataset(split, n, seed=seed, domain=domain, transform=transform)
