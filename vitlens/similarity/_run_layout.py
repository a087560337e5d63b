"""How a :class:`~vitlens.similarity.run.CKARun` lays out its models: which module is
captured once, which image stream feeds it, and how rows and columns are named and split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..capture import Capture, GramCapture
from ..datasets.preprocess import MultiModelBatches
from ..results.similarity import SimilarityResult

LayerSpec = Any
ESTIMATOR = "minibatch linear CKA, unbiased HSIC (Song et al. 2012)"


class _Source:
    """One model reading one image set: its capture and where its input comes from."""

    def __init__(self, label: str, model: nn.Module, images: Any, capture: Any) -> None:
        self.label, self.model, self.images, self.capture = label, model, images, capture
        self.key: Any = None  # (module, image set), or ("custom", label)
        self.stream = 0  # index of the image stream
        self.slot = 0  # index of this model's tensor in that stream's batch


class RunLayout:
    """Mixin of :class:`~vitlens.similarity.run.CKARun`: captures, streams, names, blocks."""

    def _build_captures(self, rows: Mapping[str, LayerSpec],
                        cols: Mapping[str, LayerSpec] | None, captures: Mapping[str, Any]) -> None:
        custom = self.features_fn is not None or self.engine_factory is not None

        def make(model: nn.Module, layers: Any) -> Any:
            if self.in_hooks:  # layers are reduced to Grams as they are computed
                return GramCapture(model, layers, token_mode=self.token_mode)
            # MinibatchCKA checks finiteness (and names the layer): skip Capture's pass,
            # unless custom features or accumulators take the activations
            return Capture(model, layers, token_mode=self.token_mode, check_finite=custom)

        # resolve every selection once (a probe capture resolves names, adds no hooks)
        chosen: dict[tuple[str, str], list[str]] = {}
        for side, sel in (("row", rows), ("col", cols or {})):
            for k, spec in sel.items():
                chosen[(side, k)] = (list(captures[k].layers) if k in captures
                                     else make(self.models[k], spec).layers)
        self.row_sel = {k: chosen[("row", k)] for k in rows}
        self.col_sel = None if cols is None else {k: chosen[("col", k)] for k in cols}
        # one capture per distinct module (custom captures: one per label), union of layers
        self.sources: list[_Source] = []
        self._source_of: dict[str, int] = {}
        wanted: dict[Any, list[str]] = {}
        keys: dict[str, Any] = {}
        for (_side, k), names in chosen.items():
            key = ("custom", k) if k in captures else (id(self.models[k]), id(
                self.extra_images.get(k, self.images)))
            keys[k] = key
            wanted[key] = list(dict.fromkeys(wanted.get(key, []) + names))
        caps_by_module: dict[int, Any] = {}
        for k, key in keys.items():
            if key in [self.sources[i].key for i in range(len(self.sources))]:
                self._source_of[k] = next(i for i, s in enumerate(self.sources) if s.key == key)
                continue
            if k in captures:
                cap = captures[k]
            else:
                # a module read twice (two image sets) shares one capture of both selections
                mid = id(self.models[k])
                union = [n for kk, kkey in keys.items() if kkey[0] == mid for n in wanted[kkey]]
                if mid not in caps_by_module:
                    caps_by_module[mid] = make(self.models[k], list(dict.fromkeys(union)))
                cap = caps_by_module[mid]
            src = _Source(k, self.models[k], self.extra_images.get(k, self.images), cap)
            src.key = key
            self._source_of[k] = len(self.sources)
            self.sources.append(src)
        multi_r = len(self.row_sel) > 1 or (self.col_sel is not None and len(self.col_sel) > 1)
        self.prefixed = not self.pair and (multi_r or self.col_sel is None
                                           or set(self.row_sel) != set(self.col_sel))

        def names(sel: Mapping[str, list[str]]) -> list[str]:
            return [f"{k}::{n}" if self.prefixed else n for k, ls in sel.items() for n in ls]

        self.layers_a = names(self.row_sel)
        # the rows compared with themselves: one pass, a self-comparison accumulator
        self.self_only = self.features_fn is None and (self.col_sel is None
                                                       or self.col_sel == self.row_sel)
        self.layers_b = self.layers_a if self.col_sel is None else names(self.col_sel)
        if self.pair:
            self.label_a = self.labels["a"]
            self.label_b = self.labels.get("b", self.label_a)
            self.model_a = self.models["a"]
            self.model_b = self.models.get("b", self.model_a)
            self.same = self.model_b is self.model_a

    def _build_streams(self) -> None:
        by_images: dict[int, list[int]] = {}
        order: list[Any] = []
        for i, s in enumerate(self.sources):
            if id(s.images) not in by_images:
                by_images[id(s.images)] = []
                order.append(s.images)
            by_images[id(s.images)].append(i)
        self.streams = []
        for j, imgs in enumerate(order):
            members = by_images[id(imgs)]
            for slot, i in enumerate(members):
                self.sources[i].stream, self.sources[i].slot = j, slot
            self.streams.append(MultiModelBatches(imgs, [self.sources[i].model for i in members],
                                                  self.batches, self.device))

    def _blocks_of(self, label: str, names: list[str]) -> list[int | None]:
        cap = self.sources[self._source_of[label]].capture
        catalog = getattr(cap, "catalog", None)
        if catalog is None:
            return [None] * len(names)
        return [catalog[n].block if n in catalog else None for n in names]

    def _select(self, feats: dict[str, dict[str, torch.Tensor]],
                sel: Mapping[str, list[str]]) -> list[torch.Tensor]:
        return [feats[k][n] for k, ls in sel.items() for n in ls]

    def blocks(self) -> dict[tuple[str, str], SimilarityResult]:
        """``{(row label, column label): SimilarityResult}`` of a joint run."""
        matrix = self.matrix()
        cols = self.col_sel if self.col_sel is not None else self.row_sel
        out: dict[tuple[str, str], SimilarityResult] = {}
        r0 = 0
        for ka, la in self.row_sel.items():
            c0 = 0
            for kb, lb in cols.items():
                meta = {"model_a": self._label(ka), "model_b": self._label(kb),
                        "token_mode": self.token_mode, "estimator": ESTIMATOR,
                        "n_images": self.n, "batch_size": self.batch_size,
                        "n_batches": len(self.batches),
                        "images": getattr(self.images, "name", "images"),
                        "blocks_a": self._blocks_of(ka, la), "blocks_b": self._blocks_of(kb, lb)}
                block = matrix[r0:r0 + len(la), c0:c0 + len(lb)]
                out[(ka, kb)] = SimilarityResult(block, la, lb, meta)
                c0 += len(lb)
            r0 += len(la)
        return out

    def _label(self, key: str) -> str:
        name = self.labels[key]
        return name if key == name else f"{key} ({name})"
