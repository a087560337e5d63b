"""``ProbeResult``: few-shot linear-probe accuracy per layer and aggregation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..figures import inline_data
from ..results.base import Result, chart_size

_LABELS = {"cls": "CLS token", "token": "single token", "mean": "mean of tokens",
           "every": "every token (average)"}


class ProbeResult(Result):
    """Linear-probe accuracy of each layer for each aggregation, over several seeds.

    Attributes:
        accuracy: (L, A) test accuracy averaged over seeds. For ``"every"`` it is the
            accuracy averaged over token positions.
        accuracy_std: (L, A) standard deviation over seeds (ddof=0).
        per_seed: (S, L, A) accuracy of each seed.
        token_maps: (S, L, gh, gw) per-token accuracy for ``"every"`` (NaN-padded where a
            layer's grid is smaller than the largest), if requested.
        layers, aggregations: the row and column labels.
    """

    array_names = ("accuracy", "accuracy_std", "per_seed")

    @classmethod
    def build(cls, hits: dict[tuple[str, str], Any], n_test: int, train: Any,
              classes: np.ndarray, *, shots: int, seeds: Sequence[int], l2: float | str,
              fit_intercept: bool, n_train: int,
              l2_chosen: dict[str, list[float]] | None = None) -> ProbeResult:
        layers, aggs = list(train.layers), list(train.aggregations)
        S = len(seeds)
        per_seed = np.full((S, len(layers), len(aggs)), np.nan)
        arrays: dict[str, np.ndarray] = {}
        grids = {k: (list(v) if v is not None else None) for k, v in train.grids.items()}
        if "every" in aggs:
            gh = max(g[0] for g in grids.values())
            gw = max(g[1] for g in grids.values())
            maps = np.full((S, len(layers), gh, gw), np.nan)
        for i, layer in enumerate(layers):
            for j, a in enumerate(aggs):
                acc = np.asarray(hits[(layer, a)], dtype=np.float64) / n_test
                if a == "every":
                    maps[:, i, :acc.shape[1], :acc.shape[2]] = acc
                    acc = acc.reshape(S, -1).mean(axis=1)
                per_seed[:, i, j] = acc
        arrays.update(accuracy=per_seed.mean(axis=0), accuracy_std=per_seed.std(axis=0),
                      per_seed=per_seed)
        if "every" in aggs:
            arrays["token_maps"] = maps
        meta = {
            "model": train.model, "layers": layers, "aggregations": aggs, "shots": int(shots),
            "seeds": [int(s) for s in seeds], "l2": l2 if isinstance(l2, str) else float(l2),
            "l2_chosen": dict(l2_chosen or {}), "fit_intercept": fit_intercept,
            "classes": [int(c) for c in classes], "chance": 1.0 / len(classes),
            "n_train": int(n_train), "n_test": int(n_test), "grids": grids,
            "tokens": {k: (list(v) if v is not None else None) for k, v in train.tokens.items()},
            "method": "closed-form ridge regression onto one-vs-all targets in {-1, 1}, float64",
        }
        return cls(arrays, meta)

    @property
    def accuracy(self) -> np.ndarray:
        return self.arrays["accuracy"]

    @property
    def accuracy_std(self) -> np.ndarray:
        return self.arrays["accuracy_std"]

    @property
    def per_seed(self) -> np.ndarray:
        return self.arrays["per_seed"]

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    @property
    def aggregations(self) -> list[str]:
        return list(self.meta["aggregations"])

    def value(self, layer: str, aggregation: str) -> float:
        """Mean accuracy of one layer and aggregation."""
        return float(self.accuracy[self.layers.index(layer), self.aggregations.index(aggregation)])

    def token_map(self, layer: str, *, std: bool = False) -> np.ndarray:
        """(gh, gw) per-token accuracy of ``layer`` (mean, or std, over seeds)."""
        if "token_maps" not in self.arrays:
            msg = "no token maps: run the probe with aggregations including 'every'"
            raise KeyError(msg)
        gh, gw = self.meta["grids"][layer]
        m = self.arrays["token_maps"][:, self.layers.index(layer), :gh, :gw]
        return m.std(axis=0) if std else m.mean(axis=0)

    def __repr__(self) -> str:
        best = {a: f"{np.nanmax(self.accuracy[:, j]):.3f}" for j, a in enumerate(self.aggregations)}
        return (f"ProbeResult({self.meta.get('model')}: {len(self.layers)} layers, "
                f"{self.meta['shots']}-shot, {len(self.meta['seeds'])} seeds, best {best})")

    def to_dataframe(self):
        """Long form: layer, layer_index, aggregation, accuracy, std."""
        import pandas as pd

        L, A = self.accuracy.shape
        li, ai = np.meshgrid(np.arange(L), np.arange(A), indexing="ij")
        return pd.DataFrame({
            "layer": np.asarray(self.layers, dtype=object)[li.ravel()],
            "layer_index": li.ravel(),
            "aggregation": np.asarray(self.aggregations, dtype=object)[ai.ravel()],
            "accuracy": self.accuracy.ravel(),
            "std": self.accuracy_std.ravel(),
        })

    def token_map_dataframe(self):
        """Long form of the "every" maps: layer, row, col, accuracy, std."""
        import pandas as pd

        rows = []
        for layer in self.layers:
            mean, sd = self.token_map(layer), self.token_map(layer, std=True)
            for (r, c), v in np.ndenumerate(mean):
                rows.append({"layer": layer, "row": r, "col": c, "accuracy": v, "std": sd[r, c]})
        return pd.DataFrame(rows)

    def chart(self, *, title: str | None = None, width: int = 360, height: int = 240):
        """Accuracy against layer, one line per aggregation with a +-std band (Fig 11)."""
        import altair as alt

        df = self.to_dataframe()
        df["how"] = [_LABELS.get(a, a) for a in df.aggregation]
        df["lo"], df["hi"] = df.accuracy - df["std"], df.accuracy + df["std"]
        x = alt.X("layer:N", sort=self.layers, title="layer",
                  axis=alt.Axis(labelAngle=-45, labelFontSize=8))
        color = alt.Color("how:N", title="aggregation")
        base = alt.Chart(inline_data(df)).encode(x=x, color=color)
        band = base.mark_area(opacity=0.2).encode(y="lo:Q", y2="hi:Q")
        line = base.mark_line(point=True).encode(
            y=alt.Y("accuracy:Q", title=f"{self.meta['shots']}-shot linear probe accuracy",
                    scale=alt.Scale(domain=[0, 1])),
            tooltip=["layer:N", "how:N", alt.Tooltip("accuracy:Q", format=".3f"),
                     alt.Tooltip("std:Q", format=".3f")])
        chance = alt.Chart({"values": [{"chance": self.meta["chance"]}]}).mark_rule(
            strokeDash=[4, 4], color="gray").encode(y="chance:Q")
        return alt.layer(band, line, chance).properties(
            width=width, height=height, title=title or f"Linear probes: {self.meta.get('model')}")

    def map_chart(self, *, columns: int = 4, width: int | None = None,
                  height: int | None = None, scheme: str = "viridis", size: int | None = None):
        """Per-token probe accuracy over the grid, one panel per layer (Fig D.4);
        ``width``/``height`` are each panel's, 100 by default (``size=`` sets both)."""
        import altair as alt

        width, height = chart_size(width, height, size, 100)

        df = self.token_map_dataframe()
        heat = alt.Chart(inline_data(df)).mark_rect().encode(
            x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None),
            color=alt.Color("accuracy:Q", scale=alt.Scale(scheme=scheme, domain=[0, 1])),
            tooltip=["layer:N", "row:O", "col:O", alt.Tooltip("accuracy:Q", format=".3f")],
        ).properties(width=width, height=height)
        return heat.facet(facet=alt.Facet("layer:N", sort=self.layers), columns=columns,
                          ).properties(title=f"Per-token probe accuracy: {self.meta.get('model')}")
