"""Cache keys: fingerprints of models (structure, attributes, hooks and weights) and images,
and the key of a result. :mod:`vitlens.cache` is the public entry point and re-exports these.

A fingerprint is sound or it says so: what cannot be fingerprinted (a user's forward hook,
an attribute holding an arbitrary object) turns the cache off for the call that needs it,
with one :class:`~vitlens.cache_store.CacheUnavailableWarning`, rather than being ignored.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import os
import sys
import types
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import nn

from ._version import __version__
from .cache_store import CacheUnavailableWarning

_PLAIN = (bool, int, float, complex, str, type(None))
_TORCH_PLAIN = (torch.dtype, torch.device, torch.layout, torch.memory_format)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # _parameters, _forward_hooks, training, ...
# timm's record of where its weights came from: not read by forward (the preprocessing that
# matters is keyed separately, as the run's data_config), and it holds local file paths.
_METADATA = frozenset({"pretrained_cfg", "default_cfg"})
_MAX_DEPTH = 8
NO_CACHE = "no-cache: "  # prefix of a fingerprint that must not be used for caching
_NO_CACHE_KEYS: set[str] = set()
_PARALLEL_BYTES = 32 * 2**20  # hash weights in threads above this (hashlib frees the GIL)


class _Unsound(Exception):
    """A value whose effect on a forward pass vitlens cannot fingerprint."""


# --------------------------------------------------------------------------- values

def _bytes_digest(data: Any) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().reshape(-1).cpu().contiguous()
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())


def _const_text(c: Any) -> str:
    if isinstance(c, types.CodeType):
        return _code_text(c)
    if isinstance(c, (tuple, frozenset)):  # a frozenset's order changes with the hash seed
        items = [_const_text(x) for x in c]
        if isinstance(c, frozenset):
            items.sort()
        return f"{type(c).__name__}({', '.join(items)})"
    return repr(c)


def _code_text(code: types.CodeType) -> str:
    consts = [_const_text(c) for c in code.co_consts]
    return _bytes_digest(code.co_code + repr((code.co_names, consts)).encode())


def _callable_text(v: Any, ctx: _Context, depth: int) -> str | None:
    """A fingerprint of a function of known identity, or None if ``v`` is none."""
    if isinstance(v, types.FunctionType):
        parts = [f"function {v.__module__}.{v.__qualname__} code={_code_text(v.__code__)}"]
        for name, value in (("defaults", v.__defaults__), ("kwdefaults", v.__kwdefaults__)):
            if value:
                parts.append(f"{name}={ctx.value(value, depth + 1)}")
        for cell in v.__closure__ or ():  # the values a closure captured
            try:
                parts.append(ctx.value(cell.cell_contents, depth + 1))
            except ValueError:  # an empty cell
                parts.append("<empty cell>")
        return " ".join(parts)
    if isinstance(v, types.BuiltinFunctionType):  # torch.relu, math.sqrt, a C method
        owner = getattr(v, "__self__", None)
        bound = "" if owner is None or isinstance(owner, types.ModuleType) else (
            f" of {ctx.value(owner, depth + 1)}")
        return f"builtin {getattr(v, '__module__', '')}.{v.__qualname__}{bound}"
    if isinstance(v, types.MethodType):
        return f"method {ctx.value(v.__func__, depth + 1)} of {ctx.value(v.__self__, depth + 1)}"
    if isinstance(v, functools.partial):
        return (f"partial({ctx.value(v.func, depth + 1)}, {ctx.value(v.args, depth + 1)}, "
                f"{ctx.value(v.keywords, depth + 1)})")
    return None


class _Context:
    """Fingerprints attribute values of one model's modules (modules by their name)."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
        self.active: set[int] = set()  # containers being read (a cycle is unsound)

    def value(self, v: Any, depth: int = 0) -> str:
        """A stable text for ``v``; raises :class:`_Unsound` for what has none."""
        if depth > _MAX_DEPTH:
            msg = f"a value nested deeper than {_MAX_DEPTH} levels"
            raise _Unsound(msg)
        if isinstance(v, enum.Enum):
            return f"{type(v).__module__}.{type(v).__qualname__}.{v.name}"
        if isinstance(v, bytes):
            return f"bytes:{_bytes_digest(v)}"
        if isinstance(v, _PLAIN + _TORCH_PLAIN):
            return f"{type(v).__name__}:{v!r}"
        if isinstance(v, nn.Module):
            if id(v) in self.names:
                return f"module {self.names[id(v)] or '<root>'}"
            msg = f"a {type(v).__qualname__} module outside the model"
            raise _Unsound(msg)
        if isinstance(v, torch.Tensor):
            try:
                data = _tensor_bytes(v)
            except Exception as err:  # a meta, sparse or otherwise opaque tensor
                msg = f"a tensor whose bytes cannot be read ({type(err).__name__})"
                raise _Unsound(msg) from err
            return f"tensor({v.dtype}, {tuple(v.shape)}, {_bytes_digest(data)})"
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                msg = "a NumPy array of Python objects"
                raise _Unsound(msg)
            a = np.ascontiguousarray(v)
            return f"ndarray({a.dtype.str}, {a.shape}, {_bytes_digest(a.tobytes())})"
        if isinstance(v, np.generic):
            return f"{type(v).__name__}:{v!r}"
        if isinstance(v, type):
            return f"class {v.__module__}.{v.__qualname__}"
        if isinstance(v, (tuple, list, dict, set, frozenset)):
            return self._container(v, depth)
        if (dataclasses.is_dataclass(v) and not isinstance(v, type)) or isinstance(
                v, types.SimpleNamespace):  # a config record: its class and its values
            fields = (vars(v) if isinstance(v, types.SimpleNamespace)
                      else {f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
            cls = type(v)
            return f"{cls.__module__}.{cls.__qualname__}{self._container(fields, depth)}"
        text = _callable_text(v, self, depth)
        if text is not None:
            return text
        msg = f"a {type(v).__module__}.{type(v).__qualname__} object"
        raise _Unsound(msg)

    def _container(self, v: Any, depth: int) -> str:
        if id(v) in self.active:
            msg = f"a {type(v).__name__} that contains itself"
            raise _Unsound(msg)
        self.active.add(id(v))
        try:
            if isinstance(v, dict):
                items = sorted(f"{self.value(k, depth + 1)}: {self.value(x, depth + 1)}"
                               for k, x in v.items())
            elif isinstance(v, (set, frozenset)):
                items = sorted(self.value(x, depth + 1) for x in v)
            else:
                items = [self.value(x, depth + 1) for x in v]
        finally:
            self.active.discard(id(v))
        return f"{type(v).__module__}.{type(v).__qualname__}({', '.join(items)})"


# --------------------------------------------------------------------------- structure

def _structure(model: nn.Module) -> tuple[str, list[str]]:
    """The text of :func:`structure_text`, and what in it could not be fingerprinted."""
    ctx = _Context(model)
    lines, unsound = [], []
    for name, mod in model.named_modules(remove_duplicate=False):
        cls = type(mod)
        try:
            extra = mod.extra_repr()
        except Exception:  # a broken extra_repr must not break the key
            extra = "<extra_repr failed>"
        attrs = []
        for k, v in sorted(vars(mod).items()):
            if k in _MODULE_INTERNALS or k in _METADATA:
                continue
            try:
                attrs.append(f"{k}={ctx.value(v)}")
            except _Unsound as why:
                where = f"{name}.{k}" if name else k
                unsound.append(f"attribute {where} of {type(model).__name__} holds {why}")
                attrs.append(f"{k}=<unsound>")
        lines.append(f"{name}|{cls.__module__}.{cls.__qualname__}|{extra}|{';'.join(attrs)}")
    return "\n".join(lines), unsound


def structure_text(model: nn.Module) -> str:
    """The module tree of ``model``: each module's name, class (module and qualname),
    ``extra_repr`` and every instance attribute that is not a submodule, parameter or
    buffer: numbers, strings, flags, enums, plain tensors and arrays (by dtype, shape and a
    hash of their bytes), lists, tuples, dicts and sets of these (by value), dataclass and
    ``SimpleNamespace`` records (by class and values), classes, and functions (by name,
    bytecode, defaults and captured values). Replacing a parameter-free
    module (``m.blocks[2].mlp.act = nn.ReLU()``) or changing ``attn.scale``, a mask tensor
    or an options dict changes it. timm's ``pretrained_cfg`` (where the weights came from)
    is left out. A value with no such text shows as ``<unsound>`` (see
    :func:`model_fingerprint`)."""
    return _structure(model)[0]


# --------------------------------------------------------------------------- hooks

def _hook_module(hook: Any) -> str:
    fn = hook
    while isinstance(fn, functools.partial):
        fn = fn.func
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__module__", None) or type(fn).__module__ or ""


def _hook_name(hook: Any) -> str:
    fn = hook.func if isinstance(hook, functools.partial) else hook
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _is_vitlens_hook(hook: Any) -> bool:
    """Hooks vitlens's own captures register (they live only inside a capture)."""
    module = _hook_module(hook)
    return module == "vitlens" or module.startswith("vitlens.")


def user_hooks(model: nn.Module) -> list[str]:
    """The forward hooks and pre-hooks on ``model`` (and torch's global ones) that vitlens
    did not register, as ``"a forward hook ablate on blocks.2"``. Such a hook can change
    what the model computes in ways no fingerprint can see, so they turn the cache off."""
    found = []
    torch_module = nn.modules.module
    for kind, hooks in (("forward pre-hook", torch_module._global_forward_pre_hooks),
                        ("forward hook", torch_module._global_forward_hooks)):
        found += [f"a global {kind} {_hook_name(h)} on every module"
                  for h in hooks.values() if not _is_vitlens_hook(h)]
    for name, mod in model.named_modules():
        where = f"{name} of {type(model).__name__}" if name else type(model).__name__
        for kind, hooks in (("forward pre-hook", mod._forward_pre_hooks),
                            ("forward hook", mod._forward_hooks)):
            found += [f"a {kind} {_hook_name(h)} on {where}"
                      for h in hooks.values() if not _is_vitlens_hook(h)]
    return found


# --------------------------------------------------------------------------- weights

def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(model.named_parameters(remove_duplicate=False)) + list(
        model.named_buffers(remove_duplicate=False))


def _one_digest(t: torch.Tensor) -> bytes:
    return hashlib.sha256(_tensor_bytes(t)).digest()


def _weight_digests(tensors: list[torch.Tensor]) -> list[bytes]:
    """SHA-256 of each tensor's bytes, hashed in threads when there are many bytes."""
    unique = list({id(t): t for t in tensors}.values())  # a tied weight is read once
    total = sum(t.numel() * t.element_size() for t in unique)
    workers = min(8, os.cpu_count() or 1)
    if total < _PARALLEL_BYTES or workers < 2:
        digests = [_one_digest(t) for t in unique]
    else:
        order = sorted(range(len(unique)), key=lambda i: -unique[i].numel())
        with ThreadPoolExecutor(max_workers=workers) as pool:
            got = dict(zip(order, pool.map(lambda i: _one_digest(unique[i]), order),
                           strict=True))
        digests = [got[i] for i in range(len(unique))]
    by_id = {id(t): d for t, d in zip(unique, digests, strict=True)}
    return [by_id[id(t)] for t in tensors]


def _class_code(cls: type, files: dict[str, str], ctx: _Context, unsound: list[str]) -> str:
    """The code of ``cls``: the bytecode (and captured values) of every function defined in
    it or its bases up to :class:`torch.nn.Module` (``forward`` and the helpers it calls as
    methods), and a hash of each defining source file (``files`` memoises them): editing a
    class's code, or a helper function in its file, changes the key even with the same name
    and weights. A captured value that cannot be fingerprinted is added to ``unsound``."""
    parts = []
    for klass in cls.__mro__:
        if klass is nn.Module or klass is object:
            break
        for name, v in sorted(vars(klass).items()):
            fn = v.__func__ if isinstance(v, (staticmethod, classmethod)) else (
                v.fget if isinstance(v, property) else v)
            if not isinstance(fn, types.FunctionType):
                continue
            parts.append(f"{klass.__qualname__}.{name}={_code_text(fn.__code__)}")
            for cell in fn.__closure__ or ():  # a class defined in a function captures values
                try:
                    parts.append(ctx.value(cell.cell_contents))
                except ValueError:  # an empty cell
                    parts.append("<empty cell>")
                except _Unsound as why:
                    unsound.append(f"{klass.__qualname__}.{name} captures {why}")
        module = sys.modules.get(klass.__module__)
        path = getattr(module, "__file__", None)
        if path and path not in files:
            try:
                with open(path, "rb") as f:
                    files[path] = _bytes_digest(f.read())
            except OSError:  # a file gone since import: the bytecode above still counts
                files[path] = "<unreadable>"
        if path:
            parts.append(f"{klass.__module__} file {files[path]}")
    return _bytes_digest("\n".join(parts).encode())


def _code(model: nn.Module) -> tuple[str, list[str]]:
    """The code of every class in ``model``'s module tree (see :func:`_class_code`), and
    what in it could not be fingerprinted."""
    files: dict[str, str] = {}
    ctx, unsound = _Context(model), []
    classes = sorted({type(m) for m in model.modules()},
                     key=lambda c: (c.__module__, c.__qualname__, id(c)))
    text = "\n".join(f"{c.__module__}.{c.__qualname__}:{_class_code(c, files, ctx, unsound)}"
                     for c in classes)
    return text, sorted(set(unsound))


def code_text(model: nn.Module) -> str:
    """The code of every class in ``model``'s module tree: each class's methods' bytecode
    (through its bases up to ``nn.Module``) and its source file's hash."""
    return _code(model)[0]


def model_fingerprint(model: nn.Module) -> str:
    """A hash (SHA-256) of a model's identity: its class, its module tree with every
    module's class, ``extra_repr`` and attributes (see :func:`structure_text`), the code of
    those classes (their methods' bytecode and their source files, :func:`code_text`), its
    train/eval mode, and the current bytes of every parameter and buffer.

    The bytes are hashed on every call, so no edit can go unseen (``p.data.zero_()``, a
    NumPy view, ``load_state_dict``); tensors are hashed in parallel threads, which costs
    about 0.2-0.4 s for a ViT-B/16 (86M float32 parameters) on two cores with SHA
    instructions.

    If the model carries something that cannot be fingerprinted (a forward hook or
    pre-hook that vitlens did not add, see :func:`user_hooks`, or an attribute holding an
    arbitrary object), the fingerprint starts with :data:`NO_CACHE` and names it:
    :func:`make_key` then gives a key that the cache never reads or writes.
    """
    structure, unsound = _structure(model)
    code, unsound_code = _code(model)
    unsound = unsound + unsound_code
    hooks = user_hooks(model)
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    h.update(structure.encode())
    h.update(f"\ncode:\n{code}".encode())
    h.update(f"\ntraining={model.training}\n".encode())
    named = _tensors(model)
    for (name, t), digest in zip(named, _weight_digests([t for _, t in named]), strict=True):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode() + digest)
    digest = h.hexdigest()[:32]
    if hooks or unsound:
        return f"{NO_CACHE}{'; '.join(hooks + unsound)} | {digest}"
    return digest


# --------------------------------------------------------------------------- images

def images_fingerprint(images: Any, n: int | None = None) -> str:
    """A content fingerprint (SHA-256) of the first ``n`` images of an
    :class:`~vitlens.datasets.ImageSource` (all of them when ``n`` is None), in order,
    with whether the source is already preprocessed.

    Only the images used are read, so 10,240 images of a 50,000-image dataset cost what the
    run itself reads. Sources without per-image bytes fall back to their ``fingerprint()``.
    """
    total = len(images)
    n = total if n is None else min(int(n), total)
    flag = bool(getattr(images, "preprocessed", False))
    item_bytes = getattr(images, "_item_bytes", None)
    if item_bytes is None:
        text = f"{images.fingerprint()}:{n}:preprocessed={flag}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]
    h = hashlib.sha256(f"{type(images).__name__}:{n}:preprocessed={flag}".encode())
    for i in range(n):
        h.update(item_bytes(i))
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- keys

def _no_cache_reasons(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj[len(NO_CACHE):].rsplit(" | ", 1)[0]] if obj.startswith(NO_CACHE) else []
    if isinstance(obj, dict):
        return [r for v in obj.values() for r in _no_cache_reasons(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _no_cache_reasons(v)]
    return []


def make_key(kind: str, parts: dict[str, Any]) -> str:
    """The cache key of a result of ``kind`` (``"cka"``, ...) that depends on ``parts``.

    ``parts`` must be JSON-able (lists, strings, numbers); the vitlens version is added. If
    a part is a :data:`NO_CACHE` fingerprint, one :class:`CacheUnavailableWarning` names
    why, and the key is one the cache never reads or writes (see :func:`cacheable`).
    """
    record = {"kind": kind, "vitlens_version": __version__, **parts}
    text = json.dumps(record, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:40]
    reasons = list(dict.fromkeys(_no_cache_reasons(parts)))
    if reasons:
        _NO_CACHE_KEYS.add(key)
        listed = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more"
                                            if len(reasons) > 3 else "")
        msg = (f"vitlens does not use its cache for this {kind} call: {listed}. What such a "
               "hook or value does to the result cannot be fingerprinted, so a stored result could belong to "
               "other behaviour; the result is computed afresh and not stored. Remove the "
               "hook (or attribute) to use the cache, or pass cache=False (--no-cache) to "
               "silence this.")
        warnings.warn(msg, CacheUnavailableWarning, stacklevel=3)
    return key


def cacheable(key: str) -> bool:
    """Whether the cache may read or write ``key`` (False for keys :func:`make_key` gave
    to calls with a :data:`NO_CACHE` part)."""
    return key not in _NO_CACHE_KEYS
