"""Bad argument values get errors naming the argument, the value and the fix; token_mode="mean"
pools in float64 (checked against a float64 reference with large channel offsets); the
warning for a NaN CKA row says what was measured."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hsic_reference import hsic1
from tiny_models import make_tiny

from vitlens.analyses import attention_distance
from vitlens.analyses._run import images_and_count, load
from vitlens.capture import apply_token_mode
from vitlens.datasets import balanced_batches
from vitlens.models import layer_catalog
from vitlens.similarity import ConstantLayerWarning, MinibatchCKA
from vitlens.similarity._run_checks import (
    check_batch_size,
    check_device,
    check_n_images,
    check_run_args,
)

# ---------------------------------------------------------------------------------------------
# n_images, batch_size, device
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "error", "words"), [
    (4.7, TypeError, r"n_images=4\.7 \(float\) is not a whole number; pass an int >= 1"),
    (True, TypeError, r"n_images=True \(bool\) is not a whole number"),
    ("8", TypeError, r"n_images='8' \(str\)"),
    (-2, ValueError, r"n_images=-2: pass a positive number of images"),
    (0, ValueError, r"n_images=0: pass a positive number"),
])
def test_bad_n_images_names_the_argument_and_the_fix(value, error, words):
    with pytest.raises(error, match=words):
        check_n_images(value)


def test_good_n_images_become_ints():
    assert check_n_images(None) is None
    assert check_n_images(np.int64(6)) == 6 and type(check_n_images(np.int64(6))) is int


@pytest.mark.parametrize(("value", "error", "words"), [
    (4.5, TypeError, r"batch_size=4\.5 \(float\) is not a whole number; pass an int >= 4"),
    (True, TypeError, r"batch_size=True \(bool\)"),
    (3, ValueError, r"batch_size=3 is too small: minibatch CKA needs batches of at least 4 "
                    r"images .*pass batch_size>=4"),
    (-1, ValueError, r"batch_size=-1 is too small"),
])
def test_bad_batch_size_names_the_argument_and_the_fix(value, error, words):
    with pytest.raises(error, match=words):
        check_batch_size(value)


def test_batch_size_minimum_is_the_callers():
    assert check_batch_size(2, minimum=1, what="attention distance") == 2
    with pytest.raises(ValueError, match="attention distance needs batches of at least 2"):
        check_batch_size(1, minimum=2, what="attention distance")


def test_cuda_without_a_gpu_names_the_device_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda': no CUDA GPU is available here .*"
                                         r"use device='cpu', or pass device=None"):
        check_device("cuda")
    with pytest.raises(ValueError, match=r"device='cuda:0'"):
        check_device(torch.device("cuda", 0))
    with pytest.raises(ValueError, match=r"--device 'cuda': .*use --device cpu, or leave "
                                         r"--device out"):
        check_device("cuda", flag="--device")
    with pytest.raises(ValueError, match=r"device='gpu0' is not a torch device"):
        check_device("gpu0")
    check_device(None)
    check_device("cpu")


def test_a_missing_cuda_index_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device='cuda:3': this machine has 1 CUDA device"):
        check_device("cuda:3")


def test_run_args_checked_before_any_image_or_model(monkeypatch):
    import vitlens.analyses._run as run

    monkeypatch.setattr(run, "as_images", lambda *a: pytest.fail("the images were read"))
    monkeypatch.setattr(run, "load_model", lambda *a: pytest.fail("a model was loaded"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x = torch.randn(8, 3, 32, 32)
    with pytest.raises(TypeError, match=r"n_images=4\.7"):
        images_and_count(x, 4.7)
    with pytest.raises(ValueError, match=r"n_images=-2"):
        images_and_count(x, -2)
    for kwargs, error, words in [({"n_images": 4.7}, TypeError, r"n_images=4\.7"),
                                 ({"n_images": True}, TypeError, r"n_images=True"),
                                 ({"batch_size": 4.5}, TypeError, r"batch_size=4\.5"),
                                 ({"device": "cuda"}, ValueError, r"device='cuda'")]:
        with pytest.raises(error, match=words):
            attention_distance("vitlens/vit-cls", x, progress=False, **kwargs)
    with pytest.raises(ValueError, match=r"device='cuda': no CUDA GPU"):
        load("vitlens/vit-cls", torch.device("cuda"))
    assert check_run_args(n_images=np.int64(8), batch_size=np.int32(4), device="cpu") == (8, 4)


def test_analysis_still_runs_with_numpy_ints():
    x = torch.randn(6, 3, 32, 32)
    res = attention_distance(make_tiny("vit"), x, n_images=np.int64(4), batch_size=np.int64(2),
                             device="cpu", progress=False)
    assert res.meta.get("n_images", 4) == 4


# ---------------------------------------------------------------------------------------------
# token_mode="mean" in float64
# ---------------------------------------------------------------------------------------------



def _gram(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(0)
    return x @ x.T


def test_mean_tokens_are_averaged_in_float64():
    model = make_tiny("vit")
    point = layer_catalog(model)["blocks.1"]
    x = torch.randn(4, 17, 32) + torch.tensor([1e5] * 4 + [0.0] * 28)  # a massive channel
    got = apply_token_mode(x, point, "mean")
    assert got.dtype == torch.float64
    want = x[:, 1:].double().mean(1)
    assert torch.equal(got, want)
    assert not torch.equal(x[:, 1:].mean(1).double(), want)  # float32 pooling differs


@pytest.mark.parametrize("offset", [1e4, 1e5])
def test_mean_cka_with_a_large_channel_offset_matches_a_float64_reference(offset):
    import vitlens

    torch.manual_seed(0)
    vit, res = make_tiny("vit"), make_tiny("resnet")
    with torch.no_grad():
        vit.patch_embed.proj.bias[:4] += offset  # "massive activations" in 4 channels
    x = torch.randn(32, 3, 32, 32)
    store: dict[str, np.ndarray] = {}
    hooks = [vit.blocks[1].register_forward_hook(
                 lambda m, a, o: store.__setitem__("v", o.detach().double().numpy())),
             res.layer2.register_forward_hook(
                 lambda m, a, o: store.__setitem__("r", o.detach().double().numpy()))]
    ab = aa = bb = 0.0
    try:
        for b in balanced_batches(32, 16):
            with torch.no_grad():
                vit(x[list(b)])
                res(x[list(b)])
            kv = _gram(store["v"][:, 1:].mean(1))  # float64 pooling of float32 activations
            kr = _gram(store["r"].mean((2, 3)))
            n = len(b)
            ab, aa, bb = ab + n * hsic1(kv, kr), aa + n * hsic1(kv, kv), bb + n * hsic1(kr, kr)
    finally:
        for h in hooks:
            h.remove()
    want = ab / np.sqrt(aa * bb)
    got = vitlens.cka(vit, x, res, layers_a=["blocks.1"], layers_b=["layer2"],
                      token_mode="mean", batch_size=16, progress=False, cache=False,
                      device="cpu").matrix[0, 0]
    assert abs(got - want) < 1e-9  # float32 pooling was off by 1.6e-4 (1e4) and 3.5e-3 (1e5)


# ---------------------------------------------------------------------------------------------
# a NaN row says what was measured
# ---------------------------------------------------------------------------------------------


def test_feature_route_reads_rounding_as_zero_only_at_the_rounding_scale():
    """A layer that varies in one of six examples has a zero U-centred Gram: the feature
    route's self-HSIC is exactly 0 (its terms cancel to +-1e-17 by the luck of the summation
    order, which made the NaN machine-dependent), while a real layer at any scale is kept."""
    from vitlens.similarity._engine import batch_hsic

    one = torch.tensor([[0.0], [0.0], [0.0], [0.0], [0.0], [1.0]], dtype=torch.float64)
    for scale in (1.0, 1e-60, 1e60):  # HSIC grows as scale^4: 1e60 stays finite
        _, aa, _, _, _ = batch_hsic([one * scale], None, gram_dtype=torch.float64,
                                    route="feature")
        assert float(aa[0]) == 0.0, scale
    rng = np.random.default_rng(1)
    x, y = (torch.from_numpy(rng.normal(size=(6, 3))) for _ in range(2))
    m = MinibatchCKA(route="feature")
    m.update([x], [y])
    want = m.compute()
    for scale in (1e-60, 1e60):  # CKA is scale-invariant: nothing snapped, nothing lost
        tiny = MinibatchCKA(route="feature")
        tiny.update([x * scale], [y])
        torch.testing.assert_close(tiny.compute(), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("route", ["gram", "feature"])
def test_degenerate_layer_warning_says_what_was_measured(route):
    x = torch.tensor([[0.0], [0.0], [0.0], [0.0], [0.0], [1.0]])  # not constant
    y = torch.from_numpy(np.random.default_rng(0).normal(size=(6, 3)))
    m = MinibatchCKA(route=route)
    m.update([x], [y])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = m.compute()
    assert torch.isnan(got).all()
    (w,) = [c for c in caught if issubclass(c.category, ConstantLayerWarning)]
    text = str(w.message)
    assert "unbiased HSIC with itself was 0 (to rounding) in every batch" in text
    assert "too few examples per batch" in text and "more or larger batches" in text
    assert "was constant over every batch" not in text
