"""Issue 11 in the CKA path: hooks never outlive a batch, and bad inputs get clear errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

import vitlens
from tests.tiny_models import make_tiny, random_images
from vitlens.api import cka_stream
from vitlens.capture import count_hooks
from vitlens.errors import CaptureError, ImageError

KW = dict(batch_size=5, progress=False, cache=False)


def test_a_paused_stream_leaves_no_hook_on_the_models():
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    assert count_hooks(vit) == count_hooks(cnn) == 0
    stream = cka_stream(vit, random_images(20), cnn, layers_a="all", **KW)
    for _partial in stream:
        break  # the generator is still referenced (as an IPython traceback keeps it)
    assert count_hooks(vit) == 0 and count_hooks(cnn) == 0
    second = next(stream)  # it carries on where it paused
    assert second.meta["partial"]["batches_done"] == 2
    assert count_hooks(vit) == 0 and count_hooks(cnn) == 0
    rest = list(stream)
    assert "partial" not in rest[-1].meta
    full = vitlens.cka(vit, random_images(20), cnn, layers_a="all", **KW)
    np.testing.assert_allclose(rest[-1].matrix, full.matrix, rtol=0, atol=1e-12)


def test_tokens_mode_between_different_token_grids_says_so():
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    with pytest.raises(ValueError, match=r"token_mode='tokens'.*same number of tokens"):
        vitlens.cka(vit, random_images(8), cnn, token_mode="tokens", **KW)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_a_half_or_double_model_is_refused_with_the_fix(dtype):
    vit = make_tiny("vit").to(dtype)
    with pytest.raises(TypeError, match=rf"{str(dtype)[6:]} parameters.*model\.float\(\)"):
        vitlens.cka(vit, random_images(8), **KW)


def test_wrong_size_preprocessed_tensors_name_both_sizes():
    vit = make_tiny("vit")  # 32 x 32 inputs
    x = torch.randn(8, 3, 24, 24)
    with pytest.raises(ImageError, match=r"\(3, 24, 24\).*expects \(3, 32, 32\)"):
        vitlens.cka(vit, x, **KW)


@pytest.mark.parametrize("spec", [3, [0, 1], 2.5])
def test_a_non_string_layer_selector_is_a_clear_type_error(spec):
    vit = make_tiny("vit")
    with pytest.raises(TypeError, match="layer selector|must be strings"):
        vitlens.cka(vit, random_images(8), layers_a=spec, **KW)


def test_cls_mode_with_all_layers_skips_points_without_a_cls_token():
    vit = make_tiny("vit")
    with pytest.warns(UserWarning, match=r"skipping layers without a CLS token: \['patch_embed'\]"):
        res = vitlens.cka(vit, random_images(10), layers_a="all", token_mode="cls", **KW)
    assert "patch_embed" not in res.layers_a and "blocks.0.norm1" in res.layers_a
    i = res.layers_a.index("blocks.1")  # (block 0's norm1 sees the same CLS token in every
    assert np.isfinite(res.matrix[i, i:]).all()  # image: constant, a NaN row, as it should)
    with pytest.raises(CaptureError, match=r"\['patch_embed'\] have no CLS token"):
        vitlens.cka(vit, random_images(10), layers_a=["patch_embed", "blocks.0"],
                    token_mode="cls", **KW)
    with pytest.raises(CaptureError, match="no CLS token"):  # a CNN has none anywhere
        vitlens.cka(make_tiny("resnet"), random_images(10), token_mode="cls", **KW)


def test_result_files_are_bounded_before_any_array_is_read(tmp_path):
    res = vitlens.SimilarityResult(np.eye(2), ["a", "b"], ["a", "b"], {"model_a": "m"})
    path = res.save(tmp_path / "small.npz")
    assert vitlens.load_result(path).matrix.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="would expand to .* over the limit of 100"):
        vitlens.load_result(path, max_bytes=100)
    # a crafted file: a few hundred KB that would expand past the default limit
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        chunk = bytes(1 << 20)
        with dst.open("a_pad.npy", "w", force_zip64=True) as f:
            for _ in range(260):
                f.write(chunk)
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(ValueError, match="would expand to 27"):
        vitlens.SimilarityResult.load(bomb)
