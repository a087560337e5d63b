"""How the result cache sits on disk: entry names, ownership, atomic writes, and the
self-checking formats of results and checkpoints. :mod:`vitlens.cache` is the public entry
point; this module owns the bytes.

Every rule here serves one promise: the cache never loses, confuses or damages data.

* **Ownership.** vitlens only ever writes, replaces or deletes files whose names match its
  own patterns exactly (``<key>.npz``, ``<key>.r<rank>of<world>.ckpt.pt``, and its temporary
  ``.<name>.<random>.tmp`` files), and only inside a *kind folder* (``<dir>/cka``) that holds
  vitlens's ``CACHEDIR.TAG``. The tag is written only into a folder vitlens has just
  created itself; a folder of that name that already exists without the tag (even an empty
  one) is the user's, and is never adopted, tagged or removed. ``vitlens cache clear``
  removes a kind folder only if it holds nothing but the tag this version writes (an older
  vitlens tagged empty folders it found, so their tag is honoured for entries but the
  folder is kept).
* **Atomic, concurrent-safe writes.** Each writer serialises in memory, writes a temporary
  file of its own (:func:`tempfile.mkstemp` in the same folder), syncs it and renames it over
  the entry with :func:`os.replace`. Two processes storing one key both succeed; a reader
  sees either a whole old entry or a whole new one.
* **Self-checking entries.** An entry records its kind, its key and a SHA-256 of its content.
  A load that finds anything else (truncated, random bytes, another key's entry, changed
  arrays) is a miss, and the bad entry is removed if vitlens wrote it.
* **Reads write nothing.** Only storing creates folders or tags.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

KEY_RE = r"[0-9a-f]{40}"
_ENTRY = re.compile(rf"^(?P<key>{KEY_RE})(?P<suffix>\.npz|\.r\d+of\d+\.ckpt\.pt)$")
_TEMP = re.compile(rf"^\.(?:{KEY_RE}(?:\.npz|\.r\d+of\d+\.ckpt\.pt)|CACHEDIR\.TAG)"
                   r"\.[A-Za-z0-9_]+\.tmp$")
TAG_NAME = "CACHEDIR.TAG"
_TAG_HEAD = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This file is a cache directory tag created by vitlens.\n"
             "# For information about cache directory tags see https://bford.info/cachedir/\n")
TAG = _TAG_HEAD + ("# vitlens created this folder; it writes and deletes only its own entries "
                   "in it,\n# and removes the folder when 'vitlens cache clear' leaves it "
                   "empty.\n")
# The tag of vitlens versions that also tagged existing empty folders: entries in such a
# folder are vitlens's, but the folder itself may be the user's, so it is never removed.
LEGACY_TAG = _TAG_HEAD + "# vitlens writes and deletes only its own entries in this folder.\n"
RESULT_FORMAT = "vitlens-cache-result/1"
CKPT_MAGIC = b"VITLENS-CKPT/1\n"
MAX_ENTRY_BYTES = 2**31  # a cache entry that expands past 2 GiB is not one vitlens wrote


class CacheUnavailableWarning(RuntimeWarning):
    """The cache could not be written; the run goes on without it (see the message)."""


class CacheUnusable(OSError):
    """The cache folder cannot be used (internal: turned into one warning)."""


# --------------------------------------------------------------------------- names

def entry_key(name: str) -> str | None:
    """The key in a vitlens entry's file name, or None if the name is not one of vitlens's."""
    m = _ENTRY.match(name)
    return m.group("key") if m else None


def is_own_name(name: str) -> bool:
    """Whether ``name`` is exactly an entry or temporary file name that vitlens writes."""
    return bool(_ENTRY.match(name) or _TEMP.match(name))


def _tag_of(folder: Path) -> str | None:
    try:
        with open(folder / TAG_NAME, "rb") as f:
            return f.read(4096).decode("utf-8", "replace")
    except OSError:
        return None


def is_own_folder(folder: Path) -> bool:
    """Whether ``folder`` is a kind folder vitlens writes in (it holds vitlens's tag)."""
    return _tag_of(folder) in (TAG, LEGACY_TAG)


def created_by_vitlens(folder: Path) -> bool:
    """Whether vitlens created ``folder`` itself (so it may remove it once empty)."""
    return _tag_of(folder) == TAG


def own_files(folder: Path) -> list[Path]:
    """vitlens's entries and temporary files in a kind folder vitlens owns (else none)."""
    if not is_own_folder(folder):
        return []
    try:
        return sorted(p for p in folder.iterdir() if is_own_name(p.name) and p.is_file()
                      and not p.is_symlink())
    except OSError:
        return []


def discard(path: Path, stat: os.stat_result | None = None) -> bool:
    """Remove a bad entry, only if vitlens wrote it (own name, own folder) and, when ``stat``
    is given, only if it is still the file that was read (not a newer writer's). Returns
    whether it was removed (or was already gone)."""
    if not is_own_name(path.name) or not is_own_folder(path.parent):
        return False
    try:
        if stat is not None:
            now = path.stat()
            if (now.st_ino, now.st_mtime_ns, now.st_size) != (
                    stat.st_ino, stat.st_mtime_ns, stat.st_size):
                return True  # a newer writer replaced it: the bad one is gone
        path.unlink()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- writing

_WARNED: set[str] = set()


def warn_unusable(root: Path, err: BaseException) -> None:
    """One warning per cache folder and problem (until a write there succeeds again)."""
    if isinstance(err, CacheUnusable):
        why = str(err)
    elif isinstance(err, (FileExistsError, NotADirectoryError)):
        why = f"a file is in the way ({err.strerror or err}: {getattr(err, 'filename', '')})"
    elif getattr(err, "errno", None) == 28:  # ENOSPC
        why = "the disk is full"
    elif getattr(err, "errno", None) == 30:  # EROFS
        why = "it is on a read-only file system"
    elif isinstance(err, PermissionError):
        why = "permission denied"
    else:
        why = f"{type(err).__name__}: {err}"
    tag = f"{root}|{why}"
    if tag in _WARNED:
        return
    _WARNED.add(tag)
    msg = (f"vitlens cannot write its cache at {str(root)!r}: {why}. The run goes on and its "
           "result is correct, but it is not cached (nor checkpointed). To fix it, set "
           "VITLENS_CACHE_DIR to a writable folder of its own (or free space), or pass "
           "cache=False (--no-cache; VITLENS_CACHE=0 everywhere) to silence this.")
    warnings.warn(msg, CacheUnavailableWarning, stacklevel=4)


def wrote_ok(root: Path) -> None:
    """A write in ``root`` worked: warn again if it breaks later."""
    for tag in [t for t in _WARNED if t.startswith(f"{root}|")]:
        _WARNED.discard(tag)


_TAG_WAIT_S = 2.0  # how long to wait for another vitlens process to tag a folder it made


def _refuse(folder: Path) -> CacheUnusable:
    try:
        foreign = sorted(p.name for p in folder.iterdir() if not is_own_name(p.name))
    except OSError:
        foreign = []
    if foreign:
        what = (f"holds files vitlens did not write ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''})")
    else:
        what = "was not created by vitlens (it has no vitlens CACHEDIR.TAG)"
    msg = (f"the folder {str(folder)!r} {what}, so vitlens leaves it alone; rename or "
           "remove it if vitlens may use that name")
    return CacheUnusable(msg)


def _await_tag(folder: Path) -> None:
    """Return once another vitlens process that has just created ``folder`` has tagged it;
    raise :class:`CacheUnusable` if it is not such a folder (or the tag never comes)."""
    deadline = time.monotonic() + _TAG_WAIT_S
    while True:
        if is_own_folder(folder):
            return
        try:
            names = [p.name for p in folder.iterdir()]
            young = time.time() - folder.stat().st_mtime < 2 * _TAG_WAIT_S
        except OSError:
            names, young = [], False
        # only a folder made this instant, empty but for a tag being written, may be waited on
        if not young or any(not _TEMP.match(n) for n in names) or time.monotonic() > deadline:
            raise _refuse(folder)
        time.sleep(0.02)


def prepare_folder(folder: Path) -> None:
    """Create a kind folder for writing and tag it, or use one vitlens tagged before;
    raises OSError if it cannot be used. A folder that exists without vitlens's tag is
    never adopted: vitlens did not create it, so it is not vitlens's to tag or remove."""
    if is_own_folder(folder):
        return
    if folder.is_dir():
        _await_tag(folder)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        if not folder.is_dir():
            raise
        _await_tag(folder)
        return
    try:
        atomic_write(folder / TAG_NAME, TAG.encode())
    except BaseException:
        try:
            folder.rmdir()  # just made, still empty: never leave an untagged folder behind
        except OSError:
            pass
        raise


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of this writer's own, synced and
    renamed over ``path``; nothing is left behind if anything fails."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_bounded(path: Path) -> tuple[bytes, os.stat_result] | None:
    """The bytes of a regular file (not a link) and its stat, or None."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (st.st_mode & 0o170000 == 0o100000) or st.st_size > MAX_ENTRY_BYTES:
                return None
            return f.read(), st
    except OSError:
        return None


# --------------------------------------------------------------------------- results

def _digest(kind: str, key: str, members: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(f"{RESULT_FORMAT}\n{kind}\n{key}\n".encode())
    for name in sorted(members):
        a = np.ascontiguousarray(members[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def encode_result(kind: str, key: str, result: Any) -> bytes:
    """The bytes of a result entry: the ``.npz`` that :func:`vitlens.results.load_result`
    reads, plus a ``__cache__`` record of kind, key and content digest."""
    header = {"result_type": type(result).__name__, "meta": result.meta}
    members = {f"a_{k}": np.asarray(v) for k, v in result.arrays.items()}
    members["__meta__"] = np.frombuffer(json.dumps(header, default=_json_default).encode(),
                                        dtype=np.uint8)
    record = {"format": RESULT_FORMAT, "kind": kind, "key": key,
              "sha256": _digest(kind, key, members)}
    members["__cache__"] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **members)
    return buf.getvalue()


def decode_result(data: bytes, kind: str, key: str) -> Any | None:
    """The result in an entry's bytes if they are a whole, unchanged entry of ``kind`` and
    ``key``; else None. Never raises on bad bytes."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            if sum(i.file_size for i in z.infolist()) > MAX_ENTRY_BYTES:
                return None
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            members = {name: npz[name] for name in npz.files}
        record = json.loads(bytes(members.pop("__cache__")).decode())
        if (not isinstance(record, dict) or record.get("format") != RESULT_FORMAT
                or record.get("kind") != kind or record.get("key") != key
                or record.get("sha256") != _digest(kind, key, members)):
            return None
        header = json.loads(bytes(members["__meta__"]).decode())
        return _restore(header, members, key)
    except Exception:  # any damage at all is a miss, never an error
        return None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


_RESULT_MODULES = ("vitlens.results", "vitlens.results.similarity", "vitlens.similarity_result",
                   "vitlens.analyses")


def _result_class(name: Any, imported: bool = False) -> type | None:
    """The :class:`~vitlens.results.Result` subclass called ``name``, importing vitlens's
    result modules if it is not loaded yet; None if there is none."""
    import importlib

    from .results import Result

    try:  # the explicit registry of vitlens's result types, where there is one
        from .results.registry import result_class
    except ImportError:
        result_class = None
    if result_class is not None and not imported:
        try:
            cls = result_class(name)
        except Exception:  # a result module that fails to import: not this entry's fault
            cls = None
        if isinstance(cls, type) and issubclass(cls, Result):
            return cls
    todo, seen = [Result], set()
    while todo:
        cls = todo.pop()
        if cls.__name__ == name:
            return cls
        for sub in cls.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                todo.append(sub)
    if imported:
        return None
    for module in _RESULT_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            continue
    return _result_class(name, imported=True)


def _restore(header: dict, members: dict[str, np.ndarray], key: str) -> Any | None:
    from .results import Result

    cls = _result_class(header.get("result_type"))
    meta = header.get("meta", {})
    if cls is None or not isinstance(meta, dict) or meta.get("cache_key", key) != key:
        return None
    arrays = {k[2:]: v for k, v in members.items() if k.startswith("a_")}
    obj = cls.__new__(cls)
    Result.__init__(obj, arrays, meta)
    if any(c.__name__ == "SimilarityResult" for c in cls.__mro__):  # its axes must fit
        if arrays["matrix"].shape != (len(meta["layers_a"]), len(meta["layers_b"])):
            return None
    return obj


# --------------------------------------------------------------------------- checkpoints

def encode_checkpoint(key: str, state: dict[str, Any]) -> bytes:
    """Magic line, JSON header (key, payload length and SHA-256), then ``torch.save`` bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    header = {"key": key, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    return CKPT_MAGIC + json.dumps(header).encode() + b"\n" + payload


def decode_checkpoint(data: bytes, key: str) -> dict[str, Any] | None:
    """The state in a checkpoint's bytes if whole, unchanged and of ``key``; else None.
    Loaded with ``weights_only=True``: tensors and plain containers, never code."""
    import torch

    try:
        if not data.startswith(CKPT_MAGIC):
            return None
        end = data.index(b"\n", len(CKPT_MAGIC))
        header = json.loads(data[len(CKPT_MAGIC):end].decode())
        payload = data[end + 1:]
        if (not isinstance(header, dict) or header.get("key") != key
                or header.get("bytes") != len(payload)
                or header.get("sha256") != hashlib.sha256(payload).hexdigest()):
            return None
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("key", key) != key:
            return None
        return state
    except Exception:  # a damaged checkpoint means starting over, not failing
        return None
