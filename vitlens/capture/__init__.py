"""Capture: hooks that live only inside a context manager, one forward pass per batch.

One base, :class:`~vitlens.capture.hooks.HookSet` (thread check, enter/exit, removal in a
``finally``), and one module per thing captured, as in timm's ``_features.py``:

- :mod:`~vitlens.capture.activations`: :class:`Capture`, layer activations by catalog name,
  reduced by a token mode.
- :mod:`~vitlens.capture.gram`: :class:`GramCapture`, each layer reduced to its packed
  U-centred Gram inside its hook (wide layers, minibatch CKA).
- :mod:`~vitlens.capture.attention`: :class:`AttentionCapture`, attention probabilities
  recomputed in a pre-hook.
- :mod:`~vitlens.capture.residual`: the residual stream and branch points of each block.

>>> with Capture(model, ["blocks.0", "blocks.11"], token_mode="cls") as cap:
...     feats = cap.run(x)          # {"blocks.0": (n, C), "blocks.11": (n, C)}
"""

from __future__ import annotations

from ..errors import CaptureError
from .activations import TOKEN_MODES, Capture, apply_token_mode, capture_layers
from .attention import AttentionCapture, attention_blocks, attention_probs, resolve_blocks
from .gram import GramCapture, gram_route_applies
from .hooks import HookSet, count_hooks
from .residual import SubBlock, canonical, residual_catalog

__all__ = [
    "TOKEN_MODES",
    "AttentionCapture",
    "Capture",
    "CaptureError",
    "GramCapture",
    "HookSet",
    "SubBlock",
    "apply_token_mode",
    "attention_blocks",
    "attention_probs",
    "canonical",
    "capture_layers",
    "count_hooks",
    "gram_route_applies",
    "residual_catalog",
    "resolve_blocks",
]
