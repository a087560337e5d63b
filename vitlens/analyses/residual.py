"""Residual stream vs branch (PAPER.md Fig 7, E.1, E.2).

For each residual sub-block ``z + f(z)`` (ViT: attention and MLP of every block; ResNet:
every unit) and each token, this measures

- ``ratio`` = ‖z‖ / ‖f(z)‖, the skip path's input norm over the branch output norm
  (``inf`` where the branch output is exactly zero);
- ``cos_branch`` = cos(z, f(z)), the cosine between the stream and the branch (Fig E.2);
- ``cos_stream`` = cos(z, z + f(z)), the cosine between the stream before and after the
  add (1 when the branch contributes nothing).

A "token" is a ViT/Mixer token (norms over channels), or, for a ResNet, one spatial position
of the feature map (norms over channels at that position, as for ResNet "tokens" in the
paper's localization analysis). Per-token values are averaged over images; prefix (CLS)
tokens and spatial tokens are reported separately. Cosines are NaN where a norm is zero, and
every statistic is NaN for a block without a skip path (the zoo's ``NoSkipBlock``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import Capture
from ..capture.residual import SubBlock, canonical, residual_catalog
from ..results.base import Result
from ._run import SumState, check_same, image_run, weighted_merge

GROUPS = ("prefix", "spatial")
STATS = ("ratio", "cos_branch", "cos_stream")


def token_stats(z: torch.Tensor, f: torch.Tensor, dim: int = -1) -> dict[str, torch.Tensor]:
    """Per-token ratio and cosines in float64, reducing over the channel axis ``dim``.

    Args:
        z: the stream (skip path input), e.g. (B, N, C) or (B, C, H, W) with ``dim=1``.
        f: the branch output f(z), same shape.

    Returns:
        ``{"ratio", "cos_branch", "cos_stream"}``, each of z's shape without ``dim``.
    """
    z, f = z.detach().to(torch.float64), f.detach().to(torch.float64)
    s = z + f
    nz, nf, ns = z.norm(dim=dim), f.norm(dim=dim), s.norm(dim=dim)
    ratio = nz / nf  # inf where f == 0 (and nz > 0)
    cos_branch = (z * f).sum(dim=dim) / (nz * nf)
    cos_stream = (z * s).sum(dim=dim) / (nz * ns)
    return {"ratio": ratio, "cos_branch": cos_branch, "cos_stream": cos_stream}


class ResidualResult(Result):
    """Stream/branch norms ratio and cosines per residual sub-block.

    Arrays:
        ``ratio``, ``cos_branch``, ``cos_stream``: (K, 2) float64 means over images and the
        tokens of each group (columns: prefix, spatial; NaN where a model has no prefix
        tokens). ``count``: (K, 2) how many (image, token) pairs each mean covers.
        ``ratio_tokens``, ``cos_branch_tokens``, ``cos_stream_tokens``: (K, N) per-token means
        over images (token models only; token 0 is CLS when there is one).
    Meta: ``model``, ``family``, ``sub_blocks`` (names), ``kinds``, ``blocks``, ``skip``,
    ``num_prefix_tokens``, ``n_images``.
    """

    array_names = ("ratio", "cos_branch", "cos_stream", "count")

    @property
    def sub_blocks(self) -> list[str]:
        return list(self.meta["sub_blocks"])

    @property
    def ratio(self) -> np.ndarray:
        return self.arrays["ratio"]

    @property
    def cos_branch(self) -> np.ndarray:
        return self.arrays["cos_branch"]

    @property
    def cos_stream(self) -> np.ndarray:
        return self.arrays["cos_stream"]

    def __repr__(self) -> str:
        return (f"ResidualResult({self.meta.get('model')}: {len(self.sub_blocks)} sub-blocks, "
                f"n_images={self.meta.get('n_images')})")

    def value(self, sub_block: str, stat: str = "ratio", group: str = "spatial") -> float:
        """One statistic of one sub-block by name, e.g. ``value("blocks.0.attn", "ratio", "prefix")``."""
        if stat not in STATS or group not in GROUPS:
            msg = f"stat must be one of {STATS} and group one of {GROUPS}; got {stat!r}, {group!r}"
            raise ValueError(msg)
        try:
            k = self.sub_blocks.index(sub_block)
        except ValueError:
            msg = f"no sub-block {sub_block!r}; this result has {self.sub_blocks}"
            raise KeyError(msg) from None
        return float(self.arrays[stat][k, GROUPS.index(group)])

    def merge(self, other: ResidualResult) -> ResidualResult:
        """The result over the union of both image sets (exact: weighted by counts)."""
        check_same(self.meta, other.meta, ("model", "sub_blocks", "num_prefix_tokens"),
                   "residual")
        ca, cb = self.arrays["count"], other.arrays["count"]
        arrays = {s: weighted_merge(self.arrays[s], ca, other.arrays[s], cb) for s in STATS}
        arrays["count"] = ca + cb
        na, nb = self.meta["n_images"], other.meta["n_images"]
        for s in STATS:
            key = f"{s}_tokens"
            if key in self.arrays and key in other.arrays:
                arrays[key] = weighted_merge(self.arrays[key], na, other.arrays[key], nb)
        return ResidualResult(arrays, dict(self.meta, n_images=na + nb))

    def to_dataframe(self):
        """Long form: sub_block, kind, block, group, ratio, cos_branch, cos_stream."""
        import pandas as pd

        rows = []
        for k, name in enumerate(self.sub_blocks):
            for g, group in enumerate(GROUPS):
                if self.arrays["count"][k, g] == 0:
                    continue
                rows.append({"sub_block": name, "kind": self.meta["kinds"][k],
                             "block": self.meta["blocks"][k], "group": group,
                             **{s: float(self.arrays[s][k, g]) for s in STATS}})
        return pd.DataFrame(rows, columns=["sub_block", "kind", "block", "group", *STATS])

    def tokens_dataframe(self):
        """Per token (token models only): sub_block, kind, block, token, ratio, cosines."""
        import pandas as pd

        if "ratio_tokens" not in self.arrays:
            msg = "per-token values exist only for token models (ViT, Mixer), not for CNNs"
            raise ValueError(msg)
        k, n = self.arrays["ratio_tokens"].shape
        kk, tt = np.meshgrid(np.arange(k), np.arange(n), indexing="ij")
        df = pd.DataFrame({"sub_block": np.asarray(self.sub_blocks, dtype=object)[kk.ravel()],
                           "kind": np.asarray(self.meta["kinds"], dtype=object)[kk.ravel()],
                           "block": np.asarray(self.meta["blocks"])[kk.ravel()],
                           "token": tt.ravel()})
        for s in STATS:
            df[s] = self.arrays[f"{s}_tokens"].ravel()
        return df

    def chart(self, *, kind: str = "ratio", title: str | None = None, width: int = 360,
              height: int = 220):
        """Paper-style charts.

        Args:
            kind: ``"ratio"`` (Fig 7/E.1: ‖z‖/‖f(z)‖ per block on a log axis, one line per
                sub-block kind and token group), ``"cosine"`` (Fig E.2: cos(z, f(z))) or
                ``"tokens"`` (a heatmap of the ratio per token and sub-block).
        """
        import altair as alt

        model = self.meta.get("model", "model")
        if kind == "tokens":
            df = self.tokens_dataframe()
            df["log10_ratio"] = np.log10(df["ratio"].replace(0, np.nan))
            return alt.Chart(df).mark_rect().encode(
                x=alt.X("token:O", title="Token (0 = CLS)" if self.meta["num_prefix_tokens"]
                        else "Token", axis=alt.Axis(labels=False, ticks=False)),
                y=alt.Y("sub_block:N", sort=self.sub_blocks, title="Sub-block"),
                color=alt.Color("log10_ratio:Q", title="log10 ‖z‖/‖f(z)‖",
                                scale=alt.Scale(scheme="viridis")),
                tooltip=["sub_block:N", "token:O", alt.Tooltip("ratio:Q", format=".3g")],
            ).properties(width=width, height=height, title=title or f"Ratio per token: {model}")
        if kind not in ("ratio", "cosine"):
            msg = f"kind={kind!r}; choose 'ratio', 'cosine' or 'tokens'"
            raise ValueError(msg)
        df = self.to_dataframe()
        df["series"] = df["kind"] + " · " + df["group"].map({"prefix": "CLS", "spatial": "spatial"})
        field = "ratio" if kind == "ratio" else "cos_branch"
        ytitle = "‖z‖ / ‖f(z)‖" if kind == "ratio" else "cos(z, f(z))"
        scale = alt.Scale(type="log") if kind == "ratio" else alt.Scale(domain=[-1, 1])
        base = alt.Chart(df).encode(
            x=alt.X("block:O", title="Block"),
            y=alt.Y(f"{field}:Q", title=ytitle, scale=scale),
            color=alt.Color("kind:N", title="Sub-block"),
            strokeDash=alt.StrokeDash("group:N", title="Tokens"),
            tooltip=["sub_block:N", "group:N", alt.Tooltip(f"{field}:Q", format=".3g")])
        return (base.mark_line() + base.mark_point(filled=True)).properties(
            width=width, height=height,
            title=title or (f"Skip path vs branch: {model}" if kind == "ratio"
                            else f"Cosine of stream and branch: {model}"))


def residual_ratio(model: str | nn.Module, images: Any, *, n_images: int | None = None,
                   batch_size: int = 32, device: Any = None,
                   progress: bool = True) -> ResidualResult:
    """‖z‖/‖f(z)‖ and cosines of every residual sub-block, streamed over images.

    Args:
        model: A ViT/DeiT, MLP-Mixer, ResNet or ResNetV2 timm model (a module or a name).
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        n_images: Use the first ``n_images`` images (``None``: all).
        batch_size: Images per forward pass.
        device: ``"cpu"``, ``"cuda"``...; by default CUDA when available.
        progress: Show a progress bar.

    Returns:
        A :class:`ResidualResult` (see the module docstring for the definitions).

    Raises:
        NotApplicableError: the model has no known residual structure (e.g. ConvNeXt).
    """
    if isinstance(model, nn.Module):
        residual_catalog(model)  # fail before reading any image
    run = image_run([model], images, n_images=n_images, batch_size=batch_size, device=device,
                    what="the residual ratio")
    catalog, subs = residual_catalog(run.model)
    names = [n for s in subs for n in (s.stream, s.branch)]
    npt = int(getattr(run.model, "num_prefix_tokens", 0)) if catalog.family == "vit" else 0
    state = SumState()
    with Capture(run.model, names, token_mode=None, catalog=catalog) as cap:
        for idx, (x,) in run.iterate(progress, f"residual {run.labels[0]}"):
            feats = cap.run(x)
            for k, sub in enumerate(subs):
                _accumulate(state, k, sub, canonical(feats[sub.stream], catalog[sub.stream]),
                            canonical(feats[sub.branch], catalog[sub.branch]), npt)
            state.add("images", len(idx))
    state.all_reduce()  # under torchrun: join the ranks' sums
    return _result(state, subs, npt, run, catalog.family)


def _accumulate(state: SumState, k: int, sub: SubBlock, z: torch.Tensor, f: torch.Tensor,
                npt: int) -> None:
    if z.shape != f.shape:
        msg = f"stream {tuple(z.shape)} and branch {tuple(f.shape)} of {sub.name} differ in shape"
        raise ValueError(msg)
    if sub.layout == "nchw":
        stats = token_stats(z, f, dim=1)  # (B, H, W)
        for s, v in stats.items():
            state.add(f"{s}.{k}.spatial", v.sum())
        state.add(f"count.{k}.spatial", stats["ratio"].numel())
        return
    stats = token_stats(z, f, dim=-1)  # (B, N)
    for s, v in stats.items():
        state.add(f"{s}.{k}.tokens", v.sum(dim=0))


def _result(state: SumState, subs: list[SubBlock], npt: int, run, family: str) -> ResidualResult:
    k_total, n_img = len(subs), float(state.numpy("images"))
    arrays = {s: np.full((k_total, 2), np.nan) for s in STATS}
    count = np.zeros((k_total, 2))
    tokens = "ratio.0.tokens" in state
    if tokens:
        for s in STATS:
            per_token = np.stack([state.numpy(f"{s}.{k}.tokens") for k in range(k_total)]) / n_img
            arrays[f"{s}_tokens"] = per_token
            if npt:
                arrays[s][:, 0] = per_token[:, :npt].mean(axis=1)
            arrays[s][:, 1] = per_token[:, npt:].mean(axis=1)
        n_tok = arrays["ratio_tokens"].shape[1]
        count[:, 0], count[:, 1] = n_img * npt, n_img * (n_tok - npt)
    else:
        for k in range(k_total):
            c = float(state.numpy(f"count.{k}.spatial"))
            count[k, 1] = c
            for s in STATS:
                arrays[s][k, 1] = float(state.numpy(f"{s}.{k}.spatial")) / c
    for k, sub in enumerate(subs):  # no skip path: nothing to compare the branch with
        if not sub.skip:
            for key in [s for s in arrays if s.split("_tokens")[0] in STATS]:
                arrays[key][k] = np.nan
    arrays["count"] = count
    meta = {"model": run.labels[0], "family": family, "sub_blocks": [s.name for s in subs],
            "kinds": [s.kind for s in subs], "blocks": [s.block for s in subs],
            "skip": [s.skip for s in subs], "num_prefix_tokens": npt, "n_images": run.n,
            "images": getattr(run.images, "name", "images"),
            "token": "ViT/Mixer token (norm over channels)" if tokens
            else "spatial position of the feature map (norm over channels)"}
    return ResidualResult(arrays, meta)
