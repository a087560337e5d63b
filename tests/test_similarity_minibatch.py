"""MinibatchCKA against an independent float64 NumPy reference, and its error handling.

The reference computes each batch's unbiased HSIC (Song et al. 2012) from explicit Grams and
weights it by the batch size, following PAPER.md; it never calls vitlens.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitlens.similarity import ConstantLayerWarning, MinibatchCKA

# ----------------------------------------------------------------------------------------------
# Independent float64 NumPy reference
# ----------------------------------------------------------------------------------------------


def ref_hsic1(K: np.ndarray, L: np.ndarray) -> float:
    n = K.shape[0]
    Kt = K - np.diag(np.diag(K))
    Lt = L - np.diag(np.diag(L))
    one = np.ones(n)
    return float((np.trace(Kt @ Lt)
                  + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
                  - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3)))


def ref_gram(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=0)  # HSIC_1 is shift invariant; centring avoids float64 cancellation
    return x @ x.T


def ref_minibatch_cka(batches_a: list[list[np.ndarray]],
                      batches_b: list[list[np.ndarray]]) -> np.ndarray:
    """mean_b HSIC(K,L) / sqrt(mean_b HSIC(K,K) mean_b HSIC(L,L)), batch-size weighted."""
    la, lb = len(batches_a[0]), len(batches_b[0])
    ab, aa, bb, total = np.zeros((la, lb)), np.zeros(la), np.zeros(lb), 0
    for fa, fb in zip(batches_a, batches_b, strict=True):
        n = len(fa[0])
        total += n
        ka, kb = [ref_gram(x) for x in fa], [ref_gram(y) for y in fb]
        for i in range(la):
            aa[i] += n * ref_hsic1(ka[i], ka[i])
            for j in range(lb):
                ab[i, j] += n * ref_hsic1(ka[i], kb[j])
        for j in range(lb):
            bb[j] += n * ref_hsic1(kb[j], kb[j])
    ab, aa, bb = ab / total, aa / total, bb / total
    return ab / np.sqrt(aa[:, None] * bb[None, :])


def make_batches(sizes, seed=0, dtype=np.float64, offset=0.0):
    """Layers of model A and B driven by a shared latent, with mixed widths and shapes."""
    rng = np.random.default_rng(seed)
    wa = [rng.standard_normal((6, 20)), rng.standard_normal((6, 3 * 4 * 4)),
          rng.standard_normal((6, 300))]
    wb = [rng.standard_normal((6, 8)), rng.standard_normal((6, 500))]
    batches_a, batches_b = [], []
    for n in sizes:
        z = rng.standard_normal((n, 6))
        fa = [z @ wa[0] + rng.standard_normal((n, 20)),
              (np.tanh(z @ wa[1]) + 0.3 * rng.standard_normal((n, 48))).reshape(n, 3, 4, 4),
              rng.standard_normal((n, 300)) + 0.1 * (z @ wa[2])]
        fb = [np.cos(z @ wb[0]) + rng.standard_normal((n, 8)),
              z @ wb[1] + 2.0 * rng.standard_normal((n, 500))]
        batches_a.append([(x + offset).astype(dtype) for x in fa])
        batches_b.append([(y + offset).astype(dtype) for y in fb])
    return batches_a, batches_b


def run(batches_a, batches_b=None, **kw) -> tuple[MinibatchCKA, np.ndarray]:
    m = MinibatchCKA(**kw)
    for i, fa in enumerate(batches_a):
        fb = None if batches_b is None else [torch.from_numpy(y) for y in batches_b[i]]
        m.update([torch.from_numpy(x) for x in fa], fb)
    return m, m.compute().numpy()


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["auto", "gram", "feature"])
def test_uneven_batches_match_weighted_reference(route):
    ba, bb = make_batches([37, 50, 13])
    m, got = run(ba, bb, route=route)
    assert got.shape == (3, 2) and m.compute().dtype == torch.float64
    assert m.n_examples == 100 and m.n_batches == 3
    np.testing.assert_allclose(got, ref_minibatch_cka(ba, bb), rtol=1e-10, atol=1e-12)


def test_weighting_differs_from_unweighted_mean():
    ba, bb = make_batches([37, 50, 13])
    _, got = run(ba, bb)
    unweighted = np.mean([ref_minibatch_cka([a], [b]) for a, b in zip(ba, bb, strict=True)], axis=0)
    assert np.abs(got - unweighted).max() > 1e-3


def test_all_pairs_equal_pairwise_reference():
    ba, bb = make_batches([40, 40], seed=1)
    _, got = run(ba, bb)
    for i in range(3):
        for j in range(2):
            single = ref_minibatch_cka([[f[i]] for f in ba], [[f[j]] for f in bb])
            np.testing.assert_allclose(got[i, j], single[0, 0], rtol=1e-10, atol=1e-12)


def test_feature_and_gram_routes_agree_in_float64():
    ba, bb = make_batches([30, 64, 9], seed=2)
    _, g = run(ba, bb, route="gram")
    _, f = run(ba, bb, route="feature")
    np.testing.assert_allclose(g, f, rtol=1e-11, atol=1e-13)
    _, gs = run(ba, route="gram")
    _, fs = run(ba, route="feature")
    np.testing.assert_allclose(gs, fs, rtol=1e-11, atol=1e-13)


def test_self_comparison_is_symmetric_with_unit_diagonal():
    ba, _ = make_batches([33, 20], seed=3)
    m, got = run(ba)
    assert got.shape == (3, 3) and m.self_comparison
    np.testing.assert_allclose(np.diag(got), 1.0, rtol=1e-12)
    np.testing.assert_allclose(got, got.T, rtol=1e-12)
    np.testing.assert_allclose(got, ref_minibatch_cka(ba, ba), rtol=1e-10, atol=1e-12)
    _, cross = run(ba, ba)  # the same layers passed as model B
    np.testing.assert_allclose(got, cross, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("route", ["gram", "feature"])
def test_float32_with_channel_offset_matches_float64_reference(route):
    # an offset of 3000 on every channel, and near-zero true CKA for most pairs
    ba, bb = make_batches([64, 50], seed=4, dtype=np.float32, offset=3000.0)
    ref = ref_minibatch_cka(ba, bb)  # the same float32 values, cast to float64
    _, got = run(ba, bb, route=route)
    assert np.abs(got - ref).max() <= 1e-5
    assert np.abs(ref).min() < 0.05  # the case includes near-zero similarities


def test_never_clamped():
    rng = np.random.default_rng(5)
    for _ in range(50):
        ba = [[rng.standard_normal((8, 40)), rng.standard_normal((8, 40))]]
        if ref_minibatch_cka(ba, ba)[0, 1] < -0.02:
            break
    _, got = run(ba)
    assert got[0, 1] < 0
    np.testing.assert_allclose(got, ref_minibatch_cka(ba, ba), rtol=1e-10)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(min_value=4, max_value=24), min_size=1, max_size=3),
       seed=st.integers(0, 2**32 - 1))
def test_random_batches_match_reference(sizes, seed):
    ba, bb = make_batches(sizes, seed=seed)
    _, got = run(ba, bb)
    np.testing.assert_allclose(got, ref_minibatch_cka(ba, bb), rtol=1e-9, atol=1e-10)


def test_accepts_numpy_and_low_precision():
    ba, bb = make_batches([20], seed=6, dtype=np.float32)
    m = MinibatchCKA()
    m.update(ba[0], [torch.from_numpy(y).half() for y in bb[0]])
    ref = ref_minibatch_cka(ba, [[torch.from_numpy(y).half().double().numpy() for y in bb[0]]])
    assert np.abs(m.compute().numpy() - ref).max() <= 1e-5
    mixed = MinibatchCKA(route="gram")  # float64 layers keep float64 Grams beside float32 ones
    mixed.update([torch.from_numpy(x).double() for x in ba[0]], [torch.from_numpy(bb[0][0]),
                                                                 torch.from_numpy(bb[0][1])])
    assert np.abs(mixed.compute().numpy() - ref_minibatch_cka(ba, bb)).max() <= 1e-5


# ----------------------------------------------------------------------------------------------
# State: merge, state_dict
# ----------------------------------------------------------------------------------------------


def test_merge_and_state_dict_roundtrip_equal_single_accumulator():
    ba, bb = make_batches([37, 50, 13, 21], seed=7)
    single, expected = run(ba, bb)
    first, _ = run(ba[:2], bb[:2])
    second, _ = run(ba[2:], bb[2:])
    merged = MinibatchCKA().merge(first).merge(second)
    np.testing.assert_allclose(merged.compute().numpy(), expected, rtol=1e-14)
    assert (merged.n_examples, merged.n_batches) == (121, 4)

    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = MinibatchCKA()
    resumed.load_state_dict(torch.load(buf))
    for fa, fb in zip(ba[2:], bb[2:], strict=True):
        resumed.update([torch.from_numpy(x) for x in fa], [torch.from_numpy(y) for y in fb])
    np.testing.assert_allclose(resumed.compute().numpy(), expected, rtol=1e-14)
    torch.testing.assert_close(resumed.hsic_ab, single.hsic_ab, rtol=1e-14, atol=0)


def test_merge_rejects_incompatible():
    ba, bb = make_batches([10], seed=8)
    cross, _ = run(ba, bb)
    self_, _ = run(ba)
    with pytest.raises(ValueError, match="cannot merge"):
        cross.merge(self_)


# ----------------------------------------------------------------------------------------------
# Constant layers and bad inputs
# ----------------------------------------------------------------------------------------------


def test_constant_layer_gives_nan_row_and_warning():
    ba, bb = make_batches([20, 16], seed=9, dtype=np.float32)
    for fa in ba:
        fa[1] = np.full_like(fa[1], 3000.0)
    m, _ = MinibatchCKA(["stem", "blocks.0", "head"], ["x", "y"]), None
    for fa, fb in zip(ba, bb, strict=True):
        m.update([torch.from_numpy(x) for x in fa], [torch.from_numpy(y) for y in fb])
    with pytest.warns(ConstantLayerWarning, match=r"'blocks\.0'.*constant"):
        got = m.compute().numpy()
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()


def test_constant_column_of_model_b():
    ba, bb = make_batches([12], seed=10)
    bb[0][0] = np.zeros_like(bb[0][0])
    m = MinibatchCKA(names_b=["fc", "pool"], route="feature")
    m.update([torch.from_numpy(x) for x in ba[0]], [torch.from_numpy(y) for y in bb[0]])
    with pytest.warns(ConstantLayerWarning, match=r"'fc' \(model B"):
        got = m.compute().numpy()
    assert np.isnan(got[:, 0]).all() and np.isfinite(got[:, 1]).all()


@pytest.mark.parametrize(("bad", "word"), [(np.nan, "NaN"), (np.inf, "inf")])
@pytest.mark.parametrize("route", ["gram", "feature"])
def test_non_finite_activation_names_the_layer(bad, word, route):
    ba, bb = make_batches([10, 10], seed=11, dtype=np.float32)
    m = MinibatchCKA(["a0", "a1", "a2"], ["b0", "b1"], route=route)
    m.update([torch.from_numpy(x) for x in ba[0]], [torch.from_numpy(y) for y in bb[0]])
    before = m.hsic_ab.clone()
    bb[1][1][3, 7] = bad
    with pytest.raises(ValueError, match=rf"'b1'.*{word}"):
        m.update([torch.from_numpy(x) for x in ba[1]], [torch.from_numpy(y) for y in bb[1]])
    assert m.n_batches == 1 and torch.equal(m.hsic_ab, before)


def test_small_batch_is_rejected_with_a_fix():
    ba, bb = make_batches([3], seed=12)
    with pytest.raises(ValueError, match=r"at least 4.*batch_size"):
        run(ba, bb)


def test_mismatched_examples_quote_shapes():
    m = MinibatchCKA()
    with pytest.raises(ValueError, match=r"\(10, 5\).*\(9, 2\)"):
        m.update([torch.zeros(10, 5)], [torch.zeros(9, 2)])
    with pytest.raises(ValueError, match=r"\(10, 5\), \(8, 5\)"):
        m.update([torch.zeros(10, 5), torch.zeros(8, 5)])


def test_layer_count_and_mode_must_stay_fixed():
    rng = np.random.default_rng(13)
    x = [torch.from_numpy(rng.standard_normal((8, 4))) for _ in range(3)]
    m = MinibatchCKA()
    m.update(x[:2], x[2:])
    with pytest.raises(ValueError, match="first update had 2"):
        m.update(x, x[2:])
    with pytest.raises(ValueError, match="self-comparison|first update"):
        m.update(x[:2])
    with pytest.raises(ValueError, match="names_a has 2 names"):
        MinibatchCKA(["p", "q"]).update(x)
    with pytest.raises(TypeError, match="list or tuple"):
        m.update(x[0], x[1])


def test_compute_before_update_raises():
    with pytest.raises(RuntimeError, match="update"):
        MinibatchCKA().compute()


def test_no_warning_for_healthy_layers():
    ba, bb = make_batches([16], seed=14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(ba, bb)


def test_torch_thread_count_is_restored():
    ba, bb = make_batches([12, 12], seed=15, dtype=np.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        m = MinibatchCKA(route="gram")
        m.update([torch.from_numpy(x) for x in ba[0]], [torch.from_numpy(y) for y in bb[0]])
        assert torch.get_num_threads() == 2
        ba[1][2][0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            m.update([torch.from_numpy(x) for x in ba[1]], [torch.from_numpy(y) for y in bb[1]])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
