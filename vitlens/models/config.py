"""A model's input size and normalisation, for modules timm did not build.

vitlens preprocesses raw images with timm's data config of each model, which timm reads
from ``model.pretrained_cfg``. A timm model carries one; any other ``nn.Module`` gets one
from :func:`with_data_config` (or by setting ``model.pretrained_cfg`` yourself).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["has_data_config", "with_data_config"]


def has_data_config(model: nn.Module) -> bool:
    """Whether ``model`` says its input size and normalisation (a timm ``pretrained_cfg``)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    return bool(cfg) and "input_size" in cfg


def with_data_config(model: nn.Module, *, input_size: Sequence[int],
                     mean: Sequence[float] = (0.485, 0.456, 0.406),
                     std: Sequence[float] = (0.229, 0.224, 0.225),
                     interpolation: str = "bilinear", crop_pct: float = 1.0) -> nn.Module:
    """Give any module the data config vitlens (and timm) preprocess raw images with.

    Args:
        model: The module (changed in place and returned).
        input_size: ``(C, H, W)``, or ``(H, W)`` for 3 channels.
        mean, std: Per-channel normalisation.
        interpolation: The resize's interpolation.
        crop_pct: The centre crop's fraction (1.0: resize to the input size, no crop).

    Returns:
        ``model``, with ``model.pretrained_cfg`` holding these settings.

    Raises:
        ValueError: an ``input_size`` that is not (C, H, W) or (H, W), or mean/std that do
            not have one value per channel.
    """
    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        size = (3, *size)
    if len(size) != 3 or min(size) < 1:
        msg = f"input_size={tuple(input_size)}; pass (C, H, W) or (H, W)"
        raise ValueError(msg)
    if len(mean) != size[0] or len(std) != size[0]:
        msg = (f"mean has {len(mean)} and std {len(std)} values but the input has {size[0]} "
               "channels; give one per channel")
        raise ValueError(msg)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(input_size=size, mean=tuple(float(v) for v in mean),
               std=tuple(float(v) for v in std), interpolation=interpolation,
               crop_pct=float(crop_pct), crop_mode="center")
    model.pretrained_cfg = cfg
    return model
