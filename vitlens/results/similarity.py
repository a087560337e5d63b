"""``SimilarityResult``: a labelled CKA matrix between the layers of two models."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..figures import inline_data
from .base import Result, chart_size


class SimilarityResult(Result):
    """A (L_a, L_b) similarity matrix with layer names on both axes.

    Attributes:
        matrix: (L_a, L_b) float64 CKA values, never clamped; NaN for constant layers.
        layers_a, layers_b: layer names of the rows and columns.
        meta: models, token mode, estimator, number of images, batch size, vitlens version.
        std: optional (L_a, L_b) spread over repeats on disjoint image subsets.
    """

    array_names = ("matrix",)

    def __init__(self, matrix: Any, layers_a: list[str], layers_b: list[str],
                 meta: dict[str, Any] | None = None, **extra: Any) -> None:
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (len(layers_a), len(layers_b)):
            msg = (f"matrix shape {matrix.shape} does not match {len(layers_a)} row layers and "
                   f"{len(layers_b)} column layers")
            raise ValueError(msg)
        meta = dict(meta or {})
        meta["layers_a"] = list(layers_a)
        meta["layers_b"] = list(layers_b)
        arrays = {"matrix": matrix}
        arrays.update({k: np.asarray(v) for k, v in extra.items() if v is not None})
        super().__init__(arrays, meta)

    @property
    def matrix(self) -> np.ndarray:
        return self.arrays["matrix"]

    @property
    def layers_a(self) -> list[str]:
        return list(self.meta["layers_a"])

    @property
    def layers_b(self) -> list[str]:
        return list(self.meta["layers_b"])

    @property
    def std(self) -> np.ndarray | None:
        return self.arrays.get("std")

    def __repr__(self) -> str:
        a = self.meta.get("model_a", "?")
        b = self.meta.get("model_b", a)
        return (f"SimilarityResult({a} x {b}: {len(self.layers_a)}x{len(self.layers_b)} layers, "
                f"token_mode={self.meta.get('token_mode')!r}, n_images={self.meta.get('n_images')})")

    def value(self, layer_a: str, layer_b: str) -> float:
        """The CKA of one pair of layers, by name."""
        try:
            i, j = self.layers_a.index(layer_a), self.layers_b.index(layer_b)
        except ValueError:
            msg = f"no such layer pair ({layer_a!r}, {layer_b!r}) in this result"
            raise KeyError(msg) from None
        return float(self.matrix[i, j])

    def to_dataframe(self):
        """Long form: one row per layer pair (layer_a, layer_b, index_a, index_b, cka[, std])."""
        import pandas as pd

        la, lb = self.layers_a, self.layers_b
        ia, ib = np.meshgrid(np.arange(len(la)), np.arange(len(lb)), indexing="ij")
        df = pd.DataFrame({
            "layer_a": np.asarray(la, dtype=object)[ia.ravel()],
            "layer_b": np.asarray(lb, dtype=object)[ib.ravel()],
            "index_a": ia.ravel(),
            "index_b": ib.ravel(),
            "cka": self.matrix.ravel(),
        })
        if self.std is not None:
            df["std"] = self.std.ravel()
        return df

    def chart(self, *, title: str | None = None, width: int | None = None,
              height: int | None = None, scheme: str = "magma", size: int | None = None):
        """An Altair heatmap with layer names on the axes and a value tooltip.

        Rows (model A) run bottom to top, as in the paper's figures.

        Args:
            title: The chart's title (default: the two models).
            width, height: In pixels (default 360 each; ``size=`` sets both).
            scheme: A Vega colour scheme.
        """
        width, height = chart_size(width, height, size, 360)
        import altair as alt

        df = self.to_dataframe()
        a = self.meta.get("model_a", "model A")
        b = self.meta.get("model_b", a)
        tooltip = ["layer_a:N", "layer_b:N", alt.Tooltip("cka:Q", format=".4f")]
        if "std" in df:
            tooltip.append(alt.Tooltip("std:Q", format=".4f"))
        many = max(len(self.layers_a), len(self.layers_b)) > 40
        axis = alt.Axis(labels=not many, ticks=not many, labelFontSize=8)
        chart = alt.Chart(inline_data(df)).mark_rect().encode(
            x=alt.X("layer_b:N", sort=self.layers_b, title=f"{b} layers", axis=axis),
            y=alt.Y("layer_a:N", sort=list(reversed(self.layers_a)), title=f"{a} layers",
                    axis=axis),
            color=alt.Color("cka:Q", title="CKA", scale=alt.Scale(scheme=scheme)),
            tooltip=tooltip,
        ).properties(width=width, height=height, title=title or f"CKA: {a} vs {b}")
        return chart
