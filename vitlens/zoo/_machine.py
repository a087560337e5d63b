"""Where a zoo model was trained, as its card records it.

Both trainers (:mod:`vitlens.zoo.train` and :mod:`vitlens.zoo.pretrain`) write this record, so
it lives apart from either of them.
"""

from __future__ import annotations

import platform
from typing import Any

import timm
import torch


def machine(dev: torch.device | None = None) -> dict[str, Any]:
    """The card's record of where a model was trained: the device (on the CPU: the thread
    count and the instruction set PyTorch's kernels use, since a CPU that rounds differently
    gives another trajectory, docs/ZOO.md 3q) and the library versions."""
    dev = torch.device("cpu") if dev is None else dev
    where = (str(dev) if dev.type != "cpu" else
             f"cpu ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()})")
    return {"device": where, "versions": {"torch": torch.__version__, "timm": timm.__version__,
                                          "python": platform.python_version()}}
