"""load_model: timm names, local weights files (safetensors and torch), hub failures."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

import vitlens

TINY_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=5)


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_roundtrip(tmp_path, suffix):
    torch.manual_seed(1)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).eval()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    else:
        torch.save(src.state_dict(), path)
    loaded = vitlens.load_model("vit_tiny_patch16_224", weights=path, **TINY_VIT)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(src, x))
    assert not loaded.training


def test_augreg_tag_with_local_weights(tmp_path):
    """augreg ViTs are npz on the hub (custom_load): a local safetensors file must still load."""
    name = "vit_tiny_patch16_224.augreg_in21k"
    assert timm.models.get_pretrained_cfg(name).custom_load  # the case the overlay handles
    kw = dict(img_size=32, depth=2, num_classes=7)
    torch.manual_seed(2)
    src = timm.create_model(name, pretrained=False, **kw).eval()
    path = tmp_path / "augreg.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = vitlens.load_model(name, weights=path, **kw)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(src, x))


def test_bit_with_local_weights(tmp_path):
    name = "resnetv2_50x1_bit.goog_in21k"
    torch.manual_seed(3)
    src = timm.create_model(name, pretrained=False, num_classes=4).eval()
    path = tmp_path / "bit.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    loaded = vitlens.load_model(name, weights=path, num_classes=4)
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(loaded, x), _outputs(src, x))


def test_unknown_model_lists_close_matches():
    with pytest.raises(KeyError, match="vit_base_patch16_224"):
        vitlens.load_model("vit_bse_patch16_224")


def test_missing_and_corrupt_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        vitlens.load_model("resnet18", weights=tmp_path / "nope.safetensors")
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        vitlens.load_model("resnet18", weights=bad)
    bad_pt = tmp_path / "corrupt.pth"
    bad_pt.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="corrupt.pth"):
        vitlens.load_model("resnet18", weights=bad_pt)


def test_offline_hub_raises_weights_unavailable():
    code = (
        "import vitlens\n"
        "try:\n"
        "    vitlens.load_model('resnet18.a1_in1k')\n"
        "except vitlens.WeightsUnavailableError as e:\n"
        "    print('RAISED', e)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=env)
    assert "RAISED" in out.stdout, out.stderr[-2000:]
    assert "weights=" in out.stdout


def test_random_init_and_module_passthrough():
    model = vitlens.load_model("resnet18", pretrained=False, num_classes=3)
    assert not model.training
    assert vitlens.load_model(model) is model


# ----------------------------------------------------------------------------------------------
# Offline or unreachable hub: fail at once, without timm's download and retry path
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch, tmp_path):
    """Empty Hugging Face and torch hub caches; any download or connection fails the test."""
    import socket

    import huggingface_hub
    from huggingface_hub import constants
    from timm.models import _builder, _hub

    calls: list[str] = []

    def forbid(what):
        def _called(*args, **kwargs):
            calls.append(what)
            pytest.fail(f"{what} was called: the download / retry path was taken")
        return _called

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    for mod, attr in ((_builder, "load_state_dict_from_hf"), (_builder, "load_state_dict_from_url"),
                      (_builder, "download_cached_file"), (_hub, "hf_hub_download"),
                      (huggingface_hub, "hf_hub_download")):
        monkeypatch.setattr(mod, attr, forbid(f"{mod.__name__}.{attr}"))
    monkeypatch.setattr(socket, "create_connection", forbid("socket.create_connection"))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.mark.parametrize("name", ["resnet18.a1_in1k", "vit_tiny_patch16_224.augreg_in21k"])
def test_hf_hub_offline_fails_fast_without_download_or_retries(name, no_download, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(vitlens.WeightsUnavailableError,
                       match=r"HF_HUB_OFFLINE is set and no local copy.*weights="):
        vitlens.load_model(name)
    assert no_download == []


def test_unreachable_hub_fails_fast_after_one_short_probe(no_download, monkeypatch):
    import socket

    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    probes = []

    def refuse(address, timeout=None, *args, **kwargs):
        probes.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(vitlens.WeightsUnavailableError,
                       match=r"https://huggingface.co cannot be reached.*weights="):
        vitlens.load_model("resnet18.a1_in1k")
    assert probes == [(("huggingface.co", 443), 3.0)]
    assert no_download == []


def test_cached_hub_weights_still_load_offline(no_download, monkeypatch, tmp_path):
    """A local copy in the Hugging Face cache is used: the fast path never blocks it."""
    from huggingface_hub import constants, file_download
    from timm.models import _builder, _hub
    from timm.models._hub import load_state_dict_from_hf as real_from_hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # the real loaders back for this test (offline, they read the cache); sockets stay banned
    monkeypatch.setattr(_hub, "hf_hub_download", file_download.hf_hub_download)
    monkeypatch.setattr(_builder, "load_state_dict_from_hf", real_from_hf)
    ref = timm.create_model("resnet18", pretrained=False)
    snap = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    (snap / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(ref.state_dict(), str(snap / "snapshots" / ("0" * 40) / "model.safetensors"))
    model = vitlens.load_model("resnet18.a1_in1k")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(_outputs(model, x), _outputs(ref.eval(), x))
    assert no_download == []
