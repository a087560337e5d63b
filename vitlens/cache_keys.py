"""Cache keys: fingerprints of models (structure and weights) and images, and the key of a
result. :mod:`vitlens.cache` is the public entry point and re-exports these."""

from __future__ import annotations

import enum
import hashlib
import json
import types
import weakref
from typing import Any

import torch
from torch import nn

from ._version import __version__

_MODEL_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLAIN = (bool, int, float, str, type(None))


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False))


def _weights_signature(model: nn.Module) -> tuple:
    # In-place changes (optimiser steps, load_state_dict, fill_) bump a tensor's version
    # counter; ``p.data = ...`` changes its storage. Either invalidates the memoised hash.
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype), str(t.device))
                 for name, t in _tensors(model))


def _value(v: Any, depth: int = 0) -> str | None:
    """A stable text for a plain attribute value (None: not part of the structure)."""
    if isinstance(v, enum.Enum):
        return f"{type(v).__qualname__}.{v.name}"
    if isinstance(v, _PLAIN):
        return repr(v)
    if isinstance(v, (tuple, list)) and depth < 3 and len(v) <= 64:
        items = [_value(x, depth + 1) for x in v]
        return None if None in items else f"{type(v).__name__}({', '.join(items)})"
    if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"callable {getattr(v, '__module__', '')}.{getattr(v, '__qualname__', '')}"
    return None


def structure_text(model: nn.Module) -> str:
    """The module tree of ``model``: each module's name, class (module and qualname),
    ``extra_repr`` and plain non-tensor attributes (numbers, strings, flags, enums, tuples
    of them, and functions set on the instance). Replacing a parameter-free module
    (``m.blocks[2].mlp.act = nn.ReLU()``) or changing e.g. ``attn.scale`` changes it."""
    lines = []
    for name, mod in model.named_modules(remove_duplicate=False):
        cls = type(mod)
        try:
            extra = mod.extra_repr()
        except Exception:  # a broken extra_repr must not break the key
            extra = "<extra_repr failed>"
        attrs = []
        for k, v in sorted(vars(mod).items()):
            if k.startswith("_"):
                continue
            text = _value(v)
            if text is not None:
                attrs.append(f"{k}={text}")
        lines.append(f"{name}|{cls.__module__}.{cls.__qualname__}|{extra}|{';'.join(attrs)}")
    return "\n".join(lines)


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().reshape(-1).cpu().contiguous()
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def model_fingerprint(model: nn.Module) -> str:
    """A hash (SHA-256) of a model's identity: its class, its module tree with every
    module's class, ``extra_repr`` and plain attributes (see :func:`structure_text`), its
    train/eval mode, and the bytes of every parameter and buffer.

    The weight hash is memoised per model object and recomputed only after a weight changes
    (in place, or by assigning ``.data``) or the structure changes, so repeated calls cost
    a few milliseconds for a ViT-B/16 (the structure is re-read each time).
    """
    structure = structure_text(model)
    sig = (_weights_signature(model), structure)
    memo = _MODEL_HASHES.get(model)
    if memo is not None and memo[0] == sig:
        return memo[1]
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    h.update(structure.encode())
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
