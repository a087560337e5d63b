"""Attention probabilities of timm ViT-style models, recomputed in a forward pre-hook.

timm computes attention with the fused ``scaled_dot_product_attention``, so hooks on
``attn_drop`` or the softmax record nothing. :class:`AttentionCapture` registers a forward
*pre*-hook on every ``blocks[i].attn`` and recomputes the probabilities from the module's own
``qkv``, ``q_norm``, ``k_norm`` and ``scale`` (exactly timm's unfused path:
``softmax((q * scale) @ k^T)``), with the position terms that timm's attention families add
inside the logits, read from the module and its call: BEiT's relative position bias (its
own and the model's shared one) and q/v biases, ``vit_relpos_*``'s relative position module,
EVA's rotary embedding (RoPE). The model's own forward is untouched, so its outputs do not
change. Attention that is more than a softmax of one logit matrix per head (CaiT's talking
heads) is refused by name.

>>> with AttentionCapture(model) as cap:       # keeps the model's outputs
...     logits = model(x)
...     maps = cap.collect()                   # {block: (B, H, N, N)}

:func:`vitlens.analyses.attention_maps` is the one-batch convenience.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
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


@functools.cache
def _timm_families() -> tuple[type, ...]:
    """timm's attention classes whose logits :func:`attention_probs` reproduces, position
    terms included (a timm without one of them simply lacks it)."""
    import importlib

    found = []
    for mod, cls in (("timm.models.vision_transformer", "Attention"),
                     ("timm.models.beit", "Attention"),
                     ("timm.models.vision_transformer_relpos", "RelPosAttention"),
                     ("timm.models.eva", "EvaAttention")):
        try:
            found.append(getattr(importlib.import_module(mod), cls))
        except (ImportError, AttributeError):  # pragma: no cover - another timm release
            continue
    return tuple(found)


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why :func:`attention_probs` would not give ``module``'s attention (``None``: it does;
    checked against timm's own probabilities in the tests)."""
    name = type(module).__name__
    for family in _timm_families():
        if isinstance(module, family):  # one of timm's own: its forward is what we mirror
            if type(module).forward is not family.forward:
                return f"{name} overrides timm {family.__name__}'s forward"
            return None
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
    return None


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The ``attn`` modules of ``model.blocks``, in order.

    Raises:
        NotApplicableError: the model has no ``blocks[i].attn`` whose attention vitlens can
            recompute (ResNets, MLP-Mixers, ConvNeXts; CaiT's talking heads; an attention
            module of unknown kind with position terms), naming the reason.
    """
    blocks = getattr(model, "blocks", None)
    attns = [getattr(b, "attn", None) for b in blocks] if blocks is not None else []
    model_name = type(model).__name__
    if not attns or any(a is None for a in attns):
        msg = (f"{model_name} has no timm self-attention blocks (model.blocks[i].attn), so "
               "vitlens reads no attention maps from it. Use a ViT-style timm model (ViT, "
               "DeiT, BEiT, EVA, ...); ResNets, MLP-Mixers and ConvNeXts have no attention, "
               "and Swin's windowed attention (model.layers[i].blocks) is not read.")
        raise NotApplicableError(msg)
    for i, a in enumerate(attns):
        reason = _unsupported_reason(a)
        if reason is not None:
            msg = (f"{model_name}'s blocks[{i}].attn cannot be recomputed from its qkv: "
                   f"{reason}. vitlens reads attention from timm's Attention (ViT, DeiT, "
                   "DeiT III, DINOv2, CLIP and SigLIP ViTs, the zoo's ViTs), BEiT, "
                   "vit_relpos and EVA attention.")
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
                    is_causal: bool = False, *, rope: torch.Tensor | None = None,
                    shared_rel_pos_bias: torch.Tensor | None = None,
                    shared_rel_pos: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Recompute one timm attention module's probabilities and values from its input.

    Args:
        attn: The attention module (timm's ``Attention``, BEiT's, ``RelPosAttention`` or
            ``EvaAttention``).
        x: (B, N, C) its input.
        attn_mask, is_causal, rope, shared_rel_pos_bias, shared_rel_pos: What its block
            passed to it (:class:`AttentionCapture` forwards them from the call).

    Returns:
        ``(probs, v)``: (B, H, N, N) rows summing to 1, and (B, H, N, d) the values.
    """
    q, k, v = _project(attn, x)
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is not None:
        q = q_norm(q)
    if k_norm is not None:
        k = k_norm(k)
    if rope is not None:  # EVA: rotate the spatial tokens' queries and keys
        from timm.layers import apply_rot_embed_cat

        npt, half = int(getattr(attn, "num_prefix_tokens", 0)), bool(getattr(attn, "rotate_half",
                                                                               False))
        q, k = (torch.cat([t[:, :, :npt], apply_rot_embed_cat(t[:, :, npt:], rope, half=half)],
                          dim=2).type_as(v) for t in (q, k))
    logits = (q * attn.scale) @ k.transpose(-2, -1)
    bias = _position_bias(attn, shared_rel_pos_bias, shared_rel_pos)
    if bias is not None:
        logits = logits + bias
    n = x.shape[1]
    if is_causal:
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    return logits.softmax(dim=-1), v


def _project(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v), each (B, H, N, d), as the module projects them (BEiT and EVA add their q/v
    biases to a bias-free ``qkv``; some EVAs project q, k and v separately)."""
    b, n, _ = x.shape
    heads = int(attn.num_heads)
    if getattr(attn, "qkv", None) is None:
        return tuple(getattr(attn, f"{t}_proj")(x).reshape(b, n, heads, -1).transpose(1, 2)
                     for t in "qkv")
    if getattr(attn, "q_bias", None) is None:
        qkv = attn.qkv(x)
    else:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = (attn.qkv(x) + bias if getattr(attn, "qkv_bias_separate", False)
               else F.linear(x, weight=attn.qkv.weight, bias=bias))
    return tuple(qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0))


def _position_bias(attn: nn.Module, shared_rel_pos_bias: torch.Tensor | None,
                   shared_rel_pos: torch.Tensor | None) -> torch.Tensor | None:
    """The relative position term added to the logits, as timm's fused path adds it."""
    if getattr(attn, "relative_position_bias_table", None) is not None:  # BEiT's own
        bias = attn._get_rel_pos_bias()  # noqa: SLF001 - timm's, so it stays timm's maths
        return bias if shared_rel_pos_bias is None else bias + shared_rel_pos_bias
    if getattr(attn, "rel_pos", None) is not None:  # vit_relpos: the module's own bias
        return attn.rel_pos.get_bias()
    return shared_rel_pos_bias if shared_rel_pos_bias is not None else shared_rel_pos


#: The call arguments of a timm attention module that :func:`attention_probs` takes.
_CALL_ARGS = ("attn_mask", "is_causal", "rope", "shared_rel_pos_bias", "shared_rel_pos")


def _call_arguments(module: nn.Module, signature: inspect.Signature, args: tuple,
                    kwargs: dict) -> dict[str, Any]:
    """The module's call, by parameter name (``x`` and those of :data:`_CALL_ARGS`);
    ``signature`` is its forward's."""
    bound = signature.bind(*args, **kwargs).arguments
    extra = sorted(set(bound) - {"x", *_CALL_ARGS})
    if extra:
        msg = (f"{type(module).__name__} was called with {', '.join(extra)}, which vitlens "
               "does not know how to put into the attention it recomputes")
        raise CaptureError(msg)
    return bound


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
        signature = inspect.signature(self.attns[block].forward)  # once, not per batch

        def pre_hook(module, args, kwargs):
            if not self._ours():
                return  # another thread's forward pass of the same model: not ours
            call = _call_arguments(module, signature, args, kwargs)
            x = call.pop("x")
            mask, causal = call.pop("attn_mask", None), bool(call.pop("is_causal", False))
            with torch.set_grad_enabled(self.grad and torch.is_grad_enabled()):
                probs, v = attention_probs(module, x, mask, causal, **call)
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
