"""Output folders: vitlens replaces only what it wrote there.

A folder vitlens fills (``vitlens cka --out``, ``vitlens reproduce --out``,
:func:`vitlens.reproduce.reproduce`) gets a marker file, :data:`OUT_MARKER`. A later run may
replace its outputs in a marked folder; in a folder without the marker, any file in the way is
the user's, and the run stops before any work unless ``overwrite`` is passed.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CKA_OUTPUTS", "OUT_MARKER", "REPRODUCE_OUTPUTS", "check_out", "mark_out"]

#: Written into every output folder vitlens fills.
OUT_MARKER = ".vitlens-output"
CKA_OUTPUTS = ("cka.npz", "cka.png", "cka.svg")
REPRODUCE_OUTPUTS = ("FINDINGS.md", "findings.json", "figures", "results")


def check_out(out: Path, produces: tuple[str, ...] = (), overwrite: bool = False) -> None:
    """Refuse an output folder that can't be one, or whose entries in the way of ``produces``
    vitlens did not write (no :data:`OUT_MARKER` there), before any work is done.

    Raises:
        ValueError: naming the folder, what is in the way, and the fix.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
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
        msg = f"--out {str(out)!r} is not writable ({str(target)!r} denies writing); pick another folder"
        raise ValueError(msg)
    in_the_way = [name for name in produces if (out / name).exists()]
    if in_the_way and not overwrite and not (out / OUT_MARKER).is_file():
        msg = (f"--out {str(out)!r} already holds {', '.join(in_the_way)}, which vitlens did not "
               "write there; pick a new folder, or pass --overwrite (overwrite=True) to replace "
               "them")
        raise ValueError(msg)


def mark_out(out: Path) -> None:
    """Create ``out`` if needed and mark it as a folder vitlens writes its outputs in."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_MARKER).write_text("vitlens writes its outputs in this folder; a later run with "
                                  "the same --out replaces them.\n")
