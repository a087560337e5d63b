"""Dataset scale (Fig 12): per-block CKA against a reference model.

``data_scale``: ViTs trained on 3%, 10% and 30% of the data, each compared block by block
(block i with block i) with the same architecture trained on all of it. Low layers stay
similar even at small scale; high layers need more data. :class:`BlockCKAResult` is shared
with :func:`vitlens.analyses.finetune_similarity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.labels import model_label
from ..results.base import Result
from ..similarity.run import joint_cka

__all__ = ["BlockCKAResult", "DataScaleResult", "data_scale"]


def _check_same_layers(label: str, layers: list[str], ref_layers: list[str]) -> None:
    if layers != ref_layers:
        msg = (f"model {label!r} has layers {layers[:4]}... ({len(layers)}) but the reference has "
               f"{ref_layers[:4]}... ({len(ref_layers)}); per-block CKA pairs block i with block i, "
               "so the models must share an architecture")
        raise ValueError(msg)


class BlockCKAResult(Result):
    """Per-block CKA (R, B): row r compares block i of one model with block i of another.

    Attributes:
        cka: (R, B) diagonal CKA values, float64.
        rows: the row labels (models or domains); ``layers``: the B block names.
        full: (R, B, B) the full block-by-block CKA matrices, for reference.
    """

    array_names = ("cka",)
    row_title = "model"

    @property
    def cka(self) -> np.ndarray:
        return self.arrays["cka"]

    @property
    def rows(self) -> list[str]:
        return list(self.meta["rows"])

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    def value(self, row: str, layer: str) -> float:
        return float(self.cka[self.rows.index(row), self.layers.index(layer)])

    def __repr__(self) -> str:
        means = {r: f"{v:.3f}" for r, v in zip(self.rows, np.nanmean(self.cka, axis=1),
                                                strict=True)}
        return (f"{type(self).__name__}(vs {self.meta.get('reference')}: {len(self.layers)} "
                f"blocks; mean CKA {means})")

    def to_dataframe(self):
        """Long form: row label, layer, block, cka."""
        import pandas as pd

        R, B = self.cka.shape
        ri, bi = np.meshgrid(np.arange(R), np.arange(B), indexing="ij")
        blocks = self.meta.get("blocks") or [None] * len(self.layers)  # LayerPoint.block
        return pd.DataFrame({
            self.row_title: np.asarray(self.rows, dtype=object)[ri.ravel()],
            "layer": np.asarray(self.layers, dtype=object)[bi.ravel()],
            "block": [blocks[b] if blocks[b] is not None else b for b in bi.ravel()],
            "cka": self.cka.ravel(),
        })

    def chart(self, *, title: str | None = None, width: int = 320, height: int = 220):
        """CKA against block, one line per row (Fig 12 / Fig G.1)."""
        import altair as alt

        df = self.to_dataframe()
        return alt.Chart(df).mark_line(point=True).encode(
            x=alt.X("block:O", title="block", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("cka:Q", title=f"CKA with {self.meta.get('reference')}",
                    scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(f"{self.row_title}:N", sort=self.rows, title=self.row_title),
            tooltip=[f"{self.row_title}:N", "layer:N", alt.Tooltip("cka:Q", format=".4f")],
        ).properties(width=width, height=height, title=title or self.meta.get("title", ""))


class DataScaleResult(BlockCKAResult):
    """Per-block CKA of models trained on less data against the full-data model (Fig 12)."""

    row_title = "data"


def data_scale(models: Mapping[str, str | nn.Module], reference: str | nn.Module, images: Any, *,
               layers: Any = "blocks", token_mode: str = "flatten", batch_size: int = 64,
               device: str | torch.device | None = None, progress: bool = True,
               n_images: int | None = None) -> DataScaleResult:
    """Per-block CKA of each model against ``reference`` (block i vs block i), in one pass.

    Args:
        models: label -> model, e.g. ``{"3%": "vitlens/vit-cls-3pct", "10%": ...}``.
        reference: The model trained on all the data, e.g. ``"vitlens/vit-cls"``.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        layers: Layer selector, the same for every model (``"blocks"``).
        token_mode, batch_size, device, progress, n_images: As in :func:`vitlens.cka`.

    Raises:
        ValueError: a model's layers differ from the reference's.
    """
    if not models:
        msg = "models is empty: pass {label: model}, e.g. {'10%': 'vitlens/vit-cls-10pct'}"
        raise ValueError(msg)
    ref_key = "__reference__"
    sims = joint_cka({**models, ref_key: reference}, images, rows=dict.fromkeys(models, layers),
                     cols={ref_key: layers}, token_mode=token_mode, batch_size=batch_size,
                     device=device, progress=progress, n_images=n_images,
                     desc="CKA vs reference")
    return _block_result(DataScaleResult, {k: sims[(k, ref_key)] for k in models},
                         model_label(reference), token_mode,
                         title=f"Per-block CKA with {model_label(reference)} by training data")


def _block_result(cls: type[BlockCKAResult], sims: Mapping[str, Any], reference: str,
                  token_mode: str, *, title: str) -> BlockCKAResult:
    first = next(iter(sims.values()))
    ref_layers = first.layers_b
    for k, s in sims.items():
        _check_same_layers(k, s.layers_a, ref_layers)
    full = np.stack([s.matrix for s in sims.values()])  # (R, B, B)
    diag = np.diagonal(full, axis1=1, axis2=2).copy()
    meta = {"rows": list(sims), "layers": ref_layers, "reference": reference,
            "models": {k: s.meta["model_a"] for k, s in sims.items()}, "token_mode": token_mode,
            "n_images": {k: s.meta["n_images"] for k, s in sims.items()},
            "estimator": first.meta["estimator"], "title": title,
            "blocks": first.meta.get("blocks_b")}
    return cls({"cka": diag, "full": full}, meta)
