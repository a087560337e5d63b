"""Few-shot probes with the penalty chosen on held-out shots (``l2="auto"``), against
scikit-learn's Ridge driven by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from vitlens.analyses.probes import L2_GRID, ProbeFeatures, probe_from_features

CENTRES = np.random.default_rng(42).normal(size=(4, 12))  # one problem for train and test


def _features(n, rng, scale):
    labels = rng.integers(0, 4, n)
    centres = CENTRES
    x = (centres[labels] + 0.6 * rng.normal(size=(n, 12))) * scale
    return ProbeFeatures({"l0": {"mean": x.astype(np.float32)}}, labels, ["l0"], ["mean"])


def _chosen_at_unit_scale(train, test, shots, seeds):
    scaled = ProbeFeatures({"l0": {"mean": train.features["l0"]["mean"] * 1e3}}, train.labels,
                           ["l0"], ["mean"])
    t = ProbeFeatures({"l0": {"mean": test.features["l0"]["mean"] * 1e3}}, test.labels,
                      ["l0"], ["mean"])
    return probe_from_features(scaled, t, shots=shots, seeds=seeds, l2="auto").meta[
        "l2_chosen"]["l0/mean"]


def _accuracy(model, x, y):
    return float((np.argmax(model.predict(x), 1) == y).mean())


@pytest.mark.parametrize("scale", [1.0, 1e-3])  # tiny features, as a random-init model's
def test_auto_penalty_matches_ridge_chosen_by_hand(scale):
    rng = np.random.default_rng(0)
    train, test = _features(200, rng, scale), _features(300, rng, scale)
    shots, seeds = 5, (0, 1, 2)
    res = probe_from_features(train, test, shots=shots, seeds=seeds, l2="auto")
    xtr, ytr = train.features["l0"]["mean"].astype(np.float64), train.labels
    xte, yte = test.features["l0"]["mean"].astype(np.float64), test.labels
    classes = np.unique(ytr)
    expected, chosen = [], []
    for seed in seeds:  # the same draw as vitlens: 2 x shots per class, split in halves
        rng_s = np.random.default_rng(seed)
        both = [rng_s.choice(np.flatnonzero(ytr == c), 2 * shots, replace=False) for c in classes]
        fit = np.concatenate([b[:shots] for b in both])
        val = np.concatenate([b[shots:] for b in both])
        assert not set(fit) & set(val)
        target = np.where(ytr[fit, None] == classes[None], 1.0, -1.0)
        best = None
        unit = ((xtr[fit] - xtr[fit].mean(0)) ** 2).mean()  # the grid is relative to it
        for lam in L2_GRID:
            model = Ridge(alpha=lam * unit).fit(xtr[fit], target)
            acc = _accuracy(model, xtr[val], ytr[val])
            if best is None or acc >= best[0]:
                best = (acc, lam, model)
        chosen.append(best[1])
        expected.append(_accuracy(best[2], xte, yte))
    assert res.meta["l2_chosen"]["l0/mean"] == pytest.approx(chosen)
    assert res.per_seed[:, 0, 0] == pytest.approx(expected, abs=1e-12)
    # the choice does not depend on the features' scale
    assert chosen == pytest.approx(_chosen_at_unit_scale(train, test, shots, seeds))
    assert res.meta["l2"] == "auto"


def test_bad_penalty_names_the_choices():
    rng = np.random.default_rng(1)
    train, test = _features(60, rng, 1.0), _features(20, rng, 1.0)
    with pytest.raises(ValueError, match="auto"):
        probe_from_features(train, test, shots=2, seeds=(0,), l2="best")
