"""Readable model labels, for results' metadata and progress bars."""

from __future__ import annotations

from torch import nn

__all__ = ["model_label"]


def model_label(model: str | nn.Module) -> str:
    """A readable name for a model: its name, or its timm architecture."""
    if isinstance(model, str):
        return model
    name = getattr(model, "vitlens_name", None)  # set by load_model
    if name:
        return str(name)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture") or type(model).__name__
