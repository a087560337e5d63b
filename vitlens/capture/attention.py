"""Attention probabilities of timm ViT-style models, recomputed in a forward pre-hook.

timm computes attention with the fused ``scaled_dot_product_attention``, so hooks on
``attn_drop`` or the softmax record nothing. :class:`AttentionCapture` registers a forward
*pre*-hook on every ``blocks[i].attn`` and recomputes the probabilities from the module's own
``qkv``, ``q_norm``, ``k_norm`` and ``scale`` (exactly timm's unfused path:
``softmax((q * scale) @ k^T)``). The model's own forward is untouched, so its outputs do not
change.

>>> with AttentionCapture(model) as cap:       # keeps the model's outputs
...     logits = model(x)
...     maps = cap.collect()                   # {block: (B, H, N, N)}

:func:`vitlens.analyses.attention_maps` is the one-batch convenience.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import CaptureError, NotApplicableError
from .hooks import HookSet

__all__ = ["AttentionCapture", "Reducer", "attention_blocks", "attention_probs",
           "resolve_blocks"]

# Attention modules that add position terms inside the logits (relative bias, RoPE, ...):
# recomputing softmax(q k^T) from qkv alone would be wrong for them.
_UNSUPPORTED_ATTRS = ("relative_position_bias_table", "rel_pos_h", "rope", "q_bias", "v_bias",
                      "pos_embed_q")

#: ``reduce(block, probs, v)`` turns one block's (B, H, N, N) probabilities and (B, H, N, d)
#: values into what the capture keeps for that block.
Reducer = Callable[[int, torch.Tensor, torch.Tensor], Any]


class _StopForward(Exception):  # noqa: N818 - control flow, never escapes this module
    """Raised by the last hook to skip the rest of the forward pass."""


# The child modules of timm's plain ``Attention``. An attention module with others (CaiT's
# talking-heads projections ``proj_l``/``proj_w``, the relative-position module ``rel_pos`` of
# ``vit_relpos_*``) mixes more into its probabilities than softmax(q k^T).
_PLAIN_CHILDREN = frozenset({"qkv", "q_norm", "k_norm", "attn_drop", "norm", "proj", "proj_drop"})


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why softmax((q * scale) k^T) from ``module.qkv`` would not be ``module``'s attention
    (``None``: it is; checked against timm's own probabilities in the tests)."""
    from timm.models.vision_transformer import Attention

    name = type(module).__name__
    attrs = [a for a in _UNSUPPORTED_ATTRS if hasattr(module, a)]
    if attrs:
        return f"{name} adds position terms inside its logits ({', '.join(attrs)})"
    if not (isinstance(getattr(module, "qkv", None), nn.Linear)
            and hasattr(module, "num_heads") and hasattr(module, "scale")):
        return f"{name} has no qkv Linear with num_heads and scale"
    extra = sorted({n for n, _ in module.named_children()} - _PLAIN_CHILDREN)
    if extra:
        return (f"{name} has modules that timm's plain Attention lacks ({', '.join(extra)}), "
                "so its probabilities are not softmax(q k^T)")
    if isinstance(module, Attention) and type(module).forward is not Attention.forward:
        return f"{name} overrides timm Attention's forward"
    return None


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The ``attn`` modules of ``model.blocks``, in order.

    Raises:
        NotApplicableError: the model has no ``blocks[i].attn`` of timm's plain ``Attention``
            kind (ResNets, MLP-Mixers, ConvNeXts; attention with relative position terms,
            RoPE or talking heads: BEiT, EVA, ``vit_relpos_*``, CaiT), naming the reason.
    """
    blocks = getattr(model, "blocks", None)
    attns = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    model_name = type(model).__name__
    if not attns or any(a is None for a in attns):
        msg = (f"{model_name} has no timm self-attention blocks (model.blocks[i].attn), so "
               "attention maps do not apply to it. Use a ViT/DeiT-style timm model; ResNets, "
               "MLP-Mixers and ConvNeXts have no attention.")
        raise NotApplicableError(msg)
    for i, a in enumerate(attns):
        reason = _unsupported_reason(a)
        if reason is not None:
            msg = (f"{model_name}'s blocks[{i}].attn cannot be recomputed from its qkv: "
                   f"{reason}. vitlens reads attention from timm's plain Attention only "
                   "(ViT, DeiT, DeiT III, DINOv2, CLIP and SigLIP ViTs, the zoo's ViTs).")
            raise NotApplicableError(msg)
    return attns


def resolve_blocks(spec: int | Iterable[int] | None, depth: int) -> list[int]:
    """Block indices from ``None`` (all), an int or a list (negative indices count from the end)."""
    if spec is None:
        return list(range(depth))
    items = [spec] if isinstance(spec, int) else list(spec)
    if not items:
        msg = "empty block selection; pass None (all blocks), an index or a list of indices"
        raise ValueError(msg)
    out: list[int] = []
    for b in items:
        if not isinstance(b, int) or not -depth <= b < depth:
            msg = f"block {b!r} is out of range for a model with {depth} blocks (0..{depth - 1})"
            raise IndexError(msg)
        out.append(b % depth)
    return sorted(set(out))


def attention_probs(attn: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                    is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute one timm ``Attention``'s probabilities and values from its input.

    Args:
        attn: The attention module.
        x: (B, N, C) its input.

    Returns:
        ``(probs, v)``: (B, H, N, N) rows summing to 1, and (B, H, N, d) the values.
    """
    b, n, _ = x.shape
    heads = int(attn.num_heads)
    qkv = attn.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    if is_causal:
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return logits.softmax(dim=-1), v


def _keep_probs(_block: int, probs: torch.Tensor, _v: torch.Tensor) -> torch.Tensor:
    return probs


class AttentionCapture(HookSet):
    """Capture the attention probabilities of chosen blocks during any forward pass.

    Hooks are registered on ``__enter__`` and removed in a ``finally`` on exit; they act
    only on forward passes in the thread that entered (other threads may use the same model
    meanwhile, as the explorers do). Each hook
    recomputes the block's probabilities from its input and hands them to ``reduce`` (by
    default the maps are kept as they are), so statistics can be streamed without storing
    (B, H, N, N) maps of every block.

    Args:
        model: A ViT-style timm model (``model.blocks[i].attn``).
        blocks: Block indices (``None``: all).
        reduce: ``reduce(block, probs, v)`` gives what to keep per block; ``probs`` is
            (B, H, N, N) and ``v`` (B, H, N, d).
        grad: Keep the autograd graph (otherwise the recomputation runs without it).
        stop_early: In :meth:`run`, skip the rest of the forward pass after the last
            requested block (no model outputs are needed).
    """

    def __init__(self, model: nn.Module, blocks: int | Iterable[int] | None = None, *,
                 reduce: Reducer | None = None, grad: bool = False,
                 stop_early: bool = False) -> None:
        super().__init__(model)
        self.attns = attention_blocks(model)
        self.blocks = resolve_blocks(blocks, len(self.attns))
        self.reduce = reduce or _keep_probs
        self.grad = grad
        self.stop_early = stop_early
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self._store: dict[int, Any] = {}
        self._running = False

    def _hook_for(self, block: int):
        last = block == self.blocks[-1]

        def pre_hook(module, args, kwargs):
            if not self._ours():
                return  # another thread's forward pass of the same model: not ours
            x = args[0] if args else kwargs["x"]
            mask, causal = kwargs.get("attn_mask"), bool(kwargs.get("is_causal", False))
            if len(args) > 1:
                mask = args[1]
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                probs, v = attention_probs(module, x, mask, causal)
                self._store[block] = self.reduce(block, probs, v)
            if last and self.stop_early and self._running:
                raise _StopForward
        return pre_hook

    def _register(self) -> None:
        for b in self.blocks:
            self._add_hook(self.attns[b], self._hook_for(b), pre=True, with_kwargs=True)

    def run(self, x: torch.Tensor) -> dict[int, Any]:
        """One forward pass (without grad unless ``grad=True``); returns ``{block: kept}``."""
        self._claim("run")  # the forward pass below is this capture's
        self._store = {}
        self._running = True
        try:
            with torch.set_grad_enabled(self.grad):
                self.model(x)
        except _StopForward:
            pass
        finally:
            self._running = False
        return self.collect()

    def collect(self) -> dict[int, Any]:
        """What the hooks kept since the last :meth:`run` or :meth:`collect`, by block.

        Raises:
            CaptureError: some requested blocks produced no map (the forward pass skipped
                their attention module), naming them.
        """
        missing = [b for b in self.blocks if b not in self._store]
        if missing:
            msg = (f"no attention map from blocks {missing} (of {self.blocks} requested): the "
                   "forward pass did not call their attn modules. Was the model called inside "
                   "the 'with' block, with a standard timm forward?")
            raise CaptureError(msg)
        out = {b: self._store[b] for b in self.blocks}
        self._store = {}
        return out
