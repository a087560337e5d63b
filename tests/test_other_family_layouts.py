"""Models outside the detailed families fall back to timm's ``feature_info`` stages, and
their layouts are read from each activation: Swin's and SAM's maps are NHWC, CaiT's blocks are
tokens without a CLS token, CNNs are NCHW. EVA (tokens behind a CLS token) has the ViT
catalog now, and its points are read the same way.

Before, every fallback stage was taken as NCHW, so ``token_mode="mean"`` averaged the wrong
axes (Swin's block CKA came out 0.25 where it is 0.999). The reference here pools each hooked
activation by hand, with the layout the architecture is known to have, and computes the
unbiased-HSIC CKA (Song et al. 2012) in float64 on one batch.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from hsic_reference import cka1

import vitlens
from vitlens.capture.activations import resolved
from vitlens.errors import CaptureError

torch.set_num_threads(1)

CASES = {  # label: (timm name, kwargs, known layout, prefix tokens inside the blocks)
    "swin (NHWC stages)": ("swin_tiny_patch4_window7_224",
                           dict(img_size=64, window_size=4, embed_dim=32, depths=(1, 1, 1, 1),
                                num_heads=(1, 1, 1, 1)), "nhwc", 0),
    "eva02 (tokens, CLS)": ("eva02_tiny_patch14_224", dict(img_size=64, patch_size=8, depth=2),
                            "tokens", 1),
    "cait (tokens, no CLS in its blocks)": ("cait_xxs24_224",
                                            dict(img_size=64, patch_size=8, depth=2), "tokens", 0),
    "regnet (NCHW; its 32-channel stem map is 32x32)": ("regnetx_002", {}, "nchw", 0),
}




def _pool(t: torch.Tensor, layout: str, npt: int) -> np.ndarray:
    t = t.double()
    if layout == "nchw":
        return t.mean((2, 3)).numpy()
    if layout == "nhwc":
        return t.mean((1, 2)).numpy()
    return t[:, npt:].mean(1).numpy()


@pytest.mark.parametrize("label", list(CASES))
def test_fallback_stages_are_pooled_over_their_own_spatial_axes(label):
    arch, kw, layout, npt = CASES[label]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kw).eval()
    catalog = vitlens.layer_catalog(model)
    assert catalog.family == ("vit" if arch.startswith("eva") else "other")
    names = [p.name for p in catalog.points]
    images = torch.randn(12, 3, 64, 64)
    seen: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(catalog[n].module).register_forward_hook(
        lambda _m, _i, out, n=n: seen.__setitem__(n, out.detach().clone())) for n in names]
    try:
        res = vitlens.cka(model, images, layers_a=names, token_mode="mean", batch_size=12,
                          progress=False, cache=False)
    finally:
        for h in hooks:
            h.remove()
    def prefix(n):  # the patch embedding comes before the CLS token is prepended
        return 0 if n == "patch_embed" else npt

    feats = [_pool(seen[n], layout, prefix(n)) for n in names]
    ref = np.array([[cka1(a, b) for b in feats] for a in feats])
    np.testing.assert_allclose(res.matrix, ref, rtol=0, atol=1e-8)
    for n in names:
        point = resolved(seen[n], catalog[n], catalog.grid_size)
        assert point.layout == layout, n
        assert point.num_prefix_tokens == (prefix(n) if layout == "tokens" else 0), n


def test_cls_mode_follows_the_tokens_actually_there():
    images = torch.randn(8, 3, 64, 64)
    eva = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=64,
                            patch_size=8, depth=2).eval()
    res = vitlens.cka(eva, images, token_mode="cls", layers_a=["blocks.0", "blocks.1"],
                      batch_size=8, progress=False, cache=False)
    assert np.isfinite(res.matrix).all()
    cait = timm.create_model("cait_xxs24_224", pretrained=False, img_size=64, patch_size=8,
                             depth=2).eval()
    with pytest.raises(CaptureError, match="no CLS/prefix token"):
        vitlens.cka(cait, images, token_mode="cls", layers_a=["blocks.0"], batch_size=8,
                    progress=False, cache=False)


def test_a_map_whose_channels_fit_no_axis_is_an_error_not_a_guess():
    from vitlens.models.catalog import LayerPoint

    point = LayerPoint("stage", "feature", "stage", layout="auto", channels=48)
    with pytest.raises(CaptureError, match="neither axis 1"):
        resolved(torch.zeros(2, 32, 8, 8), point)
    with pytest.raises(CaptureError, match="channels but tokens"):
        resolved(torch.zeros(2, 64, 32), point)
    both = LayerPoint("stem", "feature", "stem", layout="auto", channels=8, map_layout="nhwc")
    assert resolved(torch.zeros(2, 8, 8, 8), both).layout == "nhwc"  # the declared format


def test_receptive_field_of_a_swin_stage_is_read_at_its_own_centre():
    """ERF reads the centre position of the map; for NHWC it must index H and W, not C."""
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64,
                              window_size=4, embed_dim=32, depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 1, 1)).eval()
    images = torch.randn(2, 3, 64, 64)
    erf = vitlens.analyses.effective_receptive_field(model, images, layers=["layers.0"],
                                                     progress=False)
    x = images.clone().requires_grad_(True)
    out = model.layers[0](model.patch_embed(x))  # (2, 16, 16, 32) NHWC
    out[:, 8, 8, :].sum().backward()
    ref = x.grad.abs().mean((0, 1)).double().numpy()
    got = erf.erf[0]
    np.testing.assert_allclose(got / got.sum(), ref / ref.sum(), rtol=1e-4, atol=1e-7)
