"""Input checks of :class:`vitlens.similarity.run.CKARun` (and of the analyses, through
:mod:`vitlens.analyses._run`) that turn deep torch failures into errors naming the problem
and the fix.

:func:`check_run_args` is the one home of the checks of ``n_images``, ``batch_size`` and
``device`` that every public run shares.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..distributed import check_device  # noqa: F401  (re-exported: the run checks)
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


def _whole(value: Any) -> bool:
    """An int (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_n_images(n_images: Any) -> int | None:
    """``n_images`` as an int: ``None`` (every image) or a whole number >= 1.

    Raises:
        TypeError: not a whole number (a float such as 4.7, a bool, a string).
        ValueError: zero or negative.
    """
    if n_images is None:
        return None
    if not _whole(n_images):
        msg = (f"n_images={n_images!r} ({type(n_images).__name__}) is not a whole number; pass "
               "an int >= 1, e.g. n_images=64, or n_images=None to use every image")
        raise TypeError(msg)
    if n_images < 1:
        msg = (f"n_images={n_images}: pass a positive number of images (an int >= 1), or "
               "n_images=None to use every image")
        raise ValueError(msg)
    return int(n_images)


def check_batch_size(batch_size: Any, minimum: int = 4, what: str = "minibatch CKA") -> int:
    """``batch_size`` as an int, a whole number >= ``minimum``.

    Raises:
        TypeError: not a whole number (a float such as 4.5, a bool, a string).
        ValueError: below ``minimum``.
    """
    if not _whole(batch_size):
        msg = (f"batch_size={batch_size!r} ({type(batch_size).__name__}) is not a whole number; "
               f"pass an int >= {minimum}, e.g. batch_size=64")
        raise TypeError(msg)
    if batch_size < minimum:
        why = " (the unbiased HSIC divides by n(n-3))" if minimum == 4 else ""
        msg = (f"batch_size={batch_size} is too small: {what} needs batches of at least "
               f"{minimum} images{why}; pass batch_size>={minimum}")
        raise ValueError(msg)
    return int(batch_size)


def check_run_args(*, n_images: Any = None, batch_size: Any = 64, device: Any = None,
                   min_batch: int = 4, what: str = "minibatch CKA") -> tuple[int | None, int]:
    """The checks every public run shares, before any image is read or model moved:
    ``n_images`` (``None`` or an int >= 1), ``batch_size`` (an int >= ``min_batch``) and
    ``device`` (available here). Returns ``(n_images, batch_size)`` as ints.

    Raises:
        TypeError: ``n_images`` or ``batch_size`` not a whole number.
        ValueError: a value out of range or a device this machine does not have, naming
            the argument, the value and the fix.
    """
    n = check_n_images(n_images)
    b = check_batch_size(batch_size, min_batch, what)
    check_device(device)
    return n, b
