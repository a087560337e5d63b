"""The vitlens command line: cka writes a loadable result file and PNG/SVG heatmaps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import vitlens
from vitlens.cli import main


def test_cka_command_writes_result_and_figures(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["cka", "--model-a", "vit_tiny_patch16_224", "--model-b", "resnet18",
                 "--random-init", "--images", "samples", "--samples", "8", "--batch-size", "8",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    res = vitlens.SimilarityResult.load(out / "cka.npz")
    assert res.matrix.shape == (12, 8)
    assert res.meta["model_a"] == "vit_tiny_patch16_224" and res.meta["n_images"] == 8
    assert np.isfinite(res.matrix).all()
    png = (out / "cka.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    svg = (out / "cka.svg").read_text()
    assert "<svg" in svg and "blocks.11" in svg


def test_cka_command_reports_bad_input(tmp_path, capsys):
    code = main(["cka", "--model-a", "resnet19", "--random-init", "--images", "samples",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "resnet18" in capsys.readouterr().err  # close match suggested
    (tmp_path / "imgs").mkdir()
    code = main(["cka", "--model-a", "resnet18", "--random-init",
                 "--images", str(tmp_path / "imgs"), "--out", str(tmp_path)])
    assert code == 2
    assert "no image files" in capsys.readouterr().err


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "vitlens", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "cka" in out.stdout and "reproduce" in out.stdout


def _forbid_run(monkeypatch):
    import vitlens.api

    def _no(*args, **kwargs):
        raise AssertionError("the CKA run started although the command line was unusable")

    monkeypatch.setattr(vitlens.api, "cka", _no)


def test_out_pointing_at_a_file_fails_before_the_run(tmp_path, capsys, monkeypatch):
    _forbid_run(monkeypatch)
    user_file = tmp_path / "notes.txt"
    user_file.write_text("my notes")
    for out in (user_file, user_file / "sub"):
        code = main(["cka", "--model-a", "resnet18", "--random-init", "--images", "samples",
                     "--out", str(out), "--no-progress"])
        assert code == 2
        err = capsys.readouterr().err
        assert "--out" in err and "notes.txt" in err
        assert "not a folder" in err or "is a file" in err
    assert user_file.read_text() == "my notes"
    code = main(["reproduce", "--out", str(user_file), "--quick", "--no-progress"])
    assert code == 2 and "not a folder" in capsys.readouterr().err


def test_device_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    import torch

    _forbid_run(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["cka", "--model-a", "resnet18", "--random-init", "--images", "samples",
                 "--out", str(tmp_path / "o"), "--device", "cuda", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no CUDA GPU is available" in err and "--device cpu" in err
    code = main(["cka", "--model-a", "resnet18", "--random-init", "--images", "samples",
                 "--out", str(tmp_path / "o"), "--device", "gpu0", "--no-progress"])
    assert code == 2 and "not a torch device" in capsys.readouterr().err


def test_offline_pretrained_name_names_the_weights_flag(tmp_path, capsys, monkeypatch):
    import socket

    import huggingface_hub.constants
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network"))
    _forbid_run(monkeypatch)
    code = main(["cka", "--model-a", "resnet18.a1_in1k", "--images", "samples",
                 "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--weights-a /path/to/model.safetensors" in err and "HF_HUB_OFFLINE" in err
    code = main(["cka", "--model-a", "vitlens/resnet", "--model-b", "resnet18.a1_in1k",
                 "--images", "samples", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    assert "--weights-b /path/to/model.safetensors" in capsys.readouterr().err


def test_a_missing_image_folder_fails_before_any_model_loads(tmp_path, capsys, monkeypatch):
    import vitlens.models

    monkeypatch.setattr(vitlens.models, "load_model",
                        lambda *a, **k: pytest.fail("a model was loaded before the images"))
    code = main(["cka", "--model-a", "resnet18", "--random-init",
                 "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--batch-size", "--n-images", "--samples"])
def test_counts_must_be_positive(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cka", "--model-a", "resnet18", "--random-init", "--images", "samples",
              "--out", str(tmp_path), flag, "0"])
    assert exc.value.code == 2
    assert f"{flag}: must be a whole number >= 1, got '0'" in capsys.readouterr().err
