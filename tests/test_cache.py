"""The result cache: hits skip the models, any change misses, killed runs resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import ForwardCounter, make_tiny, random_images

import vitlens
import vitlens.similarity.run as _cka_run
from vitlens import cache as vcache
from vitlens.api import cka_stream
from vitlens.cli import main

HERE = Path(__file__).parent






Counter = ForwardCounter  # counts without a hook: a user's hook turns the cache off


def _run(vit, cnn, images, **kw):
    kw = {"batch_size": 6, "progress": False, **kw}
    return vitlens.cka(vit, images, cnn, **kw)


def test_hit_returns_same_result_without_running_the_models(tmp_path):
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(18)
    count = Counter(vit, cnn)
    fresh = _run(vit, cnn, images, cache=False)
    assert count.take() == 6  # 3 batches x 2 models
    assert not any(vcache.cache_dir().glob("*/*"))  # cache=False writes nothing
    first = _run(vit, cnn, images)
    assert count.take() == 6
    second = _run(vit, cnn, images)
    assert count.take() == 0  # a hit: no forward pass at all
    np.testing.assert_array_equal(first.matrix, fresh.matrix)
    np.testing.assert_array_equal(second.matrix, first.matrix)
    assert second.layers_a == first.layers_a and second.layers_b == first.layers_b
    assert second.meta == first.meta and len(first.meta["cache_key"]) == 40
    # a fresh copy of the same models (same seed) hits too: the key is content, not identity
    vit2, cnn2 = make_tiny("vit"), make_tiny("resnet")
    count2 = Counter(vit2, cnn2)
    third = _run(vit2, cnn2, [a.copy() for a in images])
    assert count2.n == 0
    np.testing.assert_array_equal(third.matrix, first.matrix)
    # cka_stream yields a hit once, complete
    streamed = list(cka_stream(vit, images, cnn, batch_size=6, progress=False))
    assert len(streamed) == 1 and "partial" not in streamed[0].meta
    assert count.take() == 0
    count.close()
    count2.close()


def _perturb_weights(vit, cnn):
    with torch.no_grad():
        vit.blocks[1].mlp.fc2.bias[0] += 1e-3  # in place: the weight hash (recomputed every call) must notice


def _swap_storage(vit, cnn):
    vit.blocks[0].norm1.weight.data = vit.blocks[0].norm1.weight.data * 1.01


CHANGES = {
    "weights_in_place": (_perturb_weights, {}),
    "weights_data_assignment": (_swap_storage, {}),
    "one_pixel": (None, {"images": "pixel"}),
    "fewer_images": (None, {"n_images": 16}),
    "layers_a": (None, {"layers_a": "all"}),
    "layers_b": (None, {"layers_b": ["layer1.0", "layer4.0"]}),
    "token_mode": (None, {"token_mode": "mean"}),
    "batch_size": (None, {"batch_size": 9}),
    "precision": (None, {"precision": "bfloat16"}),
    "other_model_b": (None, {"model_b": "convnext"}),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_any_change_misses(change):
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(18)
    base = _run(vit, cnn, images)
    mutate, kw = CHANGES[change]
    if mutate is not None:
        mutate(vit, cnn)
    kw = dict(kw)
    if kw.get("images") == "pixel":
        images = [a.copy() for a in images]
        images[7][3, 5, 1] ^= 1
        kw.pop("images")
    if kw.get("model_b") == "convnext":
        cnn = make_tiny("convnext")
        kw.pop("model_b")
    count = Counter(vit, cnn)
    other = _run(vit, cnn, images, **kw)
    assert count.n > 0, f"{change}: served from the cache"
    assert other.meta["cache_key"] != base.meta["cache_key"]
    count.close()


def test_model_fingerprint_tracks_weights():
    a, b = make_tiny("vit", seed=0), make_tiny("vit", seed=0)
    c = make_tiny("vit", seed=1)
    fa = vcache.model_fingerprint(a)
    assert fa == vcache.model_fingerprint(b) != vcache.model_fingerprint(c)
    with torch.no_grad():
        a.pos_embed.mul_(1.0)  # an in-place no-op still bumps the version: rehash, same hash
    assert vcache.model_fingerprint(a) == fa
    with torch.no_grad():
        a.pos_embed[0, 0, 0] += 0.5
    assert vcache.model_fingerprint(a) != fa


def test_cached_constant_layer_still_warns():
    model = make_tiny("vit")
    with torch.no_grad():  # blocks.1 output: the same for every image
        for norm in (model.blocks[1].norm1, model.blocks[1].norm2):
            norm.weight.zero_()
            norm.bias.zero_()
        model.blocks[0].mlp.fc2.weight.zero_()
        model.blocks[0].attn.proj.weight.zero_()
        model.patch_embed.proj.weight.zero_()
    with pytest.warns(RuntimeWarning, match="blocks"):
        first = vitlens.cka(model, random_images(8), batch_size=8, progress=False)
    with pytest.warns(RuntimeWarning, match="blocks.1.*cached"):
        again = vitlens.cka(model, random_images(8), batch_size=8, progress=False)
    np.testing.assert_array_equal(again.matrix, first.matrix)  # NaN where first has NaN


def test_broken_cache_file_is_a_miss():
    vit = make_tiny("vit")
    first = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    path = vcache.result_path("cka", first.meta["cache_key"])
    path.write_bytes(b"not an npz")
    count = Counter(vit)
    again = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    assert count.n == 2
    np.testing.assert_array_equal(again.matrix, first.matrix)


def test_cache_directory_and_switch(monkeypatch, tmp_path):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "mine"))
    assert vcache.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("VITLENS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert vcache.cache_dir() == tmp_path / "xdg" / "vitlens"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert vcache.cache_dir() == tmp_path / "home" / ".cache" / "vitlens"
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "off"))
    monkeypatch.setenv("VITLENS_CACHE", "0")
    vitlens.cka(make_tiny("vit"), random_images(8), batch_size=4, progress=False)
    assert not (tmp_path / "off").exists()


def test_cli_cache_clear_empties_only_vitlens_files(tmp_path, capsys):
    vitlens.cka(make_tiny("vit"), random_images(8), batch_size=4, progress=False)
    vitlens.cka(make_tiny("deit"), random_images(8), batch_size=4, progress=False)
    root = vcache.cache_dir()
    (root / "notes.txt").write_text("keep me")
    assert len(list((root / "cka").glob("*.npz"))) == 2
    assert main(["cache", "dir"]) == 0
    assert capsys.readouterr().out.strip() == str(root)
    assert main(["cache"]) == 0
    assert "2 files" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 2 cached files" in capsys.readouterr().out
    assert not (root / "cka").exists() and (root / "notes.txt").read_text() == "keep me"
    count = Counter(vit := make_tiny("vit"))
    vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    assert count.n == 2 and vcache.info()["files"] == 1  # recomputed, stored again
    count.close()


# --------------------------------------------------------------------------- resume

KILLER = """
import os, signal, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from tiny_models import ForwardCounter, make_tiny, random_images
import vitlens
import vitlens.similarity.run as _cka_run
_cka_run.CHECKPOINT_EVERY_S = 0.0   # checkpoint after every batch
vit, cnn = make_tiny("vit"), make_tiny("resnet")
def kill(n):
    if n == {kill_after}:   # killed (SIGKILL: no cleanup) during batch {kill_after}
        os.kill(os.getpid(), signal.SIGKILL)
ForwardCounter(vit, on_call=kill)   # not a hook: a hook would turn the cache off
vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5, progress=False)
"""


def test_killed_run_resumes_from_its_last_batch(tmp_path, monkeypatch):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=str(HERE), kill_after=5))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = list(vcache.cache_dir().glob("cka/*.ckpt.pt"))
    assert len(ckpts) == 1 and not list(vcache.cache_dir().glob("cka/*.npz"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed process
    try:
        vit, cnn = make_tiny("vit"), make_tiny("resnet")
        count = Counter(vit)
        resumed = vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5,
                              progress=False)
        assert count.take() == 4  # 8 batches, 4 done before the kill (killed in the 5th)
        reference = vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5,
                                progress=False, cache=False)
        assert count.take() == 8
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(resumed.matrix, reference.matrix)  # exactly
    assert not list(vcache.cache_dir().glob("cka/*.ckpt.pt"))  # removed when complete
    assert len(list(vcache.cache_dir().glob("cka/*.npz"))) == 1


def test_interrupted_stream_resumes(monkeypatch):
    # a closed stream checkpoints at once, however recent the last periodic checkpoint
    monkeypatch.setattr(_cka_run, "CHECKPOINT_EVERY_S", 3600.0)
    vit, cnn = make_tiny("vit"), make_tiny("resnet")
    images = random_images(24)
    stream = cka_stream(vit, images, cnn, batch_size=4, progress=False)
    for _ in range(2):  # two of six batches, then the viewer is closed
        next(stream)
    stream.close()
    count = Counter(vit, cnn)
    rest = list(cka_stream(vit, images, cnn, batch_size=4, progress=False))
    assert count.take() == 8  # the 4 remaining batches, 2 models
    assert rest[0].meta["partial"]["batches_done"] == 3 and "partial" not in rest[-1].meta
    assert rest[-1].meta["n_images"] == 24
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = vitlens.cka(vit, images, cnn, batch_size=4, progress=False, cache=False)
    np.testing.assert_allclose(rest[-1].matrix, reference.matrix, rtol=0, atol=1e-12)


def test_only_the_images_used_are_fingerprinted():
    vit = make_tiny("vit")
    images = random_images(18)
    first = vitlens.cka(vit, images, n_images=16, batch_size=8, progress=False)
    images[17] = 255 - images[17]  # not among the 16 used
    count = Counter(vit)
    again = vitlens.cka(vit, images, n_images=16, batch_size=8, progress=False)
    assert count.n == 0
    np.testing.assert_array_equal(again.matrix, first.matrix)
    images[15] = 255 - images[15]  # used: a miss
    vitlens.cka(vit, images, n_images=16, batch_size=8, progress=False)
    assert count.n == 2
    count.close()
