"""Labelled result containers: arrays with names, metadata, save/load, DataFrames, charts.

Every result saves to one ``.npz`` file (NumPy arrays plus a JSON metadata record), and
:func:`load_result` (or ``SomeResult.load``) reads any of them back, including what the CLI
writes. Reading is bounded: the archive's declared sizes are checked before any array is
decompressed (:data:`MAX_RESULT_BYTES`).

The convention every result follows:

- **Constructor**: ``Result(arrays, meta)`` (or a subclass's own ``__init__`` with named
  arrays); the analysis function builds it, and a classmethod ``build(...)`` does so from
  raw parts where that takes work.
- **merge**: ``a.merge(b)`` joins two results of disjoint images when the statistic is a
  sum over images; other results raise :class:`NotImplementedError` saying why.
- **value**: ``r.value(...)`` returns one float by names (layer, block, statistic).
- **chart**: ``r.chart(width=, height=, title=)`` returns an Altair chart.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._files import write_atomic
from .._version import __version__
from .registry import register, result_class

#: The most a result file may expand to when loaded (sum of its members' declared sizes).
MAX_RESULT_BYTES = 1 << 28  # 256 MiB


class Result:
    """Base class: named float arrays (``self.arrays``) plus JSON-able ``self.meta``.

    Subclasses set ``array_names`` (required arrays) and implement ``to_dataframe``,
    ``value`` and ``chart(width=, height=)`` (see the module's convention). vitlens's own
    classes are listed in :data:`vitlens.results.registry.RESULT_TYPES`; others register
    by class name when defined, so :func:`load_result` can restore them.
    """

    array_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register(cls)

    def __init__(self, arrays: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        missing = [k for k in self.array_names if k not in arrays]
        if missing:
            msg = f"{type(self).__name__} needs arrays {missing}"
            raise ValueError(msg)
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.meta = dict(meta or {})
        self.meta.setdefault("vitlens_version", __version__)

    def save(self, path: str | os.PathLike) -> Path:
        """Write one ``.npz`` file (the suffix is added if missing) and return its path.

        The file is written atomically (see :func:`write_atomic`): a new one gets the
        permissions the umask gives, a replaced one keeps its own. Like NumPy's ``savez``,
        it replaces a file at ``path``; ``vitlens cka --out`` and ``vitlens reproduce``
        write through :class:`vitlens.outputs.OutputFolder`, which replaces only what vitlens
        wrote.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"result_type": type(self).__name__, "meta": self.meta}
        payload = {f"a_{k}": v for k, v in self.arrays.items()}
        payload["__meta__"] = np.frombuffer(json.dumps(header, default=_json_default).encode(),
                                            dtype=np.uint8)
        write_atomic(path, lambda f: np.savez_compressed(f, **payload))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, max_bytes: int = MAX_RESULT_BYTES) -> Result:
        """Read a result file written by :meth:`save` (or by the ``vitlens`` CLI).

        Raises:
            ValueError: not a result file, or its arrays would expand past ``max_bytes``.
        """
        result = load_result(path, max_bytes=max_bytes)
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

    def merge(self, other: Result) -> Result:
        """Join a result of disjoint images (sum-based statistics only)."""
        msg = (f"{type(self).__name__} is not a sum over images, so two of them cannot be "
               "merged; compute it once on the union of the images")
        raise NotImplementedError(msg)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """Notebooks show the chart."""
        try:
            return self.chart()._repr_mimebundle_(include, exclude)
        except NotImplementedError:
            return {"text/plain": repr(self)}


def chart_size(width: int | None, height: int | None, size: int | None, default: int,
               default_height: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of a chart (or a facet's panel) from the convention's ``width=`` and
    ``height=``; ``size=`` (the older spelling) sets both."""
    w = width if width is not None else size if size is not None else default
    dh = default_height if default_height is not None else w
    h = height if height is not None else size if size is not None else dh
    return int(w), int(h)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _check_size(path: Path, max_bytes: int) -> None:
    """Refuse an archive whose members would expand past ``max_bytes`` (checked before any
    array is read, from the sizes the zip directory declares)."""
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError) as err:
        msg = f"{str(path)!r} is not a vitlens result file ({type(err).__name__}: {err})"
        raise ValueError(msg) from err
    if total > max_bytes:
        msg = (f"{str(path)!r} would expand to {total:,} bytes when loaded ({path.stat().st_size:,}"
               f" on disk), over the limit of {max_bytes:,}; if you trust the file, pass a "
               "larger max_bytes= to load_result / Result.load")
        raise ValueError(msg)


def load_result(path: str | os.PathLike, *, max_bytes: int = MAX_RESULT_BYTES) -> Result:
    """Load any vitlens result file, restoring its class.

    Args:
        path: A ``.npz`` file written by :meth:`Result.save` or the CLI.
        max_bytes: The most its arrays may expand to (checked before reading them).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a result file, an unknown result type, or over ``max_bytes``.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"result file {str(path)!r} does not exist"
        raise FileNotFoundError(msg)
    _check_size(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["__meta__"]).decode())
            arrays = {k[2:]: data[k] for k in data.files if k.startswith("a_")}
    except (OSError, ValueError, KeyError) as err:
        msg = f"{str(path)!r} is not a vitlens result file ({type(err).__name__}: {err})"
        raise ValueError(msg) from err
    kind = header.get("result_type")
    cls = result_class(kind)
    if cls is None:
        msg = f"{str(path)!r} holds an unknown result type {kind!r}; upgrade vitlens"
        raise ValueError(msg)
    obj = cls.__new__(cls)
    Result.__init__(obj, arrays, header.get("meta", {}))
    return obj


__all__ = ["MAX_RESULT_BYTES", "Result", "load_result"]
