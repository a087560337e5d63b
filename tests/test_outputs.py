"""Output folders: vitlens replaces only files it wrote (vitlens.outputs), and Result.save
never uses a name a user's file could have. (More in test_outputs_owned.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitlens import SimilarityResult
from vitlens.cli import main
from vitlens.outputs import CKA_OUTPUTS, OUT_MARKER, check_out
from vitlens.reproduce import reproduce

CKA = ["cka", "--model-a", "vitlens/vit-cls", "--images", "samples", "--samples", "4",
       "--batch-size", "4", "--no-progress", "--no-cache"]


def test_cka_out_refuses_a_users_files_then_replaces_its_own(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "cka.png").write_bytes(b"my own figure")
    assert main([*CKA, "--out", str(out)]) == 2  # a clear error, before any model is loaded
    assert (out / "cka.png").read_bytes() == b"my own figure"
    assert not (out / "cka.npz").exists()
    fresh = tmp_path / "fresh"
    assert main([*CKA, "--out", str(fresh)]) == 0
    files = json.loads((fresh / OUT_MARKER).read_text())["files"]  # the manifest
    assert sorted(files) == sorted(CKA_OUTPUTS)
    first = SimilarityResult.load(fresh / "cka.npz").matrix
    assert main([*CKA, "--out", str(fresh)]) == 0  # its own outputs: replaced
    np.testing.assert_allclose(SimilarityResult.load(fresh / "cka.npz").matrix, first)
    (fresh / "cka.svg").write_text("<svg>edited by the user</svg>")
    assert main([*CKA, "--out", str(fresh)]) == 2  # changed since vitlens wrote it: theirs
    assert (fresh / "cka.svg").read_text() == "<svg>edited by the user</svg>"
    assert main([*CKA, "--out", str(out), "--overwrite"]) == 0  # asked for
    assert (out / "cka.png").read_bytes() != b"my own figure"


def test_check_out_names_what_is_in_the_way(tmp_path):
    (tmp_path / "FINDINGS.md").write_text("my notes")
    with pytest.raises(ValueError, match=r"FINDINGS\.md.*--overwrite"):
        check_out(tmp_path, ("FINDINGS.md", "figures"))
    check_out(tmp_path, ("FINDINGS.md",), overwrite=True)
    check_out(tmp_path, ("figures",))  # nothing in the way
    (tmp_path / OUT_MARKER).write_text("vitlens writes its outputs in this folder; a later run "
                                       "with the same --out replaces them.\n")
    with pytest.raises(ValueError, match=r"FINDINGS\.md"):  # the old marker owns nothing
        check_out(tmp_path, ("FINDINGS.md",))


def test_reproduce_refuses_before_any_work(tmp_path, monkeypatch):
    import vitlens.reproduce as rep

    (tmp_path / "findings.json").write_text("[]")

    def no_work(*_a, **_k):  # pragma: no cover - must not be reached
        raise AssertionError("the analyses ran")

    monkeypatch.setattr(rep, "run_groups", no_work)
    with pytest.raises(ValueError, match="findings.json"):
        reproduce(tmp_path, quick=True, progress=False)
    assert (tmp_path / "findings.json").read_text() == "[]"


def test_result_save_leaves_a_users_temp_named_file_alone(tmp_path):
    user = tmp_path / "r.npz.tmp.npz"  # the fixed temporary name save() used to write
    user.write_bytes(b"user data")
    res = SimilarityResult(np.eye(2), ["a", "b"], ["a", "b"], {})
    path = res.save(tmp_path / "r.npz")
    assert user.read_bytes() == b"user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.npz", "r.npz.tmp.npz"]
    np.testing.assert_array_equal(SimilarityResult.load(path).matrix, np.eye(2))
