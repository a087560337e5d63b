"""The habits PyTorch users bring: DataLoaders as images, any nn.Module with module names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import create_transform, resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vitlens
from tests.tiny_models import make_tiny, random_images
from vitlens.errors import ImageError
from vitlens.models import with_data_config
from vitlens.similarity import MinibatchCKA

KW = dict(batch_size=6, progress=False, cache=False)


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 3, 32, 32))).float()


@pytest.mark.parametrize("batch", ["pairs", "images", "dicts"])
def test_cka_of_a_dataloader_equals_the_tensor_path(batch):
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    x = _pixels(18)
    labels = torch.arange(18) % 3
    if batch == "pairs":  # (image, label) batches, as torchvision datasets give
        loader = DataLoader(TensorDataset(x, labels), batch_size=5)
    elif batch == "images":  # bare image batches
        loader = DataLoader(list(x), batch_size=4)
    else:
        loader = DataLoader([{"image": xi, "label": li} for xi, li in zip(x, labels, strict=True)],
                            batch_size=7)
    want = vitlens.cka(vit, x, cnn, layers_a="all", **KW)
    got = vitlens.cka(vit, loader, cnn, layers_a="all", **KW)
    assert got.matrix.shape == want.matrix.shape
    np.testing.assert_allclose(got.matrix, want.matrix, rtol=0, atol=1e-12)
    src = vitlens.datasets.as_images(loader)
    if batch != "images":
        np.testing.assert_array_equal(src.labels, labels.numpy())


def test_a_dataloader_of_uint8_images_is_preprocessed_per_model():
    vit = make_tiny("vit")
    imgs = random_images(12)
    loader = DataLoader(torch.from_numpy(np.stack(imgs)), batch_size=5)  # (b, H, W, 3) uint8
    want = vitlens.cka(vit, imgs, layers_a="all", **KW)
    got = vitlens.cka(vit, loader, layers_a="all", **KW)
    np.testing.assert_allclose(got.matrix, want.matrix, rtol=0, atol=1e-12)


def test_a_dataloader_of_non_images_is_refused_clearly():
    with pytest.raises(ImageError, match="DataLoader batch 0 holds a tensor of shape"):
        vitlens.datasets.as_images(DataLoader(torch.zeros(8, 5), batch_size=4))


class _Net(nn.Module):
    """Not a timm model: a torchvision-style ``features`` stack (with an in-place ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(12, 16, 3, stride=2, padding=1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))

    def forward(self, x):
        return self.head(self.features(x))


def _reference(model: nn.Module, names: list[str], x: torch.Tensor, bs: int,
               dtype: torch.dtype) -> np.ndarray:
    """Forward hooks by hand (cloned outputs), the engine's Gram route fed batch by batch."""
    mods = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = [mods[n].register_forward_hook(
        lambda _m, _i, out, n=n: store.__setitem__(n, out.detach().clone())) for n in names]
    eng = MinibatchCKA(route="gram")
    try:
        for idx in vitlens.datasets.balanced_batches(len(x), bs):
            with torch.no_grad():
                model(x[idx.start:idx.stop])
            eng.update([store[n].to(dtype) for n in names])
    finally:
        for h in handles:
            h.remove()
    return eng.compute().numpy()


def test_any_module_with_explicit_names_matches_hooks_by_hand():
    net = with_data_config(_Net().eval(), input_size=(3, 32, 32), mean=(0.5, 0.4, 0.3),
                           std=(0.2, 0.25, 0.3))
    names = ["features.0", "features.2", "features.4", "head.2"]
    imgs = random_images(18)
    raw = vitlens.cka(net, imgs, layers_a=names, **KW)  # raw images: net's own data config
    tf = create_transform(**resolve_model_data_config(net), is_training=False)
    from PIL import Image

    x = torch.stack([tf(Image.fromarray(a)) for a in imgs])
    tensor = vitlens.cka(net, x, layers_a=names, **KW)
    assert raw.layers_a == names
    np.testing.assert_allclose(raw.matrix, tensor.matrix, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tensor.matrix, _reference(net, names, x, 6, torch.float32),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(tensor.matrix, _reference(net, names, x, 6, torch.float64),
                               rtol=0, atol=1e-6)  # float32 Grams: ~1e-7 from float64
    # against a timm model too, and with token modes that need the layout
    vit = make_tiny("vit")
    cross = vitlens.cka(net, x, vit, layers_a=names, token_mode="mean", **KW)
    assert cross.matrix.shape == (4, len(cross.layers_b)) and np.isfinite(cross.matrix).all()


def test_unsupported_module_errors_say_how_to_use_it():
    net = _Net()
    with pytest.raises(TypeError, match=r"explicit module names.*with_data_config"):
        vitlens.layer_catalog(net)
    with pytest.raises(TypeError, match=r"layers_a=\['features.3'"):
        vitlens.cka(net, _pixels(8), **KW)
    with pytest.raises(KeyError, match=r"\['features.O'\] are not modules.*Close matches"):
        vitlens.cka(net, _pixels(8), layers_a=["features.O"], **KW)
    with pytest.raises(ValueError, match="with_data_config"):  # raw images need a data config
        vitlens.cka(net, random_images(8), layers_a=["features.0"], **KW)


def test_version_flag(capsys):
    from vitlens.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vitlens {vitlens.__version__}"
