"""Float64 NumPy references for the widget tests (no vitlens code): HSIC, CKA, attention.

This module holds helpers only; pytest collects no tests from it.
"""

from __future__ import annotations

import threading

import numpy as np
import torch


def hsic1(K: np.ndarray, L: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012), written out as in PAPER.md."""
    n = K.shape[0]
    K, L = K.copy(), L.copy()
    np.fill_diagonal(K, 0.0)
    np.fill_diagonal(L, 0.0)
    one = np.ones(n)
    term = np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one @ K @ L @ one)
    return float(term / (n * (n - 3)))


def minibatch_cka(feats_a: list[np.ndarray], feats_b: list[np.ndarray],
                  batches: list[range]) -> np.ndarray:
    """(L_a, L_b) minibatch CKA: batch-size-weighted means of HSIC terms, then the ratio.

    Args:
        feats_a, feats_b: per layer, (n, d) float features of all n examples.
        batches: the index ranges of the batches.
    """
    out = np.zeros((len(feats_a), len(feats_b)))
    grams_a = [[(f[b] @ f[b].T).astype(np.float64) for b in batches] for f in feats_a]
    grams_b = [[(f[b] @ f[b].T).astype(np.float64) for b in batches] for f in feats_b]
    w = np.array([len(b) for b in batches], dtype=np.float64)
    for i, ga in enumerate(grams_a):
        kk = sum(wi * hsic1(K, K) for wi, K in zip(w, ga, strict=True)) / w.sum()
        for j, gb in enumerate(grams_b):
            ll = sum(wi * hsic1(L, L) for wi, L in zip(w, gb, strict=True)) / w.sum()
            kl = sum(wi * hsic1(K, L) for wi, K, L in zip(w, ga, gb, strict=True)) / w.sum()
            out[i, j] = kl / np.sqrt(kk * ll)
    return out


def capture_outputs(model: torch.nn.Module, x: torch.Tensor, modules: list[str],
                    pre: bool = False) -> list[np.ndarray]:
    """Outputs (or first inputs, ``pre=True``) of named submodules, as float64 arrays.

    Only this thread's forward pass is recorded: a widget of an earlier test may still be
    computing on the same model in its background thread.
    """
    store: dict[str, torch.Tensor] = {}
    handles = []
    me = threading.get_ident()

    def keep(name: str, t: torch.Tensor) -> None:
        if threading.get_ident() == me:
            store[name] = t.detach().clone()

    for name in modules:
        mod = model.get_submodule(name)
        if pre:
            handles.append(mod.register_forward_pre_hook(
                lambda _m, args, name=name: keep(name, args[0])))
        else:
            handles.append(mod.register_forward_hook(
                lambda _m, _a, out, name=name: keep(name, out)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [store[name].double().numpy() for name in modules]


def attention_probs(model: torch.nn.Module, x: torch.Tensor, block: int) -> np.ndarray:
    """(B, H, N, N) softmax(q k^T / sqrt(d)) of one timm ViT block, from its qkv weights."""
    (inp,) = capture_outputs(model, x, [f"blocks.{block}.attn"], pre=True)
    attn = model.blocks[block].attn
    w = attn.qkv.weight.detach().double().numpy()
    b = attn.qkv.bias.detach().double().numpy()
    B, N, C = inp.shape
    H = attn.num_heads
    qkv = (inp @ w.T + b).reshape(B, N, 3, H, C // H).transpose(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(C // H)
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)


def rollout(maps: list[np.ndarray]) -> np.ndarray:
    """Attention rollout of (H, N, N) maps, lowest first: prod of rownorm(mean_h A + I)."""
    n = maps[0].shape[-1]
    r = np.eye(n)
    for a in maps:
        a = a.mean(axis=0) + np.eye(n)
        a = a / a.sum(axis=-1, keepdims=True)
        r = a @ r
    return r


def mean_distance(a: np.ndarray, grid: int, patch: int, npt: int) -> np.ndarray:
    """(H,) mean over spatial queries of sum_j a_ij * |p_i - p_j| (prefix tokens dropped)."""
    pos = np.array([(i // grid, i % grid) for i in range(grid * grid)], dtype=np.float64) * patch
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    s = a[:, npt:, npt:]
    return (s * d).sum(-1).mean(-1)
