"""Few-shot linear probes (Fig 11, D.4): closed-form ridge against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from tiny_models import make_tiny

from vitlens.analyses import (
    ProbeResult,
    linear_probe,
    probe_features,
    probe_from_features,
)
from vitlens.analyses._ridge import few_shot_indices, ridge_fit, ridge_predict
from vitlens.errors import NotApplicableError
from vitlens.results import load_result


@pytest.mark.parametrize("n,d", [(40, 7), (12, 50)])  # primal and dual form
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_ridge_matches_sklearn(n, d, fit_intercept):
    rng = np.random.default_rng(n + d)
    X = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d) * 5
    Y = np.where(rng.integers(0, 3, n)[:, None] == np.arange(3), 1.0, -1.0)
    Xt = rng.normal(size=(9, d))
    for lam in (0.01, 3.0):
        W, b = ridge_fit(X, Y, lam, fit_intercept=fit_intercept)
        ref = Ridge(alpha=lam, fit_intercept=fit_intercept, solver="cholesky").fit(X, Y)
        np.testing.assert_allclose(W.numpy(), ref.coef_.T, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(b.numpy(), np.broadcast_to(ref.intercept_, (3,)), atol=1e-9)
        np.testing.assert_allclose(ridge_predict(Xt, W, b).numpy(), ref.predict(Xt), atol=1e-8)


def test_batched_ridge_equals_separate_fits():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2, 5, 20, 6))  # (seeds, positions, n, d)
    Y = np.where(rng.integers(0, 2, (2, 1, 20))[..., None] == np.arange(2), 1.0, -1.0)
    W, b = ridge_fit(X, Y, 0.5)
    for s in range(2):
        for p in range(5):
            ref = Ridge(alpha=0.5).fit(X[s, p], Y[s, 0])
            np.testing.assert_allclose(W[s, p].numpy(), ref.coef_.T, atol=1e-9)
            np.testing.assert_allclose(b[s, p].numpy(), ref.intercept_, atol=1e-9)


def test_few_shot_sampling_and_label_errors():
    labels = np.repeat([3, 7, 9], 5)
    sets = few_shot_indices(labels, 2, seeds=(0, 1))
    for s in sets:
        assert len(s) == 6 and len(set(s.tolist())) == 6
        np.testing.assert_array_equal(np.sort(labels[s]), np.repeat([3, 7, 9], 2))
    assert not np.array_equal(sets[0], sets[1])
    np.testing.assert_array_equal(few_shot_indices(labels, 2, seeds=(0,))[0], sets[0])
    with pytest.raises(ValueError, match="at least 2"):
        few_shot_indices(np.zeros(10, int), 2, seeds=(0,))
    with pytest.raises(ValueError, match=r"fewer training images .*\{7: 1\}"):
        few_shot_indices(np.array([3, 3, 7, 9, 9]), 2, seeds=(0,))


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, 32, 32))).float()


def _block_outputs(model, x) -> list[np.ndarray]:
    """ViT block outputs (n, N, C), hooked by hand."""
    outs = []
    hs = [b.register_forward_hook(lambda m, a, o: outs.append(o.double().numpy()))
          for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return outs


def _sk_acc(Xtr, ytr, Xte, yte, lam):
    classes = np.unique(ytr)
    Y = np.where(ytr[:, None] == classes, 1.0, -1.0)
    pred = classes[Ridge(alpha=lam).fit(Xtr, Y).predict(Xte).argmax(1)]
    return float((pred == yte).mean())


@pytest.fixture(scope="module")
def vit_data():
    model = make_tiny("vit")
    xtr, xte = _pixels(24, 0), _pixels(30, 1)
    ytr, yte = np.repeat(np.arange(4), 6), np.arange(30) % 4
    xtr[:, 0] += torch.from_numpy(ytr).float()[:, None, None] * 0.5  # some signal
    xte[:, 0] += torch.from_numpy(yte).float()[:, None, None] * 0.5
    return model, xtr, ytr, xte, yte


def test_linear_probe_matches_sklearn_on_hand_captured_features(vit_data):
    model, xtr, ytr, xte, yte = vit_data
    # shots = every training image of each class, so every seed fits the same data
    res = linear_probe(model, xtr, ytr, xte, yte, aggregations=("cls", "token", "mean", "every"),
                       shots=6, seeds=(0, 1), l2=2.0, progress=False)
    tr, te = _block_outputs(model, xtr), _block_outputs(model, xte)
    for i, layer in enumerate(["blocks.0", "blocks.1"]):
        want = {"cls": _sk_acc(tr[i][:, 0], ytr, te[i][:, 0], yte, 2.0),
                "token": _sk_acc(tr[i][:, 1 + 2 * 4 + 2], ytr, te[i][:, 1 + 2 * 4 + 2], yte, 2.0),
                "mean": _sk_acc(tr[i][:, 1:].mean(1), ytr, te[i][:, 1:].mean(1), yte, 2.0)}
        for agg, acc in want.items():
            assert res.value(layer, agg) == pytest.approx(acc, abs=1e-12), (layer, agg)
        tmap = res.token_map(layer)
        assert tmap.shape == (4, 4)
        for r, c in [(0, 0), (1, 3), (3, 2)]:
            k = 1 + 4 * r + c
            assert tmap[r, c] == pytest.approx(_sk_acc(tr[i][:, k], ytr, te[i][:, k], yte, 2.0))
        assert res.value(layer, "every") == pytest.approx(tmap.mean())
    assert res.meta["tokens"]["blocks.0"] == [2, 2]
    np.testing.assert_allclose(res.accuracy_std, 0.0, atol=1e-12)  # both seeds: same shots


def test_seeds_spread_and_capture_once_path(vit_data):
    model, xtr, ytr, xte, yte = vit_data
    res = linear_probe(model, xtr, ytr, xte, yte, shots=3, seeds=(0, 1, 2), progress=False)
    assert res.per_seed.shape == (3, 2, 3)
    np.testing.assert_allclose(res.accuracy, res.per_seed.mean(0))
    np.testing.assert_allclose(res.accuracy_std, res.per_seed.std(0))
    # one seed by hand: the same few-shot draw, sklearn on hand-captured CLS tokens
    idx = few_shot_indices(ytr, 3, seeds=(1,))[0]
    tr, te = _block_outputs(model, xtr), _block_outputs(model, xte)
    want = _sk_acc(tr[1][idx, 0], ytr[idx], te[1][:, 0], yte, 1.0)
    assert res.per_seed[1, 1, 0] == pytest.approx(want)
    # capture once, probe many: the same numbers from stored features
    ftr = probe_features(model, xtr, ytr, progress=False)
    fte = probe_features(model, xte, yte, progress=False)
    assert ftr.features["blocks.1"]["cls"].shape == (24, 32)
    again = probe_from_features(ftr, fte, shots=3, seeds=(0, 1, 2))
    np.testing.assert_allclose(again.per_seed, res.per_seed)


def test_resnet_tokens_follow_each_stage_grid():
    model = make_tiny("resnet")
    x, y = _pixels(16, 2), np.arange(16) % 2
    res = linear_probe(model, x, y, x, y, aggregations=("token", "mean", "every"), shots=4,
                       seeds=(0,), progress=False)
    assert res.meta["grids"] == {"layer1.0": [8, 8], "layer2.0": [4, 4], "layer3.0": [2, 2],
                                 "layer4.0": [1, 1]}
    assert res.arrays["token_maps"].shape == (1, 4, 8, 8)
    assert res.token_map("layer3.0").shape == (2, 2)
    assert np.isnan(res.arrays["token_maps"][0, 3, 1:, :]).all()  # padding beyond 1x1
    with pytest.raises(NotApplicableError, match="CLS"):
        linear_probe(model, x, y, x, y, aggregations=("cls",), shots=4, progress=False)


def test_bad_inputs(vit_data):
    model, xtr, ytr, xte, yte = vit_data
    with pytest.raises(NotApplicableError, match="CLS"):
        linear_probe(make_tiny("vit_gap"), xtr, ytr, xte, yte, aggregations=("cls", "mean"),
                     shots=2, progress=False)
    with pytest.raises(ValueError, match="integers"):
        linear_probe(model, xtr, ytr.astype(float), xte, yte, shots=2, progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        linear_probe(model, xtr, np.zeros(24, int), xte, yte, shots=2, progress=False)
    with pytest.raises(ValueError, match="fewer training images"):
        linear_probe(model, xtr, ytr, xte, yte, shots=7, progress=False)
    with pytest.raises(ValueError, match="one label per image"):
        linear_probe(model, xtr, ytr[:-1], xte, yte, shots=2, progress=False)
    with pytest.raises(ValueError, match="never occur"):
        linear_probe(model, xtr, ytr, xte, yte + 1, shots=2, progress=False)
    with pytest.raises(ValueError, match="unknown aggregations"):
        linear_probe(model, xtr, ytr, xte, yte, aggregations=("max",), shots=2, progress=False)
    with pytest.raises(ValueError, match="outside"):
        linear_probe(model, xtr, ytr, xte, yte, aggregations=("token",), token=(4, 0), shots=2,
                     progress=False)


def test_roundtrip_dataframe_and_charts(vit_data, tmp_path):
    model, xtr, ytr, xte, yte = vit_data
    res = linear_probe(model, xtr, ytr, xte, yte, aggregations=("cls", "mean", "every"), shots=2,
                       seeds=(0, 1), progress=False)
    back = load_result(res.save(tmp_path / "probe"))
    assert type(back) is ProbeResult
    np.testing.assert_array_equal(back.per_seed, res.per_seed)
    np.testing.assert_array_equal(back.token_map("blocks.1"), res.token_map("blocks.1"))
    df = res.to_dataframe()
    assert list(df.columns) == ["layer", "layer_index", "aggregation", "accuracy", "std"]
    assert len(df) == 2 * 3
    assert len(res.token_map_dataframe()) == 2 * 16
    assert res.chart().to_dict()["layer"]
    assert "facet" in res.map_chart().to_dict()
