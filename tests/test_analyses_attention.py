"""Attention maps, rollout, mean attention distance and head subsets vs a CNN.

References are written here independently: timm's own unfused attention path (read at
``attn_drop`` / ``proj``), explicit Python loops over patches, and direct ``linear_cka``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading

import numpy as np
import pytest
import torch
from tiny_models import make_tiny

from vitlens.analyses import (
    AttentionCapture,
    AttentionDistanceResult,
    HeadSubsetResult,
    attention_distance,
    attention_maps,
    attention_rollout,
    head_subset_cka,
    mean_attention_distance,
)
from vitlens.errors import CaptureError, NotApplicableError
from vitlens.results import load_result
from vitlens.similarity import linear_cka

VITS = ("vit", "deit", "vit_gap")


@contextlib.contextmanager
def unfused(model):
    """timm's explicit softmax path on every block; records the probabilities at attn_drop."""
    store, handles, flags = [], [], []
    try:
        for blk in model.blocks:
            flags.append(blk.attn.fused_attn)
            blk.attn.fused_attn = False
            handles.append(blk.attn.attn_drop.register_forward_hook(
                lambda _m, _i, out: store.append(out.detach().clone())))
        yield store
    finally:
        for h in handles:
            h.remove()
        for blk, flag in zip(model.blocks, flags, strict=False):
            blk.attn.fused_attn = flag


def loop_distance(attn: np.ndarray, h: int, w: int, ph: int, pw: int, npt: int,
                  renormalize: bool = False) -> np.ndarray:
    """Mean attention distance with explicit loops over images, heads, queries and keys."""
    b_n, heads = attn.shape[:2]
    out = np.zeros(heads)
    cells = list(itertools.product(range(h), range(w)))
    for hd in range(heads):
        total = 0.0
        for b in range(b_n):
            for i, (yi, xi) in enumerate(cells):
                row = attn[b, hd, npt + i, npt:]
                if renormalize:
                    row = row / row.sum()
                for j, (yj, xj) in enumerate(cells):
                    total += row[j] * math.hypot((yi - yj) * ph, (xi - xj) * pw)
        out[hd] = total / (b_n * len(cells))
    return out


@pytest.mark.parametrize("family", VITS)
def test_maps_equal_timm_unfused_path_and_outputs_unchanged(family):
    model = make_tiny(family)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    flags = [blk.attn.fused_attn for blk in model.blocks]
    with torch.no_grad():
        before = model(x)
        with unfused(model) as ref:
            model(x)
    assert [blk.attn.fused_attn for blk in model.blocks] == flags  # restored
    maps = attention_maps(model, x)
    npt = 1 if family == "vit" else 2 if family == "deit" else 0
    assert maps.shape == (2, 3, 2, npt + 16, npt + 16)
    torch.testing.assert_close(maps, torch.stack(ref), rtol=0, atol=1e-6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 2, npt + 16), rtol=0, atol=1e-5)
    with torch.no_grad(), AttentionCapture(model) as cap:
        during = model(x)
        kept = cap.collect()
    assert torch.equal(before, during)
    torch.testing.assert_close(torch.stack([kept[0], kept[1]]), maps, rtol=0, atol=0)
    assert all(len(blk.attn._forward_pre_hooks) == 0 for blk in model.blocks)
    with torch.no_grad():
        assert torch.equal(model(x), before)


def test_capture_block_selection_errors_and_cleanup(tiny_vit):
    x = torch.randn(2, 3, 32, 32)
    maps = attention_maps(tiny_vit, x, blocks=-1, as_dict=True)
    assert list(maps) == [1]
    with pytest.raises(IndexError, match="out of range"):
        attention_maps(tiny_vit, x, blocks=[2])
    # the forward pass only reaches block 0: block 1 is named as missing
    with AttentionCapture(tiny_vit) as cap, torch.no_grad():
        tiny_vit.blocks[0](torch.randn(2, 17, 32))
        with pytest.raises(CaptureError, match=r"blocks \[1\]"):
            cap.collect()
    # hooks are removed when the forward pass raises midway (after block 0's hook fired)
    def boom(*_args):
        raise ValueError("boom")

    handle = tiny_vit.blocks[0].mlp.register_forward_hook(boom)
    with pytest.raises(ValueError, match="boom"), AttentionCapture(tiny_vit) as cap:
        cap.run(x)
    handle.remove()
    assert all(len(blk.attn._forward_pre_hooks) == 0 for blk in tiny_vit.blocks)


def test_attention_capture_ignores_other_threads(tiny_vit):
    """While run() stops early in this thread, another thread's forward runs to the end."""
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tiny_vit(x[:1])
    seen = []

    def reduce(block, probs, v):
        if not seen:  # mid-forward of run(): the model is used by another thread meanwhile
            box = {}
            t = threading.Thread(target=lambda: box.update(out=_no_grad_call(tiny_vit, x[:1])))
            t.start()
            t.join()
            seen.append(box.get("out"))
        return probs

    with AttentionCapture(tiny_vit, [0], reduce=reduce, stop_early=True) as cap:
        maps = cap.run(x)
    assert maps[0].shape == (4, 2, 17, 17)
    assert seen[0] is not None  # no _StopForward and no foreign maps in the other thread
    torch.testing.assert_close(seen[0], want)


def _no_grad_call(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("family", ["resnet", "mixer"])
def test_not_applicable(family):
    model = make_tiny(family)
    with pytest.raises(NotApplicableError, match="no timm self-attention"):
        attention_maps(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(NotApplicableError):
        attention_distance(model, torch.randn(4, 3, 32, 32), progress=False)


def test_rollout_by_hand():
    g = np.random.default_rng(0)
    maps = g.random((3, 2, 4, 5, 5))  # (L, B, H, N, N)
    maps /= maps.sum(-1, keepdims=True)
    got = attention_rollout(torch.tensor(maps)).numpy()
    for b in range(2):
        ref = np.eye(5)
        for layer in range(3):
            a = np.zeros((5, 5))
            for h in range(4):
                a += maps[layer, b, h] / 4
            a = a + np.eye(5)
            for i in range(5):
                a[i] /= a[i].sum()
            ref = a @ ref
        np.testing.assert_allclose(got[b], ref, rtol=1e-12)
    # identity maps roll out to the identity; max fusion and discarding keep rows stochastic
    eye = torch.eye(5).expand(2, 4, 5, 5)
    torch.testing.assert_close(attention_rollout(eye), torch.eye(5, dtype=torch.float64))
    out = attention_rollout(torch.tensor(maps[:, 0]), head_fusion="max", discard_ratio=0.5)
    torch.testing.assert_close(out.sum(-1), torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(torch.tensor(maps), head_fusion="median")


def test_uniform_attention_gives_mean_pairwise_distance():
    k, patch = 3, 4
    s = k * k
    attn = torch.full((2, 3, s, s), 1.0 / s, dtype=torch.float64)
    pairs = [math.hypot((a // k - b // k) * patch, (a % k - b % k) * patch)
             for a in range(s) for b in range(s)]
    expected = sum(pairs) / len(pairs)
    got = mean_attention_distance(attn, k, patch)
    torch.testing.assert_close(got, torch.full((3,), expected, dtype=torch.float64))
    identity = torch.eye(s).expand(2, 3, s, s)
    assert torch.equal(mean_attention_distance(identity, (k, k), patch), torch.zeros(3, dtype=torch.float64))


def test_prefix_tokens_excluded_and_renormalization():
    k, patch, npt = 2, 8, 1
    s, n = k * k, k * k + 1
    attn = torch.full((1, 1, n, n), 1.0 / n, dtype=torch.float64)  # spatial queries give 1/n of their mass to CLS
    attn[0, 0, 0] = 0.0
    attn[0, 0, 0, -1] = 1.0  # the CLS query row must not count
    pair_sum = sum(math.hypot((a // k - b // k) * patch, (a % k - b % k) * patch)
                   for a in range(s) for b in range(s))
    plain = mean_attention_distance(attn, k, patch, num_prefix_tokens=npt)
    renorm = mean_attention_distance(attn, k, patch, num_prefix_tokens=npt, renormalize=True)
    assert plain.item() == pytest.approx(pair_sum / (s * n), rel=1e-12)  # not renormalised
    assert renorm.item() == pytest.approx(pair_sum / (s * s), rel=1e-12)


def test_non_square_grid_and_numpy_in_numpy_out():
    g = np.random.default_rng(1)
    h, w, npt = 2, 3, 2
    n = npt + h * w
    attn = g.random((2, 3, n, n))
    attn /= attn.sum(-1, keepdims=True)
    got = mean_attention_distance(attn, (h, w), (4, 6), num_prefix_tokens=npt)
    assert isinstance(got, np.ndarray) and got.shape == (3,)
    np.testing.assert_allclose(got, loop_distance(attn, h, w, 4, 6, npt), rtol=1e-12)
    np.testing.assert_allclose(
        mean_attention_distance(attn, (h, w), (4, 6), npt, renormalize=True),
        loop_distance(attn, h, w, 4, 6, npt, renormalize=True), rtol=1e-12)


def test_mismatched_grid_raises():
    attn = torch.full((1, 2, 17, 17), 1 / 17)
    with pytest.raises(ValueError, match="N=17 tokens but a 3x3 grid"):
        mean_attention_distance(attn, 3, 8, num_prefix_tokens=1)
    with pytest.raises(ValueError, match=r"\(B, H, N, N\)"):
        mean_attention_distance(attn[0], 4, 8, num_prefix_tokens=1)


@pytest.mark.parametrize("family", ["deit", "vit_gap"])
def test_attention_distance_streams_to_the_loop_reference(family, tmp_path):
    model = make_tiny(family)
    x = torch.randn(7, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    npt = int(model.num_prefix_tokens)
    with torch.no_grad(), unfused(model) as ref:
        model(x)
    expected = np.stack([loop_distance(a.double().numpy(), 4, 4, 8, 8, npt) for a in ref])
    res = attention_distance(model, x, batch_size=3, progress=False)
    assert isinstance(res, AttentionDistanceResult) and res.distance.shape == (2, 2)
    np.testing.assert_allclose(res.distance, expected, rtol=1e-6)
    df = res.to_dataframe()
    assert list(df.columns) == ["block", "head", "distance", "rank"]
    assert df.groupby("block")["rank"].apply(sorted).map(list).tolist() == [[0, 1], [0, 1]]
    lowest = df[df["rank"] == 0].set_index("block")["distance"]
    np.testing.assert_allclose(lowest.to_numpy(), expected.min(axis=1), rtol=1e-6)
    # merge of two shards equals the run over all images; save/load keeps everything
    a = attention_distance(model, x[:4], progress=False)
    b = attention_distance(model, x[4:], progress=False)
    np.testing.assert_allclose(a.merge(b).distance, expected, rtol=1e-6)
    back = load_result(res.save(tmp_path / "dist"))
    assert isinstance(back, AttentionDistanceResult) and back.blocks == [0, 1]
    np.testing.assert_array_equal(back.distance, res.distance)
    assert res.chart().to_dict()["layer"][1]["mark"]["type"] == "circle"
    assert res.chart(kind="blocks").to_dict()["mark"]["type"] == "circle"


def test_head_subsets_against_direct_linear_cka(tmp_path):
    vit, cnn = make_tiny("deit"), make_tiny("resnet")
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    # independent features: timm's unfused path, read at the input of attn.proj
    heads_in, cnn_out = [], {}
    blk = vit.blocks[0]
    hooks = [blk.attn.proj.register_forward_pre_hook(lambda _m, a: heads_in.append(a[0].clone())),
             cnn.maxpool.register_forward_hook(lambda _m, _i, o: cnn_out.update(stem=o.clone())),
             cnn.layer1[0].register_forward_hook(lambda _m, _i, o: cnn_out.update(u=o.clone()))]
    with unfused(vit) as probs, torch.no_grad():
        vit(x)
        cnn(x)
    for h in hooks:
        h.remove()
    head_dist = loop_distance(probs[0].double().numpy(), 4, 4, 8, 8, 2)
    res = head_subset_cka(vit, cnn, x, subset_size=1, batch_size=12, progress=False)
    assert isinstance(res, HeadSubsetResult)
    assert res.cka.shape == (2, 2) and res.cnn_layers == ["stem", "layer1.0"]
    np.testing.assert_allclose(res.arrays["head_distance"], head_dist, rtol=1e-6)
    assert res.subsets[:, 0].tolist() == np.argsort(head_dist).tolist()
    assert np.all(np.diff(res.subset_distance) >= 0)
    hd = heads_in[0].shape[-1] // 2
    for s, (head,) in enumerate(res.subsets):
        feats = heads_in[0][:, :, head * hd:(head + 1) * hd].reshape(12, -1)
        for j, key in enumerate(("stem", "u")):
            ref = linear_cka(feats.double(), cnn_out[key].reshape(12, -1).double())
            assert res.cka[s, j] == pytest.approx(ref, abs=1e-6)
    back = load_result(res.save(tmp_path / "subsets"))
    np.testing.assert_array_equal(back.cka, res.cka)
    assert back.to_dataframe().shape == (4, 5)
    res.chart().to_dict()


def test_head_subset_windows_are_ordered_local_to_global():
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    dist = np.array([5.0, 1.0, 3.0, 2.0])
    vit.blocks[0].attn.num_heads = 2  # keep the model intact; distances are passed in
    with pytest.raises(ValueError, match="has 2 heads"):
        head_subset_cka(vit, cnn, torch.randn(4, 3, 32, 32), head_distances=dist,
                        progress=False)
    from vitlens.analyses import head_subsets

    windows = head_subsets(dist, 2)
    assert windows.tolist() == [[1, 3], [3, 2], [2, 0]]
    means = dist[windows].mean(axis=1)
    assert np.all(np.diff(means) > 0)
    with pytest.raises(ValueError, match="subset_size"):
        head_subsets(dist, 5)
