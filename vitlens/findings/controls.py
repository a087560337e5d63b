"""Random-init controls: the same architectures, untrained, seeded.

A finding is evidence about training only if an untrained network does not earn it too. The
control of a run replaces every model by a random-init copy of the same architecture (same
images, same code path, same statistic and rule). Roles that name the same model get the same
copy, so a comparison of a model with itself stays one; different models get different
initialisations, each seeded from ``seed`` and the model's name, so a control repeats exactly.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["CONTROL_SEEDS", "control_models", "random_init"]

#: Seeds of the random-init controls that ``vitlens reproduce`` and the notebooks run.
CONTROL_SEEDS: tuple[int, ...] = (0, 1, 2)


def _seed(seed: int, key: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**31 - 1)


def random_init(model: str | nn.Module, seed: int = 0, *, key: str | None = None) -> nn.Module:
    """A random-init copy of ``model``'s architecture, in eval mode.

    Args:
        model: ``"vitlens/<zoo name>"``, a timm name (built with ``pretrained=False``: nothing
            is downloaded) or a module (deep-copied, then every submodule with
            ``reset_parameters`` is re-initialised, and timm's ``init_weights`` when present).
        seed: Seeds the initialisation (together with the model's name).
        key: What the seed is combined with instead of the name (a module's default is its
            class name).

    Raises:
        ValueError: a module whose parameters cannot be re-initialised (no submodule has
            ``reset_parameters`` and it has no ``init_weights``).
    """
    if key is None:
        key = model if isinstance(model, str) else type(model).__name__
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(_seed(seed, key))
        if isinstance(model, str):
            if model.startswith("vitlens/"):
                from ..zoo import registry

                return registry.create(model).eval()
            import timm

            return timm.create_model(model, pretrained=False).eval()
        out = copy.deepcopy(model)
        touched = False
        if callable(getattr(out, "init_weights", None)):
            out.init_weights()
            touched = True
        for m in out.modules():
            if callable(getattr(m, "reset_parameters", None)) and not touched:
                m.reset_parameters()
        if not touched and not any(callable(getattr(m, "reset_parameters", None))
                                   for m in out.modules()):
            msg = (f"cannot re-initialise a {type(model).__name__}: no submodule has "
                   "reset_parameters and it has no init_weights; pass a model name instead")
            raise ValueError(msg)
        return out.eval()
    finally:
        torch.random.set_rng_state(state)


def control_models(models: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Models by role -> random-init copies by role (one copy per distinct model; a role
    without a model, ``None``, stays ``None``)."""
    made: dict[Any, nn.Module] = {}
    out: dict[str, Any] = {}
    for role, m in models.items():
        if m is None:
            out[role] = None
            continue
        key = m if isinstance(m, str) else id(m)
        if key not in made:  # modules: each its own init, even two of one class
            made[key] = random_init(m, seed, key=None if isinstance(m, str) else
                                    f"{type(m).__name__}#{len(made)}")
        out[role] = made[key]
    return out


def control_label(seeds: Sequence[int]) -> str:
    """How tables name the control, e.g. ``"random init, seeds 0, 1, 2"``."""
    return "random init, seed" + ("s " if len(seeds) > 1 else " ") + ", ".join(map(str, seeds))
