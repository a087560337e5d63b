"""Gram work inside the forward hooks gives the engine's sums, and the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hsic_reference import hsic1
from tiny_models import make_tiny, random_images

from vitlens.capture import Capture, GramCapture
from vitlens.errors import CaptureError
from vitlens.similarity import MinibatchCKA, accumulate_rows


def _batches(n_batches: int, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 32, 32, generator=g) for _ in range(n_batches)]


def test_rows_accumulate_to_the_engine_sums_and_the_reference():
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    xs = _batches(3)
    plain, hooked = MinibatchCKA(), MinibatchCKA()
    feats_a, feats_b = [], []
    with Capture(vit, "all") as ca, Capture(cnn, "blocks") as cb, \
            GramCapture(vit, "all", token_mode="flatten") as ga, \
            GramCapture(cnn, "blocks", token_mode="flatten") as gb:
        for x in xs:
            fa, fb = ca.run(x), cb.run(x)
            plain.update(list(fa.values()), list(fb.values()))
            feats_a.append([t.double().numpy() for t in fa.values()])
            feats_b.append([t.double().numpy() for t in fb.values()])
            ra, rb = ga.run(x), gb.run(x)
            assert list(ra) == ca.layers and list(rb) == cb.layers
            n = x.shape[0]
            assert all(r.shape == (n * (n - 1) // 2,) and r.dtype == torch.float64
                       for r in [*ra.values(), *rb.values()])
            accumulate_rows(hooked, list(ra.values()), list(rb.values()), n)
    for key in ("hsic_ab", "hsic_aa", "hsic_bb"):
        torch.testing.assert_close(getattr(hooked, key), getattr(plain, key), rtol=1e-12,
                                   atol=1e-12)
    assert (hooked.n_examples, hooked.n_batches) == (24, 3)
    # independent float64 reference: size-weighted mean HSIC_1 over batches
    la, lb = len(feats_a[0]), len(feats_b[0])
    kl, kk, ll = np.zeros((la, lb)), np.zeros(la), np.zeros(lb)
    for fa, fb in zip(feats_a, feats_b, strict=True):
        ka = [f @ f.T for f in fa]
        kb = [f @ f.T for f in fb]
        for i in range(la):
            kk[i] += 8 * hsic1(ka[i], ka[i])
            for j in range(lb):
                kl[i, j] += 8 * hsic1(ka[i], kb[j])
        for j in range(lb):
            ll[j] += 8 * hsic1(kb[j], kb[j])
    ref = kl / np.sqrt(np.outer(kk, ll))
    np.testing.assert_allclose(hooked.compute().numpy(), ref, atol=1e-6)


def test_self_comparison_rows():
    model = make_tiny("mixer")
    xs = _batches(2, size=6, seed=1)
    plain, hooked = MinibatchCKA(), MinibatchCKA()
    with Capture(model, "all") as cap, GramCapture(model, "all", token_mode="flatten") as gcap:
        for x in xs:
            plain.update(list(cap.run(x).values()))
            accumulate_rows(hooked, list(gcap.run(x).values()), None, x.shape[0])
    assert hooked.self_comparison and hooked.hsic_bb is hooked.hsic_aa
    m_plain, m_hooked = plain.compute().numpy(), hooked.compute().numpy()
    np.testing.assert_allclose(m_hooked, m_plain, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(m_hooked), 1.0, atol=1e-12)


def test_gram_is_float32_even_under_autocast():
    vit = make_tiny("vit")
    x = _batches(1)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with Capture(vit, ["blocks.1.attn"]) as cap:
            feat = cap.run(x)["blocks.1.attn"]  # bfloat16 activations
        with GramCapture(vit, ["blocks.1.attn"], token_mode="flatten") as gcap:
            row = gcap.run(x)["blocks.1.attn"]
    assert feat.dtype == torch.bfloat16
    f = feat.double().numpy()
    f = f - f.mean(axis=0)
    K = f @ f.T  # the Gram of the bfloat16 values, in float64
    n = K.shape[0]
    Kt = K.copy()
    np.fill_diagonal(Kt, 0.0)
    r = Kt.sum(axis=1)
    U = Kt - (r[:, None] + r[None, :]) / (n - 2) + r.sum() / ((n - 1) * (n - 2))
    iu = np.triu_indices(n, 1)
    # a bfloat16 Gram would be off by ~1e-2 relative; float32 agrees to ~1e-6
    np.testing.assert_allclose(row.numpy(), U[iu], rtol=0, atol=1e-5 * np.abs(U).max())


def test_non_finite_layer_is_named():
    vit = make_tiny("vit")
    with torch.no_grad():
        vit.blocks[1].norm1.weight.fill_(float("nan"))
    with GramCapture(vit, "all", token_mode="flatten") as gcap:
        with pytest.raises(CaptureError, match="'blocks.1.norm1'.*non-finite"):
            gcap.run(_batches(1)[0])


def test_end_to_end_uses_hooks_and_matches_the_plain_path(monkeypatch):
    import vitlens
    from vitlens import _cka_run

    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(20)
    hooked = vitlens.cka(vit, images, cnn, layers_a="all", batch_size=7, progress=False,
                         cache=False)
    monkeypatch.setattr(_cka_run, "GRAM_IN_HOOKS", False)
    plain = vitlens.cka(vit, images, cnn, layers_a="all", batch_size=7, progress=False,
                        cache=False)
    np.testing.assert_allclose(hooked.matrix, plain.matrix, rtol=0, atol=1e-12)


def test_prefetching_the_next_batch_changes_nothing(monkeypatch):
    import threading

    import vitlens
    from vitlens import _cka_run
    from vitlens.api import cka_stream

    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(20)
    monkeypatch.setattr(_cka_run, "PREFETCH", False)
    plain = vitlens.cka(vit, images, cnn, batch_size=5, progress=False, cache=False)
    monkeypatch.setattr(_cka_run, "PREFETCH", True)
    loaded = []
    orig = _cka_run.CKARun._load

    def spy(self, idx):
        loaded.append((idx.start, threading.current_thread().name))
        return orig(self, idx)

    monkeypatch.setattr(_cka_run.CKARun, "_load", spy)
    fetched = vitlens.cka(vit, images, cnn, batch_size=5, progress=False, cache=False)
    np.testing.assert_array_equal(fetched.matrix, plain.matrix)
    assert [s for s, _ in loaded] == [0, 5, 10, 15]
    assert all(name.startswith("vitlens-prefetch") for _, name in loaded)
    stream = cka_stream(vit, images, cnn, batch_size=5, progress=False, cache=False)
    next(stream)
    stream.close()  # waits for the batch being loaded; no thread is left behind
    assert not [t for t in threading.enumerate() if t.name.startswith("vitlens-prefetch")]


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_auto_precision_keeps_bfloat16_only_within_tolerance(monkeypatch, tolerance):
    import vitlens
    from vitlens import _cka_run

    monkeypatch.setattr(_cka_run, "AMP_TOLERANCE", tolerance)
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(18)
    kw = dict(batch_size=6, progress=False, cache=False)
    auto = vitlens.cka(vit, images, cnn, precision="auto", **kw)
    fp32 = vitlens.cka(vit, images, cnn, **kw)
    bf16 = vitlens.cka(vit, images, cnn, precision="bfloat16", **kw)
    assert np.abs(bf16.matrix - fp32.matrix).max() > 1e-6  # bfloat16 does change the values
    note = auto.meta["precision"]
    if tolerance == 0.0:  # any difference is too much: float32 throughout
        assert note.startswith("float32 (auto: max |CKA difference| of bfloat16 on batch 1")
        np.testing.assert_allclose(auto.matrix, fp32.matrix, rtol=0, atol=1e-12)
    else:  # batch 1 in float32 (the test), batches 2 and 3 in bfloat16
        assert note.startswith("bfloat16 (auto")
        assert 0 < np.abs(auto.matrix - fp32.matrix).max()
        assert not np.allclose(auto.matrix, bf16.matrix, rtol=0, atol=1e-12)


def test_in_place_residual_add_is_seen_before_it_happens(monkeypatch):
    """timm's bottleneck adds the shortcut into bn3's output in place; the hook path reduces
    that output before the add (so needs no clone), as the cloning plain path sees it."""
    import vitlens
    from vitlens import _cka_run

    model = make_tiny("resnet_bottleneck")
    images = random_images(12)
    hooked = vitlens.cka(model, images, layers_a="all", batch_size=6, progress=False,
                         cache=False)
    monkeypatch.setattr(_cka_run, "GRAM_IN_HOOKS", False)
    plain = vitlens.cka(model, images, layers_a="all", batch_size=6, progress=False,
                        cache=False)
    np.testing.assert_allclose(hooked.matrix, plain.matrix, rtol=0, atol=1e-12)
    i, j = hooked.layers_a.index("layer1.0.branch"), hooked.layers_a.index("layer1.0")
    assert hooked.matrix[i, j] < 0.999  # the branch is not the (post-add) unit output
