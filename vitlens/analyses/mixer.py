"""MLP-Mixer against ViT and ResNet (App. H).

Within-model CKA of the Mixer shows distinct blocks; cross-model CKA shows the Mixer closer
to the ViT than to the ResNet. The summary is, for each other model, the mean over Mixer
layers of the best-matching layer's CKA (and the mean CKA over all pairs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.labels import model_label
from ..results.base import Result, chart_size
from ..results.similarity import SimilarityResult
from ..similarity.run import joint_cka

__all__ = ["MixerComparisonResult", "mixer_comparison"]

_PARTS = ("within", "vs_vit", "vs_resnet")


def mixer_comparison(mixer: str | nn.Module, vit: str | nn.Module, resnet: str | nn.Module,
                     images: Any, *, layers: Any = "blocks", vit_layers: Any = None,
                     resnet_layers: Any = None, token_mode: str = "flatten",
                     batch_size: int = 64, device: str | torch.device | None = None,
                     progress: bool = True, n_images: int | None = None,
                     ) -> MixerComparisonResult:
    """Within-model CKA of ``mixer`` and its CKA with ``vit`` and ``resnet``, in one pass.

    Args:
        mixer, vit, resnet: Models (timm names, ``"vitlens/mixer"`` etc., or modules).
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        layers: Layer selector for the Mixer (``"blocks"``; ``"all"`` for the dense view).
        vit_layers, resnet_layers: Selectors for the other two (default: ``layers``).
        token_mode, batch_size, device, progress, n_images: As in :func:`vitlens.cka`.

    Returns:
        A :class:`MixerComparisonResult`; ``.within``, ``.vs_vit`` and ``.vs_resnet`` are
        :class:`SimilarityResult` objects and ``.summary`` holds the best-match statistics.
    """
    vit_layers = layers if vit_layers is None else vit_layers
    resnet_layers = layers if resnet_layers is None else resnet_layers
    models = {"mixer": mixer, "vit": vit, "resnet": resnet}
    sims = joint_cka(models, images, rows={"mixer": layers},
                     cols={"mixer": layers, "vit": vit_layers, "resnet": resnet_layers},
                     token_mode=token_mode, batch_size=batch_size, device=device,
                     progress=progress, n_images=n_images, desc="CKA mixer vs vit, resnet")
    parts = {"within": sims[("mixer", "mixer")], "vs_vit": sims[("mixer", "vit")],
             "vs_resnet": sims[("mixer", "resnet")]}
    labels = {k: model_label(m) for k, m in models.items()}
    return MixerComparisonResult.build(parts, labels)


class MixerComparisonResult(Result):
    """Three CKA matrices (mixer x mixer, mixer x vit, mixer x resnet) and a summary.

    ``summary``: ``best_match_vit`` / ``best_match_resnet`` (mean over Mixer layers of the
    largest CKA with any layer of the other model), ``mean_vit`` / ``mean_resnet`` (mean over
    all pairs) and ``closer_to`` ("vit" or "resnet", by best-match CKA).
    """

    array_names = _PARTS

    @classmethod
    def build(cls, parts: dict[str, SimilarityResult],
              labels: dict[str, str]) -> MixerComparisonResult:
        arrays = {k: parts[k].matrix for k in _PARTS}
        meta = {"labels": labels,
                "layers": {"mixer": parts["within"].layers_a, "vit": parts["vs_vit"].layers_b,
                           "resnet": parts["vs_resnet"].layers_b},
                "part_meta": {k: parts[k].meta for k in _PARTS}}
        best = {o: np.nanmax(arrays[f"vs_{o}"], axis=1) for o in ("vit", "resnet")}
        summary = {f"best_match_{o}": float(np.nanmean(b)) for o, b in best.items()}
        summary.update({f"mean_{o}": float(np.nanmean(arrays[f"vs_{o}"])) for o in ("vit", "resnet")})
        summary["closer_to"] = ("vit" if summary["best_match_vit"] >= summary["best_match_resnet"]
                                else "resnet")
        meta["summary"] = summary
        arrays["best_match"] = np.stack([best["vit"], best["resnet"]])  # (2, L_mixer)
        return cls(arrays, meta)

    from_parts = build  # the older name

    def _part(self, key: str, other: str) -> SimilarityResult:
        layers = self.meta["layers"]
        return SimilarityResult(self.arrays[key], layers["mixer"], layers[other],
                                self.meta["part_meta"][key])

    @property
    def within(self) -> SimilarityResult:
        return self._part("within", "mixer")

    @property
    def vs_vit(self) -> SimilarityResult:
        return self._part("vs_vit", "vit")

    @property
    def vs_resnet(self) -> SimilarityResult:
        return self._part("vs_resnet", "resnet")

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.meta["summary"])

    def __repr__(self) -> str:
        s, lab = self.summary, self.meta["labels"]
        return (f"MixerComparisonResult({lab['mixer']}: best-match CKA with {lab['vit']} "
                f"{s['best_match_vit']:.3f}, with {lab['resnet']} {s['best_match_resnet']:.3f}; "
                f"closer to {s['closer_to']})")

    def to_dataframe(self):
        """Long form of the three matrices, with a ``comparison`` column."""
        import pandas as pd

        frames = []
        for key, part in (("within", self.within), ("vs_vit", self.vs_vit),
                          ("vs_resnet", self.vs_resnet)):
            frames.append(part.to_dataframe().assign(comparison=key))
        return pd.concat(frames, ignore_index=True)

    def chart(self, *, width: int | None = None, height: int | None = None,
              scheme: str = "magma", size: int | None = None):
        """Three heatmaps side by side (App. H), summary in the title (``width``/``height``:
        each heatmap's, 220 by default)."""
        import altair as alt

        width, height = chart_size(width, height, size, 220)

        lab, s = self.meta["labels"], self.summary
        charts = [self.within.chart(width=width, height=height, scheme=scheme, title=f"{lab['mixer']} (within)"),
                  self.vs_vit.chart(width=width, height=height, scheme=scheme,
                                    title=f"vs {lab['vit']}: best match {s['best_match_vit']:.2f}"),
                  self.vs_resnet.chart(width=width, height=height, scheme=scheme,
                                       title=f"vs {lab['resnet']}: best match "
                                             f"{s['best_match_resnet']:.2f}")]
        return alt.hconcat(*charts).resolve_scale(color="shared").properties(
            title=f"MLP-Mixer: closer to {s['closer_to']}")
