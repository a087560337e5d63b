"""Shared pieces of the widgets: binary array traits, the error area and a small LRU cache.

Arrays travel to the browser as raw bytes plus a dtype and a shape (never JSON lists);
:func:`encode_array` and :func:`decode_array` are the two ends of that in Python.
"""

from __future__ import annotations

import html
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

_HERE = Path(__file__).parent


def esm_source(name: str) -> str:
    """A view's JavaScript module: ``_shared.js`` (colour maps, typed arrays) then ``name``.

    Plain ESM put together here, so there is no build step and no import to resolve.
    """
    return (_HERE / "_shared.js").read_text() + "\n" + (_HERE / name).read_text()


#: dtypes the JavaScript views can read (``DataView`` typed-array constructors).
WIRE_DTYPES = ("float32", "float64", "uint8", "int32")


def encode_array(array: Any, dtype: str = "float32") -> tuple[bytes, str, list[int]]:
    """An array as ``(bytes, dtype, shape)`` for a widget's binary traits (C order, little end)."""
    if dtype not in WIRE_DTYPES:
        msg = f"dtype {dtype!r} cannot be sent to the browser; use one of {WIRE_DTYPES}"
        raise ValueError(msg)
    arr = np.ascontiguousarray(np.asarray(array), dtype=np.dtype(dtype).newbyteorder("<"))
    return arr.tobytes(), dtype, [int(s) for s in arr.shape]


def decode_array(data: bytes | memoryview, dtype: str, shape: list[int]) -> np.ndarray:
    """The inverse of :func:`encode_array` (what the browser reads)."""
    arr = np.frombuffer(bytes(data), dtype=np.dtype(dtype).newbyteorder("<"))
    return arr.reshape([int(s) for s in shape]).astype(dtype)


def error_text(err: BaseException) -> str:
    """A one-line readable message for an exception (KeyError messages lose their quotes)."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


#: Heads a message that belongs to earlier settings than the controls show.
PREVIOUS_MESSAGE = "From the previous settings (press Run for these):"


class MessageArea(W.HTML):
    """An HTML area that shows one error or notice, or nothing.

    The widget it belongs to stays usable: a later success calls :meth:`clear`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(value="", **kwargs)
        self.add_class("vitlens-message")
        self.text = ""
        self.level = ""
        self.previous = False  # the message belongs to earlier settings than the controls show

    def error(self, message: str | BaseException) -> None:
        """Show a readable error message."""
        text = error_text(message) if isinstance(message, BaseException) else str(message)
        self._show(text, "error")

    def notice(self, message: str) -> None:
        """Show an informational note."""
        self._show(message, "notice")

    def clear(self) -> None:
        self.text, self.level, self.value, self.previous = "", "", "", False

    def mark_previous(self, previous: bool) -> None:
        """Say (or stop saying) that the message shown came from earlier settings."""
        if self.text and previous != self.previous:
            self.previous = previous
            self._render()

    def _show(self, text: str, level: str) -> None:
        self.text, self.level, self.previous = text, level, False
        self._render()

    def _render(self) -> None:
        level, text = self.level, self.text
        if self.previous:
            level, text = "previous", f"{PREVIOUS_MESSAGE}\n{text}"
        color = {"error": "#b00020", "notice": "#555", "previous": "#777"}[level]
        bg = {"error": "#fdecea", "notice": "#f3f3f3", "previous": "#f3f3f3"}[level]
        self.value = (f'<div class="vitlens-{level}" style="color:{color};background:{bg};'
                      'padding:4px 8px;border-radius:4px;white-space:pre-wrap;'
                      f'font-family:sans-serif;font-size:13px">{html.escape(text)}</div>')

    def __repr__(self) -> str:
        return f"MessageArea({self.level or 'empty'})"


class LRUCache:
    """A thread-safe in-memory cache of computed results (moving a slider back is instant)."""

    def __init__(self, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The cached value of ``key``, computing (outside the lock) and storing it if absent."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
        value = compute()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"LRUCache({len(self)}/{self.maxsize}, hits={self.hits}, misses={self.misses})"


def model_key(model: Any) -> Hashable:
    """A cache key for a model name or a model object (objects by identity)."""
    return model if isinstance(model, str) else ("object", id(model))
