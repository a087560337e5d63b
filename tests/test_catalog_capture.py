"""Layer catalogs and capture on tiny random-init models of every supported family."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_models import make_tiny

import vitlens
from vitlens.capture import Capture, CaptureError


def _all_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_every_point_fires_with_the_expected_shape(tiny_model):
    family, model = tiny_model
    catalog = vitlens.layer_catalog(model)
    x = torch.randn(3, 3, 32, 32)
    names = [p.name for p in catalog]
    with Capture(model, names, token_mode=None) as cap:
        raw = cap.run(x)
    assert list(raw) == names
    for point in catalog:
        t = raw[point.name]
        assert t.shape[0] == 3, point.name
        if point.layout == "tokens":
            assert t.dim() == 3
            grid = catalog.grid_size
            assert t.shape[1] == grid[0] * grid[1] + point.num_prefix_tokens, point.name
        elif point.layout == "tokens_t":
            assert t.dim() == 3 and t.shape[2] == catalog.grid_size[0] * catalog.grid_size[1]
        elif point.layout in ("nchw", "nhwc"):
            assert t.dim() == 4, point.name
    # the block-level points are the model's own blocks, in order, with matching outputs
    blocks = catalog.select("blocks")
    assert len(blocks) >= 2
    if family in ("vit", "deit", "vit_gap"):
        assert blocks == [f"blocks.{i}" for i in range(len(model.blocks))]
        # resid_mid (stream after attention) equals block input + attention output
        b0_in = raw["patch_embed"]
        assert raw["blocks.0.resid_mid"].shape == raw["blocks.0"].shape
        assert b0_in.shape[1] + model.num_prefix_tokens == raw["blocks.0"].shape[1]
        # MLP hidden is mlp_ratio times wider
        assert raw["blocks.0.mlp_hidden"].shape[-1] == 4 * raw["blocks.0"].shape[-1]
    assert _all_hooks(model) == 0


@pytest.mark.parametrize("family", ["vit", "deit", "vit_gap"])
def test_vit_catalog_has_paper_density(family):
    model = make_tiny(family)
    catalog = vitlens.layer_catalog(model)
    per_block = [p for p in catalog.select("all") if p.startswith("blocks.0.") or p == "blocks.0"]
    assert len(per_block) == 6  # norm1, attn, resid_mid, norm2, mlp_hidden, block output
    assert catalog.grid_size == (4, 4)


def test_resid_mid_is_stream_after_attention(tiny_vit):
    model = tiny_vit
    x = torch.randn(2, 3, 32, 32)
    with Capture(model, ["patch_embed", "blocks.0.attn", "blocks.0.resid_mid"],
                 token_mode=None) as cap:
        f = cap.run(x)
    # stream into block 0 = patch tokens with CLS and position embedding added
    with torch.no_grad():
        tokens = model._pos_embed(model.patch_embed(x))
    torch.testing.assert_close(f["blocks.0.resid_mid"], tokens + f["blocks.0.attn"])


def test_token_modes_on_vit(tiny_vit):
    x = torch.randn(5, 3, 32, 32)
    with Capture(tiny_vit, ["blocks.1"], token_mode=None) as cap:
        raw = cap.run(x)["blocks.1"]  # (5, 1 + 16, 32)
    expect = {
        "flatten": raw.reshape(5, -1),
        "cls": raw[:, 0],
        "mean": raw[:, 1:].double().mean(1),  # pooled in float64 (massive activations)
        "tokens": raw[:, 1:].reshape(-1, 32),
        "spatial": raw[:, 1:].reshape(5, 4, 4, 32),
    }
    for mode, want in expect.items():
        with Capture(tiny_vit, ["blocks.1"], token_mode=mode) as cap:
            got = cap.run(x)["blocks.1"]
        torch.testing.assert_close(got, want)


def test_token_modes_on_conv_maps():
    model = make_tiny("resnet")
    x = torch.randn(3, 3, 32, 32)
    with Capture(model, ["layer2.0"], token_mode=None) as cap:
        raw = cap.run(x)["layer2.0"]  # (3, C, H, W)
    n, c, h, w = raw.shape
    with Capture(model, ["layer2.0"], token_mode="spatial") as cap:
        sp = cap.run(x)["layer2.0"]
    torch.testing.assert_close(sp, raw.permute(0, 2, 3, 1))
    with Capture(model, ["layer2.0"], token_mode="mean") as cap:
        torch.testing.assert_close(cap.run(x)["layer2.0"], raw.double().mean((2, 3)))
    with pytest.raises(CaptureError, match="no CLS"):
        with Capture(model, ["layer2.0"], token_mode="cls") as cap:
            cap.run(x)


def test_resnet_branch_is_cloned_before_inplace_add():
    model = make_tiny("resnet")
    x = torch.randn(2, 3, 32, 32)
    blk = model.layer1[0]
    with Capture(model, ["stem", "layer1.0.branch", "layer1.0"], token_mode=None) as cap:
        f = cap.run(x)
    with torch.no_grad():
        z = f["stem"]
        branch = blk.bn2(blk.conv2(blk.act1(blk.bn1(blk.conv1(z)))))
    torch.testing.assert_close(f["layer1.0.branch"], branch)
    torch.testing.assert_close(f["layer1.0"], torch.relu(branch + z))


def test_hooks_removed_after_exception(tiny_vit):
    with pytest.raises(RuntimeError):
        with Capture(tiny_vit, "all") as cap:
            cap.run(torch.randn(2, 5, 32, 32))  # wrong channel count
    assert _all_hooks(tiny_vit) == 0


def _forward_in_thread(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in another thread; re-raises what it raised there."""
    box = {}

    def work():
        try:
            with torch.no_grad():
                box["out"] = model(x)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["err"] = err

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if "err" in box:
        raise box["err"]
    return box["out"]


def test_hooks_ignore_other_threads_forward_passes(tiny_vit):
    """The explorers share a model between a background CKA thread and the kernel thread."""
    from vitlens.capture import GramCapture

    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tiny_vit(x[:1])
    with GramCapture(tiny_vit, "blocks", token_mode="flatten") as gcap, \
            Capture(tiny_vit, "blocks", token_mode="cls") as cap:
        # one image in another thread: the Gram hooks (which need 4) must not see it
        got = _forward_in_thread(tiny_vit, x[:1])
        torch.testing.assert_close(got, want)
        assert cap._store == {} and cap._fired == {}
        feats = cap.run(x)
        assert {k: v.shape for k, v in feats.items()} == {"blocks.0": (6, 32), "blocks.1": (6, 32)}
        assert set(gcap.run(x)) == {"blocks.0", "blocks.1"}


def test_run_from_another_thread_captures_there(tiny_vit):
    """Entered in one thread, run() in another (a widget's worker): run() owns its pass."""
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with Capture(tiny_vit, "blocks", token_mode="cls") as cap:
        box = {}
        t = threading.Thread(target=lambda: box.update(feats=cap.run(x)))
        t.start()
        t.join()
    assert {k: tuple(v.shape) for k, v in box["feats"].items()} == {"blocks.0": (5, 32),
                                                                     "blocks.1": (5, 32)}


def test_layer_that_never_fires_is_an_error(tiny_vit):
    tiny_vit.blocks[1].forward = lambda x, *a, **k: x  # skip block 1's submodules
    with pytest.raises(CaptureError, match="never fired"):
        with Capture(tiny_vit, ["blocks.1.attn"]) as cap:
            cap.run(torch.randn(2, 3, 32, 32))


def test_non_finite_activation_is_an_error(tiny_vit):
    with torch.no_grad():
        tiny_vit.blocks[0].mlp.fc1.weight[0, 0] = float("nan")
    with pytest.raises(CaptureError, match="blocks.0"):
        with Capture(tiny_vit, ["blocks.0", "blocks.1"]) as cap:
            cap.run(torch.randn(2, 3, 32, 32))


def test_unknown_layer_suggests_close_matches(tiny_vit):
    catalog = vitlens.layer_catalog(tiny_vit)
    with pytest.raises(KeyError, match="blocks.1.attn"):
        catalog.select(["blocks.1.atn"])
    with pytest.raises(KeyError, match="Close matches"):
        catalog["blocks.0.mlp_hiden"]


def test_selectors(tiny_vit):
    catalog = vitlens.layer_catalog(tiny_vit)
    assert catalog.select("attn") == ["blocks.0.attn", "blocks.1.attn"]
    assert catalog.select(["blocks.1", "attn"]) == ["blocks.0.attn", "blocks.1.attn", "blocks.1"]
    assert catalog.select(None) == ["blocks.0", "blocks.1"]
    assert "blocks.0.mlp" not in catalog.select("all")


def test_any_timm_model_falls_back_to_feature_info():
    import timm

    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=3).eval()
    catalog = vitlens.layer_catalog(model)
    assert catalog.family == "other" and len(catalog) == 5
    with Capture(model, "blocks", token_mode="mean") as cap:
        feats = cap.run(torch.randn(2, 3, 32, 32))
    assert [f.shape[1] for f in feats.values()] == [i["num_chs"] for i in model.feature_info]
