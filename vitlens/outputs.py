"""Output folders: vitlens replaces only files it wrote there, and only while unchanged.

A folder vitlens fills (``vitlens cka --out``, ``vitlens reproduce --out``,
:func:`vitlens.reproduce.reproduce`) gets a manifest, :data:`OUT_MARKER`: a JSON record of
every file vitlens wrote there (its path relative to the folder, its size and its SHA-256),
updated as each file is written. No manifest is written until the first output exists.

A file in the way of an output may be replaced only when the manifest lists it and its
size and hash still match, i.e. vitlens wrote it and nobody has replaced or edited it
since. Any other file (not listed, changed since, a symlink, or in a folder whose marker is
the old empty one) is the user's, and the run stops before any work, naming the file,
unless ``overwrite`` is passed.

Every write into an output folder goes through :class:`OutputFolder`:

>>> folder = OutputFolder("results/")            # doctest: +SKIP
>>> folder.check(("cka.npz", "cka.png"))       # before any work
>>> folder.save_result(result, "cka.npz")      # checked again, written, recorded
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["CKA_OUTPUTS", "OUT_MARKER", "REPRODUCE_OUTPUTS", "OutputFolder", "check_out",
           "mark_out"]

#: The manifest of the files vitlens wrote in an output folder.
OUT_MARKER = ".vitlens-output"
CKA_OUTPUTS = ("cka.npz", "cka.png", "cka.svg")
REPRODUCE_OUTPUTS = ("FINDINGS.md", "findings.json", "figures", "results")
_FORMAT = "vitlens-output-manifest/2"
_LEGACY = "vitlens writes its outputs in this folder"  # the old marker, which listed nothing
_README = ("vitlens wrote the files listed here; a later run with the same --out replaces "
           "them only while they are unchanged (same size and sha256)")


def _digest(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a regular file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


def _read_manifest(root: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """The files the manifest in ``root`` lists, and whether a file at its name is not
    vitlens's (neither a manifest nor the old marker). A missing or legacy marker (the old
    one-line text, written before any output) lists nothing, so such a folder owns nothing."""
    path = root / OUT_MARKER
    if not os.path.lexists(path):
        return {}, False
    if path.is_symlink() or not path.is_file():
        return {}, True
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}, True
    if not text.strip() or text.startswith(_LEGACY):
        return {}, False
    try:
        data = json.loads(text)
    except ValueError:
        return {}, True
    files = data.get("files") if isinstance(data, dict) and data.get("format") == _FORMAT else None
    if not isinstance(files, dict):
        return {}, True
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, dict)}, False


def _is_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


class OutputFolder:
    """An output folder, the files vitlens wrote in it, and the only way vitlens writes there.

    Args:
        out: The folder (created, with its parents, when the first file is written).
        overwrite: Replace files in the way even if vitlens did not write them (the user
            asked for it: ``--overwrite``).
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False) -> None:
        self.root = Path(out)
        self.overwrite = bool(overwrite)
        self._files, self._foreign_marker = _read_manifest(self.root)

    # -- ownership ------------------------------------------------------------------------
    def _key(self, rel: str | os.PathLike) -> str:
        key = PurePosixPath(Path(rel).as_posix())
        if key.is_absolute() or ".." in key.parts or key.as_posix() in ("", ".", OUT_MARKER):
            msg = f"{str(rel)!r} is not a file name inside the output folder {str(self.root)!r}"
            raise ValueError(msg)
        return key.as_posix()

    def owns(self, rel: str | os.PathLike) -> bool:
        """Whether vitlens wrote ``rel`` (a path inside the folder) and it is unchanged since:
        listed in the manifest with the size and SHA-256 it has now."""
        key = self._key(rel)
        path = self.root / key
        entry = self._files.get(key)
        if entry is None or path.is_symlink() or not path.is_file():
            return False
        if entry.get("size") != path.stat().st_size:
            return False
        return entry.get("sha256") == _digest(path)["sha256"]

    def _not_ours(self, rel: str) -> list[str]:
        """The entries at ``rel`` that vitlens may not replace: the file itself, or every
        file (and symlink) under a folder there."""
        path = self.root / rel
        if not os.path.lexists(path):
            return []
        if not _is_dir(path):
            return [] if self.owns(rel) else [rel]
        found = []
        for top, dirs, files in os.walk(path):
            base = Path(top).relative_to(self.root)
            links = [d for d in dirs if (Path(top) / d).is_symlink()]
            dirs[:] = sorted(d for d in dirs if d not in links)
            for name in sorted([*files, *links]):
                key = (base / name).as_posix()
                if not self.owns(key):
                    found.append(key)
        return found

    def _refuse(self, in_the_way: Sequence[str]) -> None:
        shown = ", ".join(in_the_way[:5]) + (f" and {len(in_the_way) - 5} more"
                                            if len(in_the_way) > 5 else "")
        msg = (f"--out {str(self.root)!r} already holds {shown}, which vitlens did not write "
               f"there (or which changed since it did: its manifest {OUT_MARKER} does not list "
               "it as it is now); vitlens will not replace it. Pick another folder, move or "
               "remove that file, or pass --overwrite (overwrite=True) to replace it")
        raise ValueError(msg)

    def check(self, produces: Iterable[str] = ()) -> None:
        """Refuse a folder that can't be one, or one holding files in the way of
        ``produces`` (file or folder names) that vitlens may not replace; call it before
        any work is done.

        Raises:
            ValueError: naming the folder, what is in the way, and the fix.
        """
        out = self.root
        if os.path.lexists(out) and not out.is_dir():
            msg = (f"--out {str(out)!r} is an existing file, not a folder; pass a folder (it is "
                   "created if missing), e.g. --out results/")
            raise ValueError(msg)
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    msg = f"--out {str(out)!r} cannot be created: {str(parent)!r} is a file"
                    raise ValueError(msg)
                break
        target = out if out.exists() else next(p for p in out.parents if p.exists())
        if not os.access(target, os.W_OK | os.X_OK):
            msg = (f"--out {str(out)!r} is not writable ({str(target)!r} denies writing); pick "
                   "another folder")
            raise ValueError(msg)
        if self._foreign_marker:
            msg = (f"--out {str(out)!r} holds {OUT_MARKER}, which is not a manifest vitlens "
                   "wrote, and vitlens keeps its list of the files it wrote under that name; "
                   "pick another folder, or move that file away")
            raise ValueError(msg)
        if self.overwrite:
            return
        in_the_way = [key for name in produces for key in self._not_ours(self._key(name))]
        if in_the_way:
            self._refuse(in_the_way)

    # -- writing --------------------------------------------------------------------------
    def claim(self, rel: str | os.PathLike) -> Path:
        """The path to write ``rel`` at, after checking that nothing vitlens may not replace
        is there (its parent folders are created).

        Raises:
            ValueError: a file in the way that vitlens did not write or that changed since.
        """
        key = self._key(rel)
        path = self.root / key
        if os.path.lexists(path):
            if _is_dir(path):
                msg = (f"--out {str(self.root)!r}: {key!r} is a folder where vitlens writes a "
                       "file; pick another folder, or move that folder away")
                raise ValueError(msg)
            if not self.overwrite and not self.owns(key):
                self._refuse([key])
            if path.is_symlink():  # replaced, never written through
                path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, path: str | os.PathLike) -> None:
        """Add a file just written (``path``, inside the folder) to the manifest, which is
        rewritten atomically."""
        from ._files import write_atomic

        if self._foreign_marker:
            self.check()  # raises: the manifest's name holds a file that is not vitlens's
        key = self._key(os.path.relpath(path, self.root))
        current, foreign = _read_manifest(self.root)  # another run may have added files
        if not foreign:
            self._files = {**current, **self._files}
        self._files[key] = _digest(self.root / key)
        data = {"format": _FORMAT, "about": _README, "files": dict(sorted(self._files.items()))}
        text = json.dumps(data, indent=1) + "\n"
        write_atomic(self.root / OUT_MARKER, lambda f: f.write(text.encode("utf-8")))

    def write(self, rel: str | os.PathLike, writer: Callable[[Path], Any]) -> Path:
        """Claim ``rel``, call ``writer(path)`` to write it, record it; returns its path."""
        path = self.claim(rel)
        writer(path)
        self.record(path)
        return path

    def write_text(self, rel: str | os.PathLike, text: str) -> Path:
        """Write a UTF-8 text file (atomically) and record it."""
        from ._files import write_atomic

        data = text.encode("utf-8")
        return self.write(rel, lambda p: write_atomic(p, lambda f: f.write(data)))

    def save_result(self, result: Any, rel: str | os.PathLike) -> Path:
        """``result.save`` at ``rel`` (a ``.npz`` name), checked and recorded."""
        if Path(rel).suffix != ".npz":
            msg = f"result files are .npz; got {str(rel)!r}"
            raise ValueError(msg)
        return self.write(rel, result.save)

    def save_chart(self, chart: Any, stem: str | os.PathLike,
                   formats: tuple[str, ...] = ("png", "svg"), **kwargs: Any) -> list[Path]:
        """:func:`vitlens.figures.save_chart` at ``stem`` (e.g. ``"figures/cka"``): every
        file checked before rendering, rendered, then each checked again and written
        atomically (a file that appeared meanwhile is not replaced) and recorded."""
        from ._files import write_atomic
        from .figures import chart_paths, render_chart

        rels = chart_paths(self._key(stem), formats)
        for rel in rels:
            self.claim(rel)
        data = render_chart(chart, formats, **kwargs)
        return [self.write(rel, lambda p, b=data[fmt]: write_atomic(p, lambda f: f.write(b)))
                for fmt, rel in zip(formats, rels, strict=True)]

def check_out(out: str | os.PathLike, produces: tuple[str, ...] = (),
              overwrite: bool = False) -> None:
    """Refuse an output folder that can't be one, or whose entries in the way of ``produces``
    vitlens may not replace (see :class:`OutputFolder`), before any work is done.

    Raises:
        ValueError: naming the folder, what is in the way, and the fix.
    """
    OutputFolder(out, overwrite).check(produces)


def mark_out(out: str | os.PathLike) -> None:
    """Create ``out`` if needed. Deprecated: writes no marker any more; write through
    :class:`OutputFolder`, which records each file in the manifest as it is written."""
    Path(out).mkdir(parents=True, exist_ok=True)
