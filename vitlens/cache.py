"""On-disk cache of results, and checkpoints so that long runs resume.

A result is stored under a key that hashes everything it depends on: the model's class,
structure, preprocessing and a hash of every weight; the image set's content fingerprint;
the layers, token mode, estimator and parameters; and the vitlens version. Repeating a call
(or reopening a notebook) loads the stored result; changing any of these misses.

Where: ``$VITLENS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/vitlens``, else
``~/.cache/vitlens`` (``%LOCALAPPDATA%\\vitlens\\Cache`` on Windows, ``~/Library/Caches/vitlens``
on macOS). ``VITLENS_CACHE=0`` turns caching off everywhere; ``vitlens cache clear``
empties it.

Layout: ``<dir>/<kind>/<key>.npz`` for results (see :class:`vitlens.results.Result`) and
``<dir>/<kind>/<key>.r<rank>of<world>.ckpt.pt`` for the checkpoint of a run in progress,
written atomically and removed when the run completes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._version import __version__

__all__ = [
    "ENV_DIR",
    "ENV_SWITCH",
    "cache_dir",
    "checkpoint_path",
    "clear",
    "enabled",
    "images_fingerprint",
    "info",
    "load_checkpoint",
    "load_result",
    "make_key",
    "model_fingerprint",
    "remove_checkpoint",
    "result_path",
    "save_checkpoint",
    "store_result",
]

ENV_DIR = "VITLENS_CACHE_DIR"
ENV_SWITCH = "VITLENS_CACHE"
_SUFFIXES = (".npz", ".pt", ".tmp")
_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
        "# This file is a cache directory tag created by vitlens.\n"
        "# For information about cache directory tags see https://bford.info/cachedir/\n")


def cache_dir() -> Path:
    """The cache directory (not created here); see the module docstring for the order."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "vitlens" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "vitlens"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vitlens"


def enabled(cache: bool | None = True) -> bool:
    """Whether to use the cache: the call's ``cache`` flag, unless ``VITLENS_CACHE=0``."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return False
    return bool(cache)


# --------------------------------------------------------------------------- keys

_MODEL_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False))


def _signature(model: nn.Module) -> tuple:
    # In-place changes (optimiser steps, load_state_dict, fill_) bump a tensor's version
    # counter; ``p.data = ...`` changes its storage. Either invalidates the memoised hash.
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype), str(t.device))
                 for name, t in _tensors(model)) + (model.training,)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().reshape(-1).cpu().contiguous()
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def model_fingerprint(model: nn.Module) -> str:
    """A hash of a model's identity: class, structure (``repr``), train/eval mode and the
    bytes of every parameter and buffer (SHA-256).

    The hash is memoised per model object and recomputed only after a weight changes (in
    place, or by assigning ``.data``), so repeated calls cost microseconds.
    """
    sig = _signature(model)
    memo = _MODEL_HASHES.get(model)
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    h.update(repr(model).encode())
    h.update(f"\ntraining={model.training}\n".encode())
    for name, t in _tensors(model):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    digest = h.hexdigest()[:32]
    _MODEL_HASHES[model] = (sig, digest)
    return digest


def images_fingerprint(images: Any, n: int | None = None) -> str:
    """A content fingerprint (SHA-256) of the first ``n`` images of an
    :class:`~vitlens.datasets.ImageSource` (all of them when ``n`` is None), in order.

    Only the images used are read, so 10,240 images of a 50,000-image dataset cost what the
    run itself reads. Sources without per-image bytes fall back to their ``fingerprint()``.
    """
    total = len(images)
    n = total if n is None else min(int(n), total)
    item_bytes = getattr(images, "_item_bytes", None)
    if item_bytes is None:
        return hashlib.sha256(f"{images.fingerprint()}:{n}".encode()).hexdigest()[:32]
    h = hashlib.sha256(f"{type(images).__name__}:{n}".encode())
    for i in range(n):
        h.update(item_bytes(i))
    return h.hexdigest()[:32]


def make_key(kind: str, parts: dict[str, Any]) -> str:
    """The cache key of a result of ``kind`` (``"cka"``, ...) that depends on ``parts``.

    ``parts`` must be JSON-able (lists, strings, numbers); the vitlens version is added.
    """
    record = {"kind": kind, "vitlens_version": __version__, **parts}
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


# --------------------------------------------------------------------------- results

def _kind_dir(kind: str) -> Path:
    if not kind.isidentifier():
        msg = f"cache kind {kind!r} must be a simple name like 'cka'"
        raise ValueError(msg)
    root = cache_dir()
    path = root / kind
    path.mkdir(parents=True, exist_ok=True)
    tag = root / "CACHEDIR.TAG"
    if not tag.exists():
        _atomic_write_bytes(tag, _TAG.encode())
    return path


def result_path(kind: str, key: str) -> Path:
    """Where the result of ``kind`` with ``key`` is (or would be) stored."""
    return _kind_dir(kind) / f"{key}.npz"


def load_result(kind: str, key: str):
    """The stored :class:`~vitlens.results.Result` for ``key``, or None.

    A file that cannot be read (truncated, from an incompatible version) counts as a miss
    and is removed.
    """
    from .results import load_result as _load

    path = result_path(kind, key)
    if not path.is_file():
        return None
    try:
        return _load(path)
    except Exception:  # a broken cache entry is a miss, never an error
        path.unlink(missing_ok=True)
        return None


def store_result(kind: str, key: str, result: Any) -> Path:
    """Store ``result`` (a :class:`~vitlens.results.Result`) under ``key``, atomically."""
    return result.save(result_path(kind, key))


# --------------------------------------------------------------------------- checkpoints

def checkpoint_path(kind: str, key: str, rank: int = 0, world: int = 1) -> Path:
    """The checkpoint file of one rank of a run (each rank keeps its own)."""
    return _kind_dir(kind) / f"{key}.r{rank}of{world}.ckpt.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically: a run killed
    mid-write leaves the previous checkpoint intact."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state in a checkpoint file, or None if there is none or it cannot be read."""
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt checkpoint means starting over, not failing
        return None


def remove_checkpoint(path: Path) -> None:
    path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- housekeeping

def _entries(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for sub in root.iterdir() if sub.is_dir() for p in sub.iterdir()
            if p.is_file() and any(s in p.name for s in _SUFFIXES)]


def info() -> dict[str, Any]:
    """The cache directory, its number of files and their total size in bytes."""
    root = cache_dir()
    files = _entries(root)
    return {"dir": str(root), "files": len(files),
            "bytes": sum(p.stat().st_size for p in files)}


def clear(kind: str | None = None) -> int:
    """Delete cached results and checkpoints (of one ``kind``, or all); returns how many
    files were removed. Only files vitlens writes are touched, so a cache directory set to
    a shared folder keeps its other files."""
    root = cache_dir()
    files = _entries(root)
    if kind is not None:
        files = [p for p in files if p.parent.name == kind]
    for p in files:
        p.unlink(missing_ok=True)
    for sub in (root.iterdir() if root.is_dir() else []):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    return len(files)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
