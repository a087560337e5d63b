"""The cache never deletes what it did not write, never serves another key's or a damaged
entry, and misses after any change to a model's structure (issue 11, defects 1, 3, 4, 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import ForwardCounter, make_tiny, random_images
from torch import nn

import vitlens
import vitlens.similarity.run as cka_run
from vitlens import cache as vcache
from vitlens.cache_keys import NO_CACHE


class Counter(ForwardCounter):
    """Counts forward passes of a model (tiny_models.ForwardCounter: no hook, and the
    model's code unchanged, both of which would change its cache key)."""

    def __init__(self, model: nn.Module, monkeypatch=None) -> None:
        super().__init__(model)


def _cka(model, n=8, **kw):
    return vitlens.cka(model, random_images(n), batch_size=4, progress=False, **kw)


# --------------------------------------------------------------------------- 1: clear

def test_cli_cache_clear_spares_the_users_files(tmp_path, monkeypatch):
    """The issue's command: a user's models/resnet50.pth in the cache folder survives."""
    shared = tmp_path / "shared"
    (shared / "models").mkdir(parents=True)
    (shared / "models" / "resnet50.pth").write_text("w\n")
    env = {**os.environ, "VITLENS_CACHE_DIR": str(shared), "OMP_NUM_THREADS": "1"}
    # a real entry of vitlens's own in the same folder
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(shared))
    entry = vcache.result_path("cka", _cka(make_tiny("vit")).meta["cache_key"])
    assert entry.is_file()
    # user files that the old substring match (".pt", ".npz", ".tmp") would have deleted
    users = {
        "models/resnet50.pth": b"w\n",
        "models/" + "a" * 40 + ".npz": b"mine",  # a key-like name, in a folder vitlens lacks
        "notes.tmp": b"draft",
        "runs/scores.npz": b"scores",
        "cka/my_matrix.npz": b"mine too",  # in vitlens's folder, but not one of its names
        "cka/" + "b" * 40 + ".npz.bak": b"backup",
    }
    for rel, data in users.items():
        (shared / rel).parent.mkdir(parents=True, exist_ok=True)
        (shared / rel).write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "vitlens", "cache", "clear"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "removed 1 cached file " in proc.stdout
    assert not entry.exists()
    for rel, data in users.items():
        assert (shared / rel).read_bytes() == data, f"{rel} was touched"


def test_clear_touches_only_tagged_kind_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path))
    key = "c" * 40
    # an untagged folder with vitlens-like names: not vitlens's, so not cleared
    (tmp_path / "cka").mkdir()
    (tmp_path / "cka" / f"{key}.npz").write_bytes(b"x")
    (tmp_path / "cka" / f"{key}.r0of1.ckpt.pt").write_bytes(b"y")
    assert vcache.clear() == 0 and vcache.info()["files"] == 0
    assert (tmp_path / "cka" / f"{key}.npz").read_bytes() == b"x"


# --------------------------------------------------------------------------- 3: wrong key

def test_entry_copied_over_another_keys_file_is_not_served(monkeypatch):
    vit = make_tiny("vit")
    big, small = _cka(vit, n=16), _cka(vit, n=8)
    assert big.meta["n_images"] == 16 and small.meta["n_images"] == 8
    path_big = vcache.result_path("cka", big.meta["cache_key"])
    path_small = vcache.result_path("cka", small.meta["cache_key"])
    path_small.write_bytes(path_big.read_bytes())  # the 16-image entry under the 8-image key
    assert vcache.load_result("cka", small.meta["cache_key"]) is None
    count = Counter(vit, monkeypatch)
    again = _cka(vit, n=8)
    assert count.take() == 2, "the wrong entry was served"
    assert again.meta["n_images"] == 8
    np.testing.assert_array_equal(again.matrix, _cka(vit, n=8, cache=False).matrix)
    hit = vcache.load_result("cka", small.meta["cache_key"])  # stored right this time
    assert hit is not None and hit.meta["n_images"] == 8


# --------------------------------------------------------------------------- 4: structure

def test_replacing_a_parameter_free_module_misses(monkeypatch):
    vit = make_tiny("vit")
    before = _cka(vit, layers_a="all")
    fp = vcache.model_fingerprint(vit)
    vit.blocks[1].mlp.act = nn.ReLU()  # no tensor changes at all
    assert vcache.model_fingerprint(vit) != fp
    count = Counter(vit, monkeypatch)
    after = _cka(vit, layers_a="all")
    assert count.take() == 2, "served the pre-change matrix"
    reference = _cka(vit, layers_a="all", cache=False)
    np.testing.assert_array_equal(after.matrix, reference.matrix)
    assert np.nanmax(np.abs(after.matrix - before.matrix)) > 1e-4


@pytest.mark.parametrize("change", ["scale", "approximate", "eps", "drop_path_swap"])
def test_other_structural_changes_change_the_fingerprint(change):
    vit = make_tiny("vit")
    fp = vcache.model_fingerprint(vit)
    if change == "scale":
        vit.blocks[0].attn.scale = vit.blocks[0].attn.scale * 2  # a plain attribute
    elif change == "approximate":
        vit.blocks[0].mlp.act = nn.GELU(approximate="tanh")  # only extra_repr differs
    elif change == "eps":
        vit.blocks[0].norm1.eps = 1e-3
    else:
        vit.blocks[0].drop_path1 = nn.Dropout(0.0)  # Identity -> Dropout: a class change
    assert vcache.model_fingerprint(vit) != fp
    twin = make_tiny("vit")  # an unchanged copy keeps the old fingerprint
    assert vcache.model_fingerprint(twin) == fp


def test_fingerprint_survives_forward_passes_and_a_removed_hook():
    vit = make_tiny("vit")
    fp = vcache.model_fingerprint(vit)
    with torch.no_grad():
        vit(torch.zeros(2, 3, 32, 32))
    assert vcache.model_fingerprint(vit) == fp
    handle = vit.blocks[0].register_forward_hook(lambda *_: None)
    # even a no-op hook turns the cache off: what a hook does cannot be fingerprinted
    hooked = vcache.model_fingerprint(vit)
    assert hooked.startswith(NO_CACHE) and "blocks.0" in hooked
    handle.remove()
    assert vcache.model_fingerprint(vit) == fp


# --------------------------------------------------------------------------- 6: bad content

def _damage(path: Path, how: str, rng: np.random.Generator) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random_bytes":
        path.write_bytes(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "empty":
        path.write_bytes(b"")
    else:  # "wrong_arrays": a readable .npz with the same record, other numbers
        with np.load(path, allow_pickle=False) as z:
            members = {k: z[k] for k in z.files}
        members["a_matrix"] = members["a_matrix"][::-1].copy()
        with open(path, "wb") as f:
            np.savez_compressed(f, **members)


@pytest.mark.parametrize("how", ["truncated", "random_bytes", "empty", "wrong_arrays"])
def test_bad_entry_is_discarded_recomputed_and_stored(how, monkeypatch):
    vit = make_tiny("vit")
    first = _cka(vit, layers_a="all")
    key = first.meta["cache_key"]
    path = vcache.result_path("cka", key)
    _damage(path, how, np.random.default_rng(0))
    assert vcache.load_result("cka", key) is None
    assert not path.exists(), "the bad entry was kept"
    path.write_bytes(b"garbage")  # and through a whole run
    count = Counter(vit, monkeypatch)
    again = _cka(vit, layers_a="all")
    assert count.take() == 2
    np.testing.assert_array_equal(again.matrix, first.matrix)
    hit = vcache.load_result("cka", key)
    assert hit is not None
    np.testing.assert_array_equal(hit.matrix, first.matrix)


def _interrupted_checkpoint(vit, images):
    """Run two of four batches of a stream, close it: a real checkpoint is left."""
    stream = vitlens.api.cka_stream(vit, images, batch_size=4, progress=False)
    next(stream)
    next(stream)
    stream.close()
    paths = list(vcache.cache_dir().glob("cka/*.ckpt.pt"))
    assert len(paths) == 1
    return paths[0]


@pytest.mark.parametrize("how", ["truncated", "random_bytes", "foreign_state", "other_key"])
def test_bad_checkpoint_is_a_fresh_start(how, monkeypatch):
    monkeypatch.setattr(cka_run, "CHECKPOINT_EVERY_S", 3600.0)
    vit = make_tiny("vit")
    images = random_images(16)
    reference = vitlens.cka(vit, images, batch_size=4, progress=False, cache=False)
    path = _interrupted_checkpoint(vit, images)
    key = path.name[:40]
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) - 7])
    elif how == "random_bytes":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 999, np.uint8).tobytes())
    elif how == "foreign_state":  # right key, a state the engine cannot take
        torch.save({"key": key, "done": 1, "engine": {"hsic_ab": torch.zeros(3)}}, path)
    else:  # a valid checkpoint of another key, under this key's name
        other = vcache.checkpoint_path("cka", "d" * 40)
        vcache.save_checkpoint(other, {"key": "d" * 40, "done": 1, "engine": {}})
        path.write_bytes(other.read_bytes())
    assert vcache.load_checkpoint(path) is None
    assert not path.exists(), "the bad checkpoint was kept"
    if how != "other_key":
        path.write_bytes(data[:100])  # and through a whole run
    count = Counter(vit, monkeypatch)
    result = vitlens.cka(vit, images, batch_size=4, progress=False)
    assert count.take() == 4  # every batch again: nothing was resumed from the bad file
    np.testing.assert_allclose(result.matrix, reference.matrix, rtol=0, atol=1e-12)
    assert not path.exists()  # the run completed: its checkpoint is gone


def test_cli_cache_clear_refuses_a_kind_that_is_a_path(tmp_path, monkeypatch, capsys):
    from vitlens.cli import main

    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ("e" * 40 + ".npz")).write_bytes(b"keep")
    assert main(["cache", "clear", "--kind", "../x"]) == 2
    assert "must be a simple name" in capsys.readouterr().err
    assert (tmp_path / "x" / ("e" * 40 + ".npz")).read_bytes() == b"keep"
