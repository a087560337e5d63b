"""Labelled result containers: arrays with names, metadata, save/load, DataFrames, charts.

Every result saves to one ``.npz`` file (NumPy arrays plus a JSON metadata record), and
:func:`load_result` (or ``SomeResult.load``) reads any of them back, including what the CLI
writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._version import __version__

_REGISTRY: dict[str, type[Result]] = {}


class Result:
    """Base class: named float arrays (``self.arrays``) plus JSON-able ``self.meta``.

    Subclasses set ``array_names`` (required arrays) and implement ``to_dataframe`` and
    ``chart``. They are registered by class name, so :func:`load_result` can restore them.
    """

    array_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        missing = [k for k in self.array_names if k not in arrays]
        if missing:
            msg = f"{type(self).__name__} needs arrays {missing}"
            raise ValueError(msg)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta = dict(meta or {})
        self.meta.setdefault("vitlens_version", __version__)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` file (the suffix is added if missing) and return its path."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"result_type": type(self).__name__, "meta": self.meta}
        payload = {f"a_{k}": v for k, v in self.arrays.items()}
        payload["__meta__"] = np.frombuffer(json.dumps(header, default=_json_default).encode(),
                                            dtype=np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **payload)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a result file written by :meth:`save` (or by the ``vitlens`` CLI)."""
        result = load_result(path)
        if cls is not Result and not isinstance(result, cls):
            msg = f"{str(path)!r} holds a {type(result).__name__}, not a {cls.__name__}"
            raise TypeError(msg)
        return result

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self.arrays.items())
        return f"{type(self).__name__}({shapes})"

    def to_dataframe(self):  # pragma: no cover - subclasses
        raise NotImplementedError

    def chart(self, **kwargs: Any):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Notebooks show the chart."""
        try:
            return self.chart()._repr_mimebundle_(include, exclude)
        except NotImplementedError:
            return {"text/plain": repr(self)}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def load_result(path: str | os.PathLike) -> Result:
    """Load any vitlens result file, restoring its class."""
    path = Path(path)
    if not path.is_file():
        msg = f"result file {str(path)!r} does not exist"
        raise FileNotFoundError(msg)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a_")}
    except (OSError, ValueError, KeyError) as err:
        msg = f"{str(path)!r} is not a vitlens result file ({type(err).__name__}: {err})"
        raise ValueError(msg) from err
    kind = header.get("result_type")
    if kind not in _REGISTRY:
        _import_result_modules()
    if kind not in _REGISTRY:
        msg = f"{str(path)!r} holds an unknown result type {kind!r}; upgrade vitlens"
        raise ValueError(msg)
    cls = _REGISTRY[kind]
    obj = cls.__new__(cls)
    Result.__init__(obj, arrays, header.get("meta", {}))
    return obj


def _import_result_modules() -> None:
    import importlib

    for name in ("vitlens.similarity_result", "vitlens.analyses"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def __getattr__(name: str) -> Any:
    if name == "SimilarityResult":  # defined in its own module, which imports this one
        from .similarity_result import SimilarityResult

        return SimilarityResult
    msg = f"module 'vitlens.results' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = ["Result", "load_result"]  # SimilarityResult: see __getattr__
