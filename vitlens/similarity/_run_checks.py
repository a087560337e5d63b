"""Input checks of :class:`vitlens.similarity.run.CKARun` that turn deep torch failures
into errors naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ImageError


def check_models(models: Mapping[str, nn.Module]) -> None:
    """Refuse models whose parameters are not float32 (vitlens feeds float32 images).

    Raises:
        TypeError: a float16, bfloat16 or float64 model, naming the dtype and the fix.
    """
    for label, model in models.items():
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                         if p.dtype.is_floating_point and p.dtype != torch.float32})
        if dtypes:
            name = "model A" if label == "a" else "model B" if label == "b" else f"model {label!r}"
            msg = (f"{name} ({type(model).__name__}) has {', '.join(dtypes)} parameters, but "
                   "vitlens feeds it float32 images and accumulates CKA in float64. Pass "
                   "model.float() instead; for a mixed-precision forward pass use "
                   "precision='bfloat16', 'float16' or 'auto'")
            raise TypeError(msg)


def check_token_counts(token_mode: str, names_a: Sequence[str], fa: Sequence[torch.Tensor],
                       names_b: Sequence[str], fb: Sequence[torch.Tensor] | None) -> None:
    """With ``token_mode="tokens"`` every layer must have as many tokens per image.

    Raises:
        ValueError: layers with different token grids, naming them and their counts.
    """
    if fb is None or token_mode != "tokens":
        return
    rows = {n: int(t.shape[0]) for n, t in zip([*names_a, *names_b], [*fa, *fb], strict=False)}
    if len(set(rows.values())) <= 1:
        return
    counts = ", ".join(f"{n!r}: {r}" for n, r in rows.items())
    msg = ("token_mode='tokens' treats every spatial token as an example, so both models' "
           "layers need the same number of tokens per batch; these differ (rows per batch: "
           f"{counts}). Compare models with the same token grid (the same input size and "
           "patch size or stride), pick layers with equal grids, or use token_mode='mean', "
           "'cls' or 'flatten'")
    raise ValueError(msg)


def explain_forward_error(err: BaseException, label: str, model: nn.Module, x: torch.Tensor,
                          images: Any) -> BaseException:
    """A clear error for a forward pass that failed on preprocessed tensors of the wrong
    size; other failures are returned unchanged."""
    if not getattr(images, "preprocessed", False):
        return err
    from ..datasets.preprocess import data_config

    want = tuple(int(v) for v in data_config(model)["input_size"])
    got = tuple(int(v) for v in x.shape[1:])
    if got == want:
        return err
    name = "A" if label == "a" else "B" if label == "b" else repr(label)
    msg = (f"model {name} ({type(model).__name__}) failed on the preprocessed images: they are "
           f"{got} (C, H, W) but the model's data config expects {want} ({type(err).__name__}: "
           f"{err}). Resize them to {want[1]}x{want[2]}, or pass raw images (a folder, PIL "
           "images, uint8 arrays) so that each model applies its own preprocessing")
    return ImageError(msg)


def check_data_config(label: str, model: nn.Module, images: Any) -> None:
    """Raw images need the model's input size and normalisation (timm's data config).

    Raises:
        ValueError: a module without ``pretrained_cfg`` given raw images, saying how to
            give one.
    """
    from ..models.config import has_data_config

    if (getattr(images, "preprocessed", False) or has_data_config(model)
            or type(model).__module__.startswith("timm.")):  # timm resolves its own defaults
        return
    name = "A" if label == "a" else "B" if label == "b" else repr(label)
    msg = (f"model {name} ({type(model).__name__}) does not say its input size and "
           "normalisation (it has no timm pretrained_cfg), so vitlens cannot preprocess raw "
           "images for it. Give them: vitlens.models.with_data_config(model, "
           "input_size=(3, H, W), mean=(...), std=(...)) (or set model.pretrained_cfg), or "
           "pass preprocessed (n, C, H, W) tensors as images")
    raise ValueError(msg)
