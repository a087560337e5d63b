"""mean_attention_distance refuses what is not attention probabilities, naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vitlens.analyses import mean_attention_distance


def _probs(b=2, h=3, grid=3, npt=1, seed=0, dtype=torch.float32):
    n = npt + grid * grid
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, n, generator=g).softmax(dim=-1).to(dtype)


def test_valid_float32_and_float16_softmax_pass():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        out = mean_attention_distance(_probs(dtype=dtype), 3, 16, num_prefix_tokens=1)
        assert out.shape == (3,) and bool(torch.isfinite(out).all())
        assert float(out.max()) <= float(np.hypot(2, 2) * 16)  # never beyond the grid


def test_rows_that_do_not_sum_to_one_are_refused_with_their_sums():
    attn = _probs()
    attn[1, 2, 4] *= 13.0  # main: about 13 times the grid's maximum distance, silently
    with pytest.raises(ValueError, match=r"sum to 1.*between 1 and 13 \(image 1, head 2, "
                                         r"query 4: 13"):
        mean_attention_distance(attn, 3, 16, num_prefix_tokens=1)


def test_spatial_slice_of_a_cls_model_is_refused():
    attn = _probs()[..., 1:, 1:]  # the CLS column dropped: rows sum to less than 1
    with pytest.raises(ValueError, match="prefix tokens included"):
        mean_attention_distance(attn, 3, 16, num_prefix_tokens=0)


def test_logits_are_refused():
    logits = torch.randn(1, 2, 10, 10)
    with pytest.raises(ValueError, match="negative values.*not attention logits"):
        mean_attention_distance(logits, 3, 16, num_prefix_tokens=1)


def test_nan_and_inf_are_counted():
    attn = _probs().double().numpy()
    attn[0, 0, 0, 0] = np.nan
    attn[1, 1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="1 NaN and 1 inf"):
        mean_attention_distance(attn, 3, 16, num_prefix_tokens=1)


def test_float32_rounding_is_tolerated_but_not_more():
    attn = _probs()
    attn[0, 0, 0] *= 1.0 + 5e-4
    mean_attention_distance(attn, 3, 16, num_prefix_tokens=1)
    attn[0, 0, 0] *= 1.0 + 5e-3
    with pytest.raises(ValueError, match="within 0.001"):
        mean_attention_distance(attn, 3, 16, num_prefix_tokens=1)


def test_renormalize_with_a_query_that_looks_only_at_cls_is_refused():
    attn = _probs(npt=1)
    attn[0, 1, 3] = 0.0
    attn[0, 1, 3, 0] = 1.0  # all of query 3's attention goes to CLS
    mean_attention_distance(attn, 3, 16, num_prefix_tokens=1)  # fine without renormalising
    with pytest.raises(ValueError, match="1 spatial queries give no attention"):
        mean_attention_distance(attn, 3, 16, num_prefix_tokens=1, renormalize=True)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"grid_size": 0}, "grid_size must be a positive int"),
    ({"grid_size": (3, 3.0)}, "grid_size must be"),
    ({"patch_size": -16}, "patch_size must be"),
    ({"num_prefix_tokens": -1}, "num_prefix_tokens must be an int >= 0"),
    ({"num_prefix_tokens": 2}, "N=10 tokens but a 3x3 grid with 2 prefix tokens needs 11"),
])
def test_sizes_and_prefix_are_checked(kwargs, match):
    args = {"grid_size": 3, "patch_size": 16, "num_prefix_tokens": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        mean_attention_distance(_probs(), **args)


def test_empty_attention_is_refused():
    with pytest.raises(ValueError, match="empty"):
        mean_attention_distance(torch.zeros(0, 3, 10, 10), 3, 16, num_prefix_tokens=1)


@pytest.mark.parametrize("analysis", ["attention_distance", "attention_locality"])
def test_images_off_a_dynamic_size_vits_grid_are_refused_with_the_fix(analysis):
    """A dynamic_img_size ViT runs on 96x80 images (a 12x10 grid); the statistics are
    defined on its own 8x8 grid, so the images must be refused, not misread."""
    import timm

    from vitlens import analyses
    from vitlens.errors import ImageError

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                              patch_size=8, depth=2, dynamic_img_size=True).eval()
    fn = getattr(analyses, analysis)
    with pytest.raises(ImageError, match=r"96x80 px, a 12x10 patch grid.*own 8x8 grid "
                                         r"\(64x64 px\); resize the images to 64x64"):
        fn(model, torch.randn(4, 3, 96, 80), progress=False)
    assert np.isfinite(fn(model, torch.randn(4, 3, 64, 64), progress=False).arrays[
        "distance" if analysis == "attention_distance" else "local_ratio"]).all()
