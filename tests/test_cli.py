"""The vitlens command line: cka writes a loadable result file and PNG/SVG heatmaps."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

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
