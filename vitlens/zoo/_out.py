"""Where the zoo trainers write: the package's own zoo folder, or a ``--out`` folder.

The package folder holds vitlens's bundled weights and cards, which retraining replaces (that
is what ``python -m vitlens.zoo.train`` is for). A ``--out`` folder may be the user's: it is
written through :class:`vitlens.outputs.OutputFolder`, so a file vitlens did not write there
is never replaced (unless ``overwrite``), and every file written is recorded in its manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .._files import write_atomic
from ..outputs import OutputFolder
from ._specs import ZOO_DIR


def model_files(short: str) -> tuple[str, str]:
    """The weights file and the card of zoo model ``short``, relative to the folder."""
    return f"weights/{short}.safetensors", f"cards/{short}.json"


class ZooOutput:
    """The folder a trainer writes ``weights/<name>.safetensors`` and ``cards/<name>.json`` in.

    Args:
        out: A folder, or ``None`` for the package's own zoo folder.
        overwrite: Replace files in a ``--out`` folder that vitlens did not write.
    """

    def __init__(self, out: str | Path | None = None, overwrite: bool = False) -> None:
        self.root = Path(out) if out is not None else ZOO_DIR
        self._folder = OutputFolder(out, overwrite) if out is not None else None

    def check(self, names: Iterable[str]) -> None:
        """Refuse, before any training, a ``--out`` folder holding files in the way of the
        models ``names`` that vitlens may not replace."""
        if self._folder is not None:
            self._folder.check([f for n in names for f in model_files(n)])

    def write(self, rel: str, writer: Callable[[Path], Any]) -> Path:
        """Write ``rel`` with ``writer(path)``; in a ``--out`` folder, checked and recorded."""
        if self._folder is not None:
            return self._folder.write(rel, writer)
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(path)
        return path

    def write_weights(self, short: str, state: dict) -> Path:
        """Save ``state`` (fp16 tensors) as the model's safetensors file (atomically)."""
        from safetensors.torch import save

        data = save(state, metadata={"name": short, "format": "pt"})
        return self.write(model_files(short)[0], lambda p: write_atomic(p, lambda f: f.write(data)))

    def write_card(self, short: str, card: dict) -> Path:
        """Save the model's card (JSON, atomically)."""
        data = (json.dumps(card, indent=2) + "\n").encode("utf-8")
        return self.write(model_files(short)[1], lambda p: write_atomic(p, lambda f: f.write(data)))
