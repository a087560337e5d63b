"""Build and load zoo models (imports torch, timm and the standard library only).

``create(name)`` gives a random-init model with a timm-style ``pretrained_cfg`` (mean, std,
input size), ``load(name)`` the trained model in eval mode from the bundled safetensors file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import WeightsUnavailableError
from ._specs import SPECS, WEIGHTS_DIR, canonical
from .architectures import ARCHITECTURES, NUM_CLASSES, build

__all__ = ["MEAN", "STD", "create", "load", "pretrained_cfg", "weights_path"]

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)

_FIRST_CONV = {"vit": "patch_embed.proj", "resnet": "stem.conv", "mixer": "stem.proj"}
_CLASSIFIER = {"vit": "head", "resnet": "head.fc", "mixer": "head"}


def _family(arch: str) -> str:
    return "vit" if arch.startswith("vit") else arch


def pretrained_cfg(name: str) -> dict[str, Any]:
    """The timm-style data config of a zoo model (no hub id: it never downloads)."""
    short = canonical(name)
    fam = _family(SPECS[short]["arch"])
    return {
        "architecture": ARCHITECTURES[SPECS[short]["arch"]]["timm_class"],
        "tag": f"vitlens/{short}",
        "file": str(weights_path(short)),
        "num_classes": ARCHITECTURES[SPECS[short]["arch"]]["kwargs"].get("num_classes",
                                                                         NUM_CLASSES),
        "input_size": (3, 64, 64),
        "fixed_input_size": fam != "resnet",
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": MEAN,
        "std": STD,
        "first_conv": _FIRST_CONV[fam],
        "classifier": _CLASSIFIER[fam],
        "license": "apache-2.0",
    }


def create(name: str) -> nn.Module:
    """A random-init model of zoo model ``name`` (``"vit-cls"`` or ``"vitlens/vit-cls"``).

    Raises:
        ZooNameError: (``KeyError``/``ValueError``) unknown name, listing the zoo.
    """
    short = canonical(name)
    model = build(SPECS[short]["arch"])
    cfg = pretrained_cfg(short)
    model.pretrained_cfg = cfg
    model.default_cfg = cfg
    return model


def weights_path(name: str) -> Path:
    """Where the bundled safetensors weights of zoo model ``name`` live."""
    return WEIGHTS_DIR / f"{canonical(name)}.safetensors"


def _read(path: Path, short: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        msg = (
            f"weights file for zoo model {short!r} not found: {path}. Reinstall vitlens or "
            f"train it: python -m vitlens.zoo.train {short}"
        )
        raise WeightsUnavailableError(msg)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        msg = (
            f"weights file {path} for zoo model {short!r} is corrupt or not a safetensors file "
            f"({type(err).__name__}: {err}). Reinstall vitlens or retrain: "
            f"python -m vitlens.zoo.train {short}"
        )
        raise WeightsUnavailableError(msg) from err


def load(name: str, path: str | os.PathLike | None = None) -> nn.Module:
    """The trained zoo model ``name`` in eval mode, in float32.

    Args:
        name: A zoo name, ``"vit-cls"`` or ``"vitlens/vit-cls"``.
        path: A safetensors file to read instead of the bundled one.

    Raises:
        ZooNameError: (``KeyError``/``ValueError``) unknown name, listing the zoo.
        WeightsUnavailableError: the weights file is missing, corrupt, or does not fit the
            architecture; the message names the file.
    """
    short = canonical(name)
    file = Path(path) if path is not None else weights_path(short)
    state = {k: v.float() for k, v in _read(file, short).items()}
    model = create(short)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        msg = f"weights file {file} does not fit zoo model {short!r}: {err}"
        raise WeightsUnavailableError(msg) from err
    if path is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "file": str(file)}
        model.default_cfg = model.pretrained_cfg
    return model.eval()
