"""The one hook-set base of every capture: thread check, enter/exit, removal in ``finally``.

A :class:`HookSet` registers its hooks on ``__enter__`` and removes them in a ``finally``
on exit, also when registration or the forward pass raises. Its hooks act only on forward
passes of the thread that entered the ``with`` block (or that last called ``run``), so a
widget computing in a background thread and another view using the same model in the
kernel's thread never see each other's batches. Shaped like timm's ``_features.py``
(``FeatureHooks``): the subclass says which hooks go where, the base owns their lifetime.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import CaptureError

__all__ = ["HookSet", "count_hooks"]


class HookSet:
    """Hooks on some modules of ``model`` that live only inside ``with``.

    Subclasses implement :meth:`_register`, calling :meth:`_add_hook` for each hook.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._thread: int | None = None  # hooks act only in this thread

    # ----- for subclasses
    def _register(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _add_hook(self, module: nn.Module, hook: Callable, *, pre: bool = False,
                  with_kwargs: bool = False) -> None:
        """Register one forward (or pre-forward) hook, kept for removal."""
        if pre:
            handle = module.register_forward_pre_hook(hook, with_kwargs=with_kwargs)
        else:
            handle = module.register_forward_hook(hook, with_kwargs=with_kwargs)
        self._handles.append(handle)

    def _ours(self) -> bool:
        """Whether the forward pass now running is this hook set's (same thread)."""
        return threading.get_ident() == self._thread

    def _claim(self, what: str) -> None:
        """Before a forward pass in :meth:`run`: check the hooks are on, claim the thread."""
        if not self._handles:
            name = type(self).__name__
            msg = f"{name}.{what}() must be called inside 'with {name}(...) as cap:'"
            raise CaptureError(msg)
        self._thread = threading.get_ident()

    # ----- lifetime
    @property
    def active(self) -> bool:
        """Whether the hooks are registered now."""
        return bool(self._handles)

    def __enter__(self) -> Any:
        self._thread = threading.get_ident()
        try:
            self._register()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this set registered (idempotent)."""
        try:
            for handle in self._handles:
                handle.remove()
        finally:
            self._handles.clear()
            self._cleared()

    def _cleared(self) -> None:
        """Drop per-pass state after the hooks are removed (subclasses extend it)."""


def count_hooks(model: nn.Module) -> int:
    """The number of forward and pre-forward hooks on every module of ``model``."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
