"""Dataset scale (Fig 12): per-block CKA against a reference model.

``data_scale``: ViTs trained on 3%, 10%, 30% and 60% of the data, each compared block by
block (block i with block i) with the same architecture trained on all of it, optionally over
several training seeds (each seed's models against that seed's full-data model; the result is
the mean, with every seed's values kept). Low layers stay
similar even at small scale; high layers need more data. :class:`BlockCKAResult` is shared
with :func:`vitlens.analyses.finetune_similarity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

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
    """Per-block CKA of models trained on less data against the full-data model (Fig 12).

    ``cka`` (R, B) is the mean over training seeds; ``per_seed`` (S, R, B) each seed's.
    """

    row_title = "data"

    @property
    def per_seed(self) -> np.ndarray:
        return self.arrays.get("per_seed", self.cka[None])

    def chart(self, *, title: str | None = None, width: int = 320, height: int = 220):
        """The seed mean by block, one line per fraction; each seed's values as faint points."""
        import altair as alt
        import pandas as pd

        mean = super().chart(title=title, width=width, height=height)
        if self.per_seed.shape[0] < 2:
            return mean
        S, R, B = self.per_seed.shape
        si, ri, bi = np.meshgrid(np.arange(S), np.arange(R), np.arange(B), indexing="ij")
        blocks = self.meta.get("blocks") or [None] * B
        df = pd.DataFrame({
            "seed": si.ravel(),
            self.row_title: np.asarray(self.rows, dtype=object)[ri.ravel()],
            "block": [blocks[b] if blocks[b] is not None else b for b in bi.ravel()],
            "cka": self.per_seed.ravel(),
        })
        points = alt.Chart(df).mark_point(opacity=0.35, size=20).encode(
            x="block:O", y="cka:Q",
            color=alt.Color(f"{self.row_title}:N", sort=self.rows),
            tooltip=[f"{self.row_title}:N", "seed:Q", "block:O",
                     alt.Tooltip("cka:Q", format=".4f")])
        return alt.layer(mean, points)


def _per_seed(models: Mapping[str, Any], reference: Any) -> tuple[list[Any], dict[str, list]]:
    """(references, label -> models), one entry per training seed."""
    refs = list(reference) if isinstance(reference, (list, tuple)) else [reference]
    out: dict[str, list] = {}
    for label, m in models.items():
        ms = list(m) if isinstance(m, (list, tuple)) else [m]
        if len(ms) != len(refs):
            msg = (f"model {label!r} has {len(ms)} training seed(s) but the reference has "
                   f"{len(refs)}: pass one model per seed for every label and one reference "
                   "per seed, in the same seed order")
            raise ValueError(msg)
        out[str(label)] = ms
    return refs, out


def data_scale(models: Mapping[str, Any], reference: Any, images: Any, *,
               layers: Any = "blocks", token_mode: str = "flatten", batch_size: int = 64,
               device: str | torch.device | None = None, progress: bool = True,
               n_images: int | None = None) -> DataScaleResult:
    """Per-block CKA of each model against ``reference`` (block i vs block i), in one pass.

    Args:
        models: label -> model, e.g. ``{"3%": "vitlens/vit-cls-3pct", "10%": ...}``; or
            label -> a list of models, one per training seed (then ``reference`` is a list of
            the same length, and seed k's models are compared with seed k's reference).
        reference: The model trained on all the data, e.g. ``"vitlens/vit-sup"``, or one per
            training seed.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        layers: Layer selector, the same for every model (``"blocks"``).
        token_mode, batch_size, device, progress, n_images: As in :func:`vitlens.cka`.

    Returns:
        :class:`DataScaleResult`: ``cka`` (R, B) is the mean over training seeds, and
        ``per_seed`` (S, R, B) holds each seed's values (S = 1 for single models).

    Raises:
        ValueError: no models; a label with a different number of seeds than the reference;
            a model's layers differ from the reference's.
    """
    if not models:
        msg = "models is empty: pass {label: model}, e.g. {'10%': 'vitlens/vit-cls-10pct'}"
        raise ValueError(msg)
    refs, by_label = _per_seed(models, reference)
    keys = {(label, k): f"{label} #{k}" for label in by_label for k in range(len(refs))}
    ref_keys = [f"__reference__ #{k}" for k in range(len(refs))]
    everything = {keys[(label, k)]: m for label, ms in by_label.items()
                  for k, m in enumerate(ms)}
    everything.update(zip(ref_keys, refs, strict=True))
    sims = joint_cka(everything, images, rows=dict.fromkeys(keys.values(), layers),
                     cols=dict.fromkeys(ref_keys, layers),
                     token_mode=token_mode, batch_size=batch_size, device=device,
                     progress=progress, n_images=n_images, desc="CKA vs reference")
    results = [_block_result(DataScaleResult,
                             {label: sims[(keys[(label, k)], ref_keys[k])] for label in by_label},
                             model_label(refs[k]), token_mode, title="")
               for k in range(len(refs))]
    ref_label = model_label(refs[0]) if len(refs) == 1 else (
        f"{model_label(refs[0])} ({len(refs)} training seeds)")
    per_seed = np.stack([r.cka for r in results])  # (S, R, B)
    meta = {**results[0].meta, "reference": ref_label,
            "references": [model_label(r) for r in refs],
            "models": {label: [model_label(m) for m in ms] for label, ms in by_label.items()},
            "n_seeds": len(refs),
            "title": f"Per-block CKA with {ref_label} by training data"}
    return DataScaleResult({"cka": per_seed.mean(axis=0), "per_seed": per_seed,
                            "full": np.stack([r.arrays["full"] for r in results]).mean(axis=0)},
                           meta)


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
