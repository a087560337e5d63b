"""CKA with a spread over disjoint image subsets and a permutation null."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hsic_reference import hsic1
from tiny_models import make_tiny

from vitlens import SimilarityResult
from vitlens.analyses import cka_with_confidence, disjoint_subsets
from vitlens.errors import ImageError
from vitlens.results import load_result


def _gram(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float64).reshape(len(X), -1)
    return X @ X.T


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, 32, 32))).float()


def _hooked(model, modules, x) -> list[np.ndarray]:
    outs = {}
    hs = [m.register_forward_hook(lambda mod, a, o, k=k: outs.__setitem__(k, o.double().numpy()))
          for k, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hs:
            h.remove()
    return [outs[k] for k in range(len(modules))]


def test_disjoint_subsets():
    parts = disjoint_subsets(23, 4, seed=3)
    assert [len(p) for p in parts] == [6, 6, 6, 5]
    allidx = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(allidx), np.arange(23))  # disjoint and covering
    assert all(np.all(np.diff(p) > 0) for p in parts)
    assert not np.array_equal(np.concatenate(disjoint_subsets(23, 4, seed=4)), allidx)


def test_spread_and_pooled_matrix_match_numpy_per_subset(tmp_path):
    vit, rn = make_tiny("vit"), make_tiny("resnet")
    x = _pixels(36)
    res = cka_with_confidence(vit, x, rn, repeats=3, permutations=2, batch_size=64, seed=5,
                              progress=False)
    assert isinstance(res, SimilarityResult)
    La, Lb = 2, 4
    assert res.matrix.shape == res.std.shape == (La, Lb)
    assert res.arrays["null_mean"].shape == res.arrays["null_std"].shape == (La, Lb)
    assert res.arrays["repeat_matrices"].shape == (3, La, Lb)
    sub = res.arrays["subset_of"]
    parts = disjoint_subsets(36, 3, seed=5)
    for r, p in enumerate(parts):  # the recorded assignment is the disjoint split
        np.testing.assert_array_equal(np.flatnonzero(sub == r), p)
    assert sorted(np.bincount(sub).tolist()) == [12, 12, 12]
    # independent reference: every subset is one batch (12 <= batch_size)
    fa = _hooked(vit, list(vit.blocks), x)
    fb = _hooked(rn, [rn.layer1[0], rn.layer2[0], rn.layer3[0], rn.layer4[0]], x)
    ab, aa, bb = np.zeros((3, La, Lb)), np.zeros((3, La)), np.zeros((3, Lb))
    for r, p in enumerate(parts):
        Ka, Kb = [_gram(f[p]) for f in fa], [_gram(f[p]) for f in fb]
        aa[r] = [hsic1(K, K) for K in Ka]
        bb[r] = [hsic1(L, L) for L in Kb]
        ab[r] = [[hsic1(K, L) for L in Kb] for K in Ka]
    per = ab / np.sqrt(aa[:, :, None] * bb[:, None, :])
    np.testing.assert_allclose(res.arrays["repeat_matrices"], per, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.std, per.std(axis=0, ddof=1), rtol=1e-4, atol=1e-6)
    pooled = ab.mean(0) / np.sqrt(aa.mean(0)[:, None] * bb.mean(0)[None, :])  # equal sizes
    np.testing.assert_allclose(res.matrix, pooled, rtol=1e-5, atol=1e-6)
    back = load_result(res.save(tmp_path / "conf"))
    assert type(back) is SimilarityResult
    for k in ("matrix", "std", "null_mean", "null_std", "subset_of"):
        np.testing.assert_array_equal(back.arrays[k], res.arrays[k])
    assert "std" in back.to_dataframe().columns


def test_permutation_null_is_near_zero_for_unbiased_cka():
    vit = make_tiny("vit")
    res = cka_with_confidence(vit, _pixels(120, seed=1), repeats=3, permutations=4,
                              batch_size=40, progress=False)
    assert res.matrix.shape == (2, 2)
    np.testing.assert_allclose(np.diag(res.matrix), 1.0, atol=1e-9)
    null_mean, null_std = res.arrays["null_mean"], res.arrays["null_std"]
    k = 3 * 4  # null samples
    assert np.all(null_std > 0)
    assert np.all(np.abs(null_mean) < 4 * null_std / np.sqrt(k) + 1e-3)  # within a few s.e.
    assert np.all(res.matrix > null_mean + 5 * null_std)  # the real pairing stands far out
    assert res.meta["repeats"] == 3 and res.meta["subset_sizes"] == [40, 40, 40]


def test_bad_inputs():
    vit = make_tiny("vit")
    with pytest.raises(ValueError, match="at least 2"):
        cka_with_confidence(vit, _pixels(20), repeats=1, progress=False)
    with pytest.raises(ImageError, match="at least 20"):
        cka_with_confidence(vit, _pixels(19), repeats=5, progress=False)
    with pytest.raises(ValueError, match="non-negative"):
        cka_with_confidence(vit, _pixels(20), repeats=2, permutations=-1, progress=False)
    res = cka_with_confidence(vit, _pixels(8), repeats=2, permutations=0, progress=False)
    assert "null_mean" not in res.arrays and res.std.shape == (2, 2)
