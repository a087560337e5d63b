"""Few-shot linear probes per layer (Fig 11, 13, D.4).

Closed-form regularised least squares with one-vs-all targets in {-1, 1} (predict the
argmax), fitted on ``shots`` images per class per seed, for several aggregations of a
layer's tokens: ``"cls"`` (the CLS token), ``"token"`` (one spatial token, the centre by
default), ``"mean"`` (mean over spatial tokens) and ``"every"`` (each spatial token probed
separately: an accuracy map over the grid).

Features are captured once (:func:`probe_features`) and reused for every seed; test images
stream through the model once while every fitted probe is scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..capture import apply_token_mode
from ..distributed import resolve_device
from ..errors import NotApplicableError
from ..models.catalog import LayerPoint
from ..models.labels import model_label
from ..models.layers import layer_catalog
from ._probe_result import ProbeResult
from ._ridge import few_shot_indices, ridge_fit, ridge_predict, signed_targets
from ._run import (
    SubsetImages,
    check_labels,
    feature_batches,
    images_and_count,
    labels_of,
    load,
)

__all__ = ["AGGREGATIONS", "ProbeFeatures", "ProbeResult", "linear_probe",
           "probe_features", "probe_from_features"]

AGGREGATIONS = ("cls", "token", "mean", "every")


@dataclass
class ProbeFeatures:
    """Aggregated features of a set of images, captured once and probed many times.

    Attributes:
        features: layer -> aggregation -> float32 array, (n, C) or (n, gh, gw, C) for "every".
        labels: (n,) int64 labels, or ``None``.
        grids: layer -> (gh, gw) of its token grid (``None`` for vectors).
        tokens: layer -> the (row, col) used by the "token" aggregation.
    """

    features: dict[str, dict[str, np.ndarray]]
    labels: np.ndarray | None
    layers: list[str]
    aggregations: list[str]
    grids: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    tokens: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    model: str = "model"

    def __len__(self) -> int:
        first = self.features[self.layers[0]][self.aggregations[0]]
        return int(first.shape[0])

    def __repr__(self) -> str:
        return (f"ProbeFeatures({self.model}: {len(self)} images, layers={self.layers}, "
                f"aggregations={self.aggregations})")


def _check_aggregations(aggregations: Sequence[str] | str, points: list[LayerPoint],
                        label: str) -> list[str]:
    aggs = [aggregations] if isinstance(aggregations, str) else list(aggregations)
    bad = [a for a in aggs if a not in AGGREGATIONS]
    if bad or not aggs:
        msg = f"unknown aggregations {bad or aggs}; choose from {AGGREGATIONS}"
        raise ValueError(msg)
    for p in points:
        if "cls" in aggs and (p.layout != "tokens" or p.num_prefix_tokens < 1):
            msg = (f"aggregation 'cls' does not apply to layer {p.name!r} of {label}: it has no "
                   "CLS/prefix token (a GAP ViT, a CNN or a Mixer); use 'mean' or 'token'")
            raise NotApplicableError(msg)
        spatial = [a for a in aggs if a != "cls"]
        if spatial and p.layout == "vector":
            msg = (f"aggregations {spatial} need a token grid, but layer {p.name!r} of {label} "
                   "is a pooled vector")
            raise NotApplicableError(msg)
    return list(dict.fromkeys(aggs))


def _aggregated_batches(mod: nn.Module, src, n: int, layers: Any, aggs: list[str],
                        token: tuple[int, int] | None, grids: dict[str, Any],
                        tokens: dict[str, Any], *, batch_size: int, device: torch.device,
                        progress: bool, desc: str, sharded: bool = False,
                        ) -> Iterator[tuple[range, dict[str, dict[str, torch.Tensor]]]]:
    """Yield ``(indices, {layer: {aggregation: tensor}})``; fills ``grids`` and ``tokens``."""
    cat = layer_catalog(mod)
    names = cat.select(layers)
    points = [cat[name] for name in names]
    aggs = _check_aggregations(aggs, points, model_label(mod))
    for idx, _, raw in feature_batches(mod, src, n, names, token_mode=None,
                                       batch_size=batch_size, device=device,
                                       progress=progress, desc=desc, min_size=1,
                                       sharded=sharded):
        out: dict[str, dict[str, torch.Tensor]] = {}
        for p in points:
            t = raw[p.name]
            out[p.name] = {}
            sp = None
            if any(a != "cls" for a in aggs):
                sp = apply_token_mode(t, p, "spatial", cat.grid_size)  # (b, gh, gw, C)
                grids[p.name] = (int(sp.shape[1]), int(sp.shape[2]))
                tokens[p.name] = _token_position(token, grids[p.name], p.name)
            else:
                grids.setdefault(p.name, None)
                tokens.setdefault(p.name, None)
            for a in aggs:
                if a == "cls":
                    out[p.name][a] = apply_token_mode(t, p, "cls")
                elif a == "token":
                    r, c = tokens[p.name]
                    out[p.name][a] = sp[:, r, c]
                elif a == "mean":
                    out[p.name][a] = sp.mean(dim=(1, 2))
                else:
                    out[p.name][a] = sp
        yield idx, out


def _token_position(token: tuple[int, int] | None, grid: tuple[int, int],
                    layer: str) -> tuple[int, int]:
    gh, gw = grid
    if token is None:
        return gh // 2, gw // 2
    r, c = (int(v) for v in token)
    if not (0 <= r < gh and 0 <= c < gw):
        msg = f"token={token} lies outside the {gh}x{gw} grid of layer {layer!r}"
        raise ValueError(msg)
    return r, c


def probe_features(model: str | nn.Module, images: Any, labels: Any = None, *,
                   layers: Any = "blocks",
                   aggregations: Sequence[str] = ("cls", "token", "mean"),
                   token: tuple[int, int] | None = None, n_images: int | None = None,
                   batch_size: int = 64, device: str | torch.device | None = None,
                   progress: bool = True) -> ProbeFeatures:
    """Capture the aggregated features of ``images`` once, for :func:`probe_from_features`.

    Args:
        model: A timm name, ``"vitlens/<zoo name>"`` or a module.
        images: Anything :func:`vitlens.datasets.as_images` accepts.
        labels: (n,) integer labels; taken from ``images.labels`` when omitted (the
            synthetic dataset has them).
        layers: Layer selector (``"blocks"`` by default).
        aggregations: Any of ``"cls"``, ``"token"``, ``"mean"``, ``"every"``.
        token: (row, col) for ``"token"``; the grid centre by default.
        n_images, batch_size, device, progress: As in :func:`vitlens.cka`.

    Raises:
        NotApplicableError: ``"cls"`` on a model without a CLS token, or a token aggregation
            on a pooled layer.
    """
    dev = resolve_device(device)
    mod = load(model, dev)
    src, n = images_and_count(images, n_images, need=1, what="probe_features")
    lab = labels if labels is not None else labels_of(images)
    lab = None if lab is None else check_labels(np.asarray(lab)[:n], n, "probe_features")
    chunks: dict[str, dict[str, list[np.ndarray]]] = {}
    grids: dict[str, tuple[int, int] | None] = {}
    tokens: dict[str, tuple[int, int] | None] = {}
    for _, feats in _aggregated_batches(
            mod, src, n, layers, list(aggregations), token, grids, tokens, batch_size=batch_size,
            device=dev, progress=progress, desc=f"probe features {model_label(model)}"):
        for layer, per in feats.items():
            for a, t in per.items():
                chunks.setdefault(layer, {}).setdefault(a, []).append(
                    t.detach().float().cpu().numpy())
    features = {layer: {a: np.concatenate(v) for a, v in per.items()}
                for layer, per in chunks.items()}
    layer_names = list(features)
    return ProbeFeatures(features, lab, layer_names, list(features[layer_names[0]]),
                         dict(grids), dict(tokens), model_label(model))


#: Penalties tried by ``l2="auto"`` (chosen per layer, aggregation and seed on held-out shots),
#: relative to the mean squared centred feature of the training shots (so the choice does not
#: depend on the features' scale: the penalty is ``g * mean(Xc**2)`` for ``g`` in the grid).
L2_GRID = tuple(float(v) for v in 10.0 ** np.arange(-3, 4))


class _Probes:
    """Fitted probes: per (layer, aggregation), W (S, [P,] d, K) and b (S, [P,] K).

    With ``l2="auto"`` each probe is fitted for every relative penalty in :data:`L2_GRID`
    on its training shots and keeps the one that scores best on its held-out shots
    (``val_sets``: as many images per class, disjoint from the training shots; ties go to the
    larger penalty). ``chosen`` records the relative penalty per (layer, aggregation) and seed.
    """

    def __init__(self, train: ProbeFeatures, labels: np.ndarray, sets: list[np.ndarray],
                 l2: float | str, fit_intercept: bool, device: torch.device,
                 val_sets: list[np.ndarray] | None = None) -> None:
        self.classes = np.unique(labels)
        self.params: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.chosen: dict[str, list[float]] = {}
        auto = l2 == "auto"
        if auto and val_sets is None:
            msg = 'l2="auto" needs held-out shots (val_sets)'
            raise ValueError(msg)
        Y = torch.as_tensor(np.stack([signed_targets(labels[s], self.classes) for s in sets]),
                            device=device)  # (S, m, K)
        for layer in train.layers:
            for a in train.aggregations:
                feats = train.features[layer][a]
                Xt = self._stack(feats, sets, a, device)
                Yt = Y.unsqueeze(1) if a == "every" else Y
                if not auto:
                    self.params[(layer, a)] = ridge_fit(Xt, Yt, l2, fit_intercept=fit_intercept)
                    continue
                Xv = self._stack(feats, val_sets, a, device)
                yv = torch.as_tensor(np.stack([labels[s] for s in val_sets]), device=device)
                # ridge on X / r with penalty g is ridge on X with penalty g * r**2; W scales back
                centred = Xt - Xt.mean(-2, keepdim=True) if fit_intercept else Xt
                root = centred.pow(2).mean((-1, -2), keepdim=True).sqrt().clamp_min(1e-300)
                Xt, Xv = Xt / root, Xv / root
                best, best_acc = None, None
                for lam in L2_GRID:  # ascending: ">=" hands ties to the larger penalty
                    W, b = ridge_fit(Xt, Yt, lam, fit_intercept=fit_intercept)
                    pred = torch.as_tensor(self.classes, device=device)[
                        ridge_predict(Xv, W, b).argmax(-1)]  # (S, [P,] m)
                    hit = (pred == (yv.unsqueeze(1) if a == "every" else yv)).double()
                    acc = hit.mean(-1) if a != "every" else hit.mean((-1, -2))  # (S,)
                    if best is None:
                        best, best_acc = (W.clone(), b.clone()), acc
                        lams = torch.full_like(acc, lam)
                        continue
                    take = acc >= best_acc
                    shape = (-1,) + (1,) * (W.dim() - 1)
                    best = (torch.where(take.view(shape), W, best[0]),
                            torch.where(take.view((-1,) + (1,) * (b.dim() - 1)), b, best[1]))
                    best_acc = torch.where(take, acc, best_acc)
                    lams = torch.where(take, torch.full_like(acc, lam), lams)
                self.params[(layer, a)] = (best[0] / root, best[1])
                self.chosen[f"{layer}/{a}"] = [float(v) for v in lams.cpu()]

    @staticmethod
    def _stack(feats: np.ndarray, sets: list[np.ndarray], agg: str,
               device: torch.device) -> torch.Tensor:
        Xt = torch.as_tensor(np.stack([feats[s] for s in sets]), device=device).double()
        if agg == "every":  # (S, m, gh, gw, C) -> (S, P, m, C)
            Xt = Xt.flatten(2, 3).permute(0, 2, 1, 3)
        return Xt

    def correct(self, feats: dict[str, dict[str, Any]], labels: np.ndarray,
                ) -> dict[tuple[str, str], np.ndarray]:
        """Correct predictions per probe: (S,) or (S, gh, gw) counts."""
        out = {}
        for (layer, a), (W, b) in self.params.items():
            X = torch.as_tensor(feats[layer][a], device=W.device).double()
            if a == "every":  # (n, gh, gw, C) -> (P, n, C)
                gh, gw = X.shape[1:3]
                X = X.flatten(1, 2).transpose(0, 1)
            scores = ridge_predict(X.unsqueeze(0), W, b)  # (S, [P,] n, K)
            pred = self.classes[scores.argmax(-1).cpu().numpy()]
            hits = (pred == labels).sum(-1)
            out[(layer, a)] = hits.reshape(len(hits), gh, gw) if a == "every" else hits
        return out


def _probe_setup(train_labels: np.ndarray, test_labels: np.ndarray, shots: int,
                 seeds: Sequence[int], l2: float | str = 1.0,
                 ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Per seed the training shots, and with ``l2="auto"`` as many held-out shots per class
    (drawn together, without replacement, so the two never share an image)."""
    if isinstance(l2, str) and l2 != "auto":
        msg = f'l2={l2!r}: pass a positive penalty or "auto" (chosen on held-out shots)'
        raise ValueError(msg)
    k = len(np.unique(train_labels))
    if l2 == "auto":
        both = few_shot_indices(train_labels, 2 * shots, seeds)
        sets = [b.reshape(k, 2 * shots)[:, :shots].ravel() for b in both]
        val = [b.reshape(k, 2 * shots)[:, shots:].ravel() for b in both]
    else:
        sets, val = few_shot_indices(train_labels, shots, seeds), None
    extra = sorted(set(np.unique(test_labels).tolist()) - set(np.unique(train_labels).tolist()))
    if extra:
        msg = f"test labels {extra} never occur in the training labels; the probe cannot predict them"
        raise ValueError(msg)
    return sets, val


def probe_from_features(train: ProbeFeatures, test: ProbeFeatures, *, shots: int = 10,
                        seeds: Sequence[int] = (0, 1, 2), l2: float | str = 1.0,
                        fit_intercept: bool = True, device: str | torch.device | None = None,
                        ) -> ProbeResult:
    """Fit and score few-shot probes on features from :func:`probe_features`.

    Same arguments as :func:`linear_probe`; ``train.labels`` and ``test.labels`` are used.
    """
    if train.labels is None or test.labels is None:
        msg = "both ProbeFeatures need labels: pass labels= to probe_features"
        raise ValueError(msg)
    if train.layers != test.layers or train.aggregations != test.aggregations:
        msg = (f"train and test features differ: layers {train.layers} vs {test.layers}, "
               f"aggregations {train.aggregations} vs {test.aggregations}")
        raise ValueError(msg)
    dev = resolve_device(device)
    sets, val = _probe_setup(train.labels, test.labels, shots, seeds, l2)
    probes = _Probes(train, train.labels, sets, l2, fit_intercept, dev, val)
    hits: dict[tuple[str, str], np.ndarray] = {}
    for start in range(0, len(test), 512):
        sl = slice(start, start + 512)
        part = {layer: {a: v[sl] for a, v in per.items()} for layer, per in test.features.items()}
        for k, v in probes.correct(part, test.labels[sl]).items():
            hits[k] = hits.get(k, 0) + v
    return ProbeResult.build(hits, len(test), train, probes.classes, shots=shots, seeds=seeds,
                             l2=l2, fit_intercept=fit_intercept, n_train=len(train.labels),
                             l2_chosen=probes.chosen)


def linear_probe(model: str | nn.Module, train_images: Any, train_labels: Any, test_images: Any,
                 test_labels: Any, *, layers: Any = "blocks",
                 aggregations: Sequence[str] = ("cls", "token", "mean"),
                 token: tuple[int, int] | None = None, shots: int = 10,
                 seeds: Sequence[int] = (0, 1, 2), l2: float | str = 1.0,
                 fit_intercept: bool = True, batch_size: int = 64, device: str | torch.device | None = None,
                 progress: bool = True) -> ProbeResult:
    """Few-shot closed-form linear probes on each layer, for several token aggregations.

    Per seed, ``shots`` training images per class are drawn; a ridge regression
    ``W = (Xc^T Xc + l2 I)^-1 Xc^T Yc`` onto one-vs-all targets in {-1, 1} is solved in
    float64 (features and targets centred on the training shots, so the bias
    ``b = mean(Y) - mean(X) W`` is unpenalised, as in scikit-learn's ``Ridge``; the dual form
    is used when the feature dimension exceeds the number of shots) and the class with the
    largest score is predicted. Training features are captured once for all seeds (only the
    sampled images), and the test images stream through the model once.

    Args:
        model: A timm name, ``"vitlens/<zoo name>"`` or a module.
        train_images, test_images: Anything :func:`vitlens.datasets.as_images` accepts.
        train_labels, test_labels: (n,) integer labels (``None``: read ``images.labels``).
        layers: Layer selector (``"blocks"`` by default).
        aggregations: Any of ``"cls"``, ``"token"``, ``"mean"``, ``"every"``.
        token: (row, col) of the single token for ``"token"``; the grid centre by default.
        shots: Training images per class per seed.
        seeds: One few-shot draw per seed; accuracy is averaged over seeds (std reported).
        l2: Ridge penalty, or ``"auto"``: per layer, aggregation and seed, the penalty
            ``g * mean(Xc**2)`` (``g`` in :data:`L2_GRID`, ``Xc`` the centred training shots)
            that scores best on ``shots`` held-out training images per class (disjoint from
            the training shots; ties go to the larger penalty). A fixed
            penalty can collapse probes on small-scale features (e.g. a random-init model's)
            to a constant prediction.
        fit_intercept: Centre features and targets (unpenalised bias).
        batch_size, device, progress: As in :func:`vitlens.cka`.

    Returns:
        A :class:`ProbeResult` (accuracy per layer and aggregation, and token maps for
        ``"every"``).

    Raises:
        ValueError: non-integer labels, fewer than 2 classes, or a class with fewer than
            ``shots`` training images.
        NotApplicableError: ``"cls"`` on a model without a CLS token.
    """
    dev = resolve_device(device)
    mod = load(model, dev)
    tr_src, n_tr = images_and_count(train_images, None, need=1, what="linear_probe (train)")
    te_src, n_te = images_and_count(test_images, None, need=1, what="linear_probe (test)")
    tr_lab = check_labels(train_labels if train_labels is not None else labels_of(train_images),
                          n_tr, "linear_probe train_labels")
    te_lab = check_labels(test_labels if test_labels is not None else labels_of(test_images),
                          n_te, "linear_probe test_labels")
    sets, val = _probe_setup(tr_lab, te_lab, shots, seeds, l2)
    union = np.unique(np.concatenate(sets + (val or [])))
    local = [np.searchsorted(union, s) for s in sets]
    local_val = None if val is None else [np.searchsorted(union, s) for s in val]
    train = probe_features(mod, SubsetImages(tr_src, union), tr_lab[union], layers=layers,
                           aggregations=aggregations, token=token, batch_size=batch_size,
                           device=dev, progress=progress)
    train.model = model_label(model)
    probes = _Probes(train, train.labels, local, l2, fit_intercept, dev, local_val)
    hits: dict[tuple[str, str], np.ndarray] = {}
    for idx, feats in _aggregated_batches(
            mod, te_src, n_te, train.layers, train.aggregations, token, {}, {},
            batch_size=batch_size, device=dev, progress=progress,
            desc=f"probe test {model_label(model)}", sharded=True):
        for k, v in probes.correct(feats, te_lab[idx.start:idx.stop]).items():
            hits[k] = hits.get(k, 0) + v
    hits = _all_reduce_counts(hits)  # under torchrun: each rank scored its test batches
    return ProbeResult.build(hits, n_te, train, probes.classes, shots=shots, seeds=seeds, l2=l2,
                             fit_intercept=fit_intercept, n_train=n_tr, l2_chosen=probes.chosen)


def _all_reduce_counts(hits: dict[tuple[str, str], np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Sum integer count arrays over the ranks of ``torch.distributed`` (one ``all_reduce``)."""
    from .. import distributed as vd

    if not vd.is_distributed():
        return hits
    summed = vd.all_reduce_state_({k: torch.as_tensor(np.asarray(v), dtype=torch.float64)
                                   for k, v in hits.items()})
    return {k: v.round().to(torch.int64).numpy() for k, v in summed.items()}
