"""On-disk cache of results, and checkpoints so that long runs resume.

A result is stored under a key that hashes everything it depends on: the model's class,
module tree (every module's class, ``extra_repr`` and attributes, tensors and dicts
included), preprocessing and a hash of every weight's current bytes; the image set's
content fingerprint (with shapes and dtypes); the layers, token mode, estimator and
parameters; and the vitlens version. Repeating a call (or reopening a
notebook) loads the stored result; changing any of these misses.

Where: ``$VITLENS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/vitlens``, else
``~/.cache/vitlens`` (``%LOCALAPPDATA%\\vitlens\\Cache`` on Windows, ``~/Library/Caches/vitlens``
on macOS). ``VITLENS_CACHE=0`` turns caching off everywhere; ``vitlens cache clear``
empties it.

Layout: ``<dir>/<kind>/<key>.npz`` for results (see :class:`vitlens.results.Result`) and
``<dir>/<kind>/<key>.r<rank>of<world>.ckpt.pt`` for the checkpoint of a run in progress,
removed when the run completes. Each kind folder is created by vitlens and holds its
``CACHEDIR.TAG``; a folder of that name that vitlens did not create is never used.

Guarantees (the rules are in :mod:`vitlens.cache_store`): vitlens writes, replaces and
deletes only its own entries (exact names, in a kind folder it created), so a cache directory
set to a shared folder keeps everything else; writes are atomic and safe between
concurrent processes; every entry records its key and a content digest, and anything else
(truncated, foreign, another key's) is a miss; a cache that cannot be written (read-only,
full, a file in the way) costs one :class:`CacheUnavailableWarning`, never the run, and so
does a damaged entry (it is recomputed); a call whose model cannot be fingerprinted (a
user's forward hook, an attribute holding an arbitrary object; see
:func:`~vitlens.cache_keys.model_fingerprint`) skips the cache with one warning; and
reading the cache writes nothing.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from . import cache_store as _store
from .cache_keys import cacheable, images_fingerprint, make_key, model_fingerprint
from .cache_store import CacheUnavailableWarning

__all__ = [
    "ENV_DIR",
    "ENV_SWITCH",
    "CacheUnavailableWarning",
    "cache_dir",
    "cacheable",
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


# --------------------------------------------------------------------------- paths

def _check_kind(kind: str) -> str:
    if not (isinstance(kind, str) and kind.isidentifier()):
        msg = f"cache kind {kind!r} must be a simple name like 'cka'"
        raise ValueError(msg)
    return kind


def _check_key(key: str) -> str:
    if not (isinstance(key, str) and _store.entry_key(f"{key}.npz") == key):
        msg = f"cache key {key!r} must be 40 lowercase hex digits, as make_key returns"
        raise ValueError(msg)
    return key


def result_path(kind: str, key: str) -> Path:
    """Where the result of ``kind`` with ``key`` is (or would be) stored; creates nothing."""
    return cache_dir() / _check_kind(kind) / f"{_check_key(key)}.npz"


def checkpoint_path(kind: str, key: str, rank: int = 0, world: int = 1) -> Path:
    """The checkpoint file of one rank of a run (each rank keeps its own); creates nothing."""
    if not 0 <= int(rank) < int(world):
        msg = f"rank {rank} must be in [0, world={world})"
        raise ValueError(msg)
    return (cache_dir() / _check_kind(kind)
            / f"{_check_key(key)}.r{int(rank)}of{int(world)}.ckpt.pt")


# --------------------------------------------------------------------------- results

def _warn_damaged(path: Path, what: str, removed: bool, then: str) -> None:
    gone = "removed" if removed else "left in place (vitlens did not write it)"
    msg = (f"vitlens found a damaged {what} {str(path)!r} (truncated, changed, or not "
           f"vitlens's entry for this key); it is ignored and {gone}, and {then}.")
    warnings.warn(msg, CacheUnavailableWarning, stacklevel=3)


def load_result(kind: str, key: str):
    """The stored :class:`~vitlens.results.Result` for ``key``, or None.

    Only a whole entry of this ``kind`` and ``key`` with an unchanged content digest is
    served. Anything else (truncated, random bytes, another key's entry, changed arrays, an
    incompatible version) is a miss: one :class:`CacheUnavailableWarning` names the file,
    and the bad entry is removed (only if vitlens wrote it) and the result recomputed.
    Reading writes nothing else and never raises on what it finds on disk. A key that
    :func:`cacheable` refuses is never read.
    """
    if not cacheable(key):
        return None
    path = result_path(kind, key)
    got = _store.read_bounded(path)
    if got is None:
        return None
    data, stat = got
    result = _store.decode_result(data, kind, key)
    if result is None:
        removed = _store.discard(path, stat)
        _warn_damaged(path, "cache entry", removed, "the result is recomputed")
    return result


def store_result(kind: str, key: str, result: Any) -> Path | None:
    """Store ``result`` (a :class:`~vitlens.results.Result`) under ``key``, atomically.

    Returns the entry's path, or None if the cache cannot be written (read-only, full, a
    file in the way, a folder vitlens does not own): then one
    :class:`CacheUnavailableWarning` says why and how to fix it, and nothing is left behind.
    Concurrent writers of one key all succeed (the last one's entry stays). A key that
    :func:`cacheable` refuses is never written (None).
    """
    if not cacheable(key):
        return None
    path = result_path(kind, key)
    try:
        data = _store.encode_result(kind, key, result)
        _store.prepare_folder(path.parent)
        _store.atomic_write(path, data)
    except OSError as err:
        _store.warn_unusable(cache_dir(), err)
        return None
    except Exception as err:  # an optimisation must never cost the computed result
        msg = (f"vitlens could not cache a {type(result).__name__} ({type(err).__name__}: "
               f"{err}); the result is returned but not stored. Pass cache=False to skip.")
        warnings.warn(msg, CacheUnavailableWarning, stacklevel=2)
        return None
    _store.wrote_ok(cache_dir())
    return path


# --------------------------------------------------------------------------- checkpoints

def _checkpoint_key(path: Path) -> str:
    key = _store.entry_key(Path(path).name)
    if key is None or not Path(path).name.endswith(".ckpt.pt"):
        msg = f"{str(path)!r} is not a vitlens checkpoint path; use checkpoint_path()"
        raise ValueError(msg)
    return key


def save_checkpoint(path: Path, state: dict[str, Any]) -> bool:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically: a run killed
    mid-write leaves the previous checkpoint intact. Returns whether it was written; a cache
    that cannot be written costs one :class:`CacheUnavailableWarning`, never the run."""
    path = Path(path)
    key = _checkpoint_key(path)
    if not cacheable(key):
        return False
    try:
        data = _store.encode_checkpoint(key, state)
        _store.prepare_folder(path.parent)
        _store.atomic_write(path, data)
    except OSError as err:
        _store.warn_unusable(path.parent.parent, err)
        return False
    _store.wrote_ok(path.parent.parent)
    return True


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The state in a checkpoint file, or None if there is none or it is not a whole,
    unchanged checkpoint of the key in its name (then one :class:`CacheUnavailableWarning`
    names it, and it is removed if vitlens wrote it: the run starts from the beginning).
    Loaded with ``weights_only=True``: tensors and plain containers, never code."""
    path = Path(path)
    key = _checkpoint_key(path)
    if not cacheable(key):
        return None
    got = _store.read_bounded(path)
    if got is None:
        return None
    state = _store.decode_checkpoint(got[0], key)
    if state is None:
        removed = _store.discard(path, got[1])
        _warn_damaged(path, "checkpoint", removed, "the run starts from its first batch")
    return state


def remove_checkpoint(path: Path) -> None:
    """Delete a finished run's checkpoint (if vitlens wrote it); never raises."""
    path = Path(path)
    _checkpoint_key(path)
    _store.discard(path)


# --------------------------------------------------------------------------- housekeeping

def _kind_folders(kind: str | None) -> list[Path]:
    root = cache_dir()
    if kind is not None:
        return [root / _check_kind(kind)]
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def info() -> dict[str, Any]:
    """The cache directory, the number of vitlens's files in it and their size in bytes."""
    files = [p for folder in _kind_folders(None) for p in _store.own_files(folder)]
    size = 0
    for p in files:
        try:
            size += p.stat().st_size
        except OSError:
            pass
    return {"dir": str(cache_dir()), "files": len(files), "bytes": size}


def clear(kind: str | None = None) -> int:
    """Delete cached results and checkpoints (of one ``kind``, or all); returns how many
    files were removed. Only vitlens's own entries are touched (exact names, in kind folders
    that hold vitlens's tag), so a cache directory set to a shared folder keeps every other
    file; a kind folder that vitlens created and that is left empty is removed with its
    tag (a folder tagged by an older vitlens, which may have adopted a user's empty folder,
    is kept)."""
    removed = 0
    for folder in _kind_folders(kind):
        for p in _store.own_files(folder):
            try:
                p.unlink()
                removed += 1
            except OSError:
                pass
        try:
            if (_store.created_by_vitlens(folder)
                    and [p.name for p in folder.iterdir()] == [_store.TAG_NAME]):
                (folder / _store.TAG_NAME).unlink()
                folder.rmdir()
        except OSError:
            pass
    return removed
