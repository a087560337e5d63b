"""The cache never serves a result that belongs to other weights, hooks, attributes or
images, never takes over a folder it did not create, and says when it skips an entry or a
call (review defects 1-6)."""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import pytest
import timm
import torch
from tiny_models import TINY, make_tiny, random_images
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import vitlens
from vitlens import cache as vcache
from vitlens.cache_keys import NO_CACHE, user_hooks
from vitlens.capture import Capture
from vitlens.datasets import as_images
from vitlens.datasets.loaders import LoaderImages


@pytest.fixture(scope="module")
def zoo_vit():
    return vitlens.load_model("vitlens/vit-cls")


def _cka(model, images=None, **kw):
    images = random_images(8, size=64) if images is None else images
    return vitlens.cka(model, images, batch_size=4, progress=False, **kw)


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, caught


def _cache_warnings(caught):
    return [str(w.message) for w in caught
            if issubclass(w.category, vcache.CacheUnavailableWarning)]


# --------------------------------------------------------------------------- 1: weights

@pytest.mark.parametrize("edit", ["data_zero", "data_mul", "numpy_view"])
def test_weight_edits_that_bump_no_version_counter_miss(edit):
    model = vitlens.load_model("vitlens/vit-cls")
    base = _cka(model)
    w = model.blocks[2].attn.proj.weight
    version = w._version
    if edit == "data_zero":
        w.data.zero_()
    elif edit == "data_mul":
        model.blocks[2].mlp.fc2.weight.data.mul_(-3.0)
    else:
        model.blocks[4].mlp.fc1.weight.detach().numpy()[:] = 0.0
    assert w._version == version  # the edit the old memo could not see
    after = _cka(model)
    fresh = _cka(model, cache=False)
    assert after.meta["cache_key"] != base.meta["cache_key"]
    np.testing.assert_array_equal(after.matrix, fresh.matrix)
    assert np.nanmax(np.abs(after.matrix - base.matrix)) > 1e-4


def test_fingerprint_follows_the_bytes_both_ways():
    model = make_tiny("vit")
    fp = vcache.model_fingerprint(model)
    w = model.blocks[0].mlp.fc1.weight
    saved = w.detach().clone()
    w.data[0, 0] += 1.0
    assert vcache.model_fingerprint(model) != fp
    w.data.copy_(saved)  # the same bytes again: the same fingerprint (content, not history)
    assert vcache.model_fingerprint(model) == fp


# --------------------------------------------------------------------------- 2: hooks

def _ablate(_mod, _inp, out):
    out = out.clone()
    out[..., : out.shape[-1] // 2] = 0
    return out


def _scale_input(_mod, args):
    return (args[0] * 0.5,)


@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_a_users_hook_turns_the_cache_off_for_that_call(zoo_vit, kind):
    base = _cka(zoo_vit)
    files = vcache.info()["files"]
    block = zoo_vit.blocks[2]
    handle = (block.register_forward_hook(_ablate) if kind == "forward"
              else block.register_forward_pre_hook(_scale_input))
    try:
        hooked, caught = _caught(lambda: _cka(zoo_vit))
        fresh = _cka(zoo_vit, cache=False)
    finally:
        handle.remove()
    msgs = _cache_warnings(caught)
    assert len(msgs) == 1, msgs
    name = "_ablate" if kind == "forward" else "_scale_input"
    assert "blocks.2" in msgs[0] and name in msgs[0] and "cache=False" in msgs[0], msgs[0]
    np.testing.assert_array_equal(hooked.matrix, fresh.matrix)
    assert np.nanmax(np.abs(hooked.matrix - base.matrix)) > 1e-4
    assert vcache.info()["files"] == files  # nothing stored for the hooked call
    again, caught = _caught(lambda: _cka(zoo_vit))  # hook removed: the cached base is back
    assert not _cache_warnings(caught)
    np.testing.assert_array_equal(again.matrix, base.matrix)


def test_cache_false_with_a_hook_says_nothing(zoo_vit):
    handle = zoo_vit.blocks[0].register_forward_hook(_ablate)
    try:
        _, caught = _caught(lambda: _cka(zoo_vit, cache=False))
    finally:
        handle.remove()
    assert not _cache_warnings(caught)


def test_a_global_hook_counts_too():
    model = make_tiny("vit")
    handle = nn.modules.module.register_module_forward_hook(_ablate)
    try:
        found = user_hooks(model)
    finally:
        handle.remove()
    assert found and "global forward hook _ablate" in found[0]
    assert not user_hooks(model)


def test_vitlens_capture_hooks_do_not_count():
    model = make_tiny("vit")
    fp = vcache.model_fingerprint(model)
    with Capture(model, "blocks") as cap:
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks)
                   for m in model.modules()) > 0
        assert user_hooks(model) == []
        assert vcache.model_fingerprint(model) == fp
        assert cap.active


# --------------------------------------------------------------------------- 3: attributes

class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.mask = torch.ones(8, 1, 1)  # a plain tensor attribute, not a buffer
        self.opts = {"gain": 1.0, "steps": [1, 2]}  # a dict attribute

    def forward(self, x):
        h = self.c1(x) * self.mask * self.opts["gain"]
        return self.c2(torch.relu(h))


def _cka_masked(net, **kw):
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return vitlens.cka(net, x, layers_a=["c1", "c2"], progress=False, **kw)


@pytest.mark.parametrize("change", ["tensor", "tensor_in_place", "dict", "nested_list"])
def test_tensor_and_dict_attributes_are_in_the_key(change):
    net = Masked().eval()
    base = _cka_masked(net)
    if change == "tensor":
        net.mask = torch.zeros(8, 1, 1)
        net.mask[:2] = 1
    elif change == "tensor_in_place":
        net.mask[:6] = 0
    elif change == "dict":
        net.opts["gain"] = -1.0
    else:
        net.opts["steps"].append(3)  # not read by forward: a miss, never a wrong hit
    after = _cka_masked(net)
    assert after.meta["cache_key"] != base.meta["cache_key"]
    np.testing.assert_array_equal(after.matrix, _cka_masked(net, cache=False).matrix)
    if change != "nested_list":
        assert np.nanmax(np.abs(after.matrix - base.matrix)) > 1e-3


def test_same_attribute_values_hit():
    a, b = Masked().eval(), Masked().eval()
    assert vcache.model_fingerprint(a) == vcache.model_fingerprint(b)
    b.mask = b.mask.double()  # same values, another dtype
    assert vcache.model_fingerprint(a) != vcache.model_fingerprint(b)


class Opaque:
    gain = 1.0


def test_an_attribute_that_cannot_be_fingerprinted_skips_the_cache():
    net = Masked().eval()
    net.helper = Opaque()
    fp = vcache.model_fingerprint(net)
    assert fp.startswith(NO_CACHE) and "helper" in fp and "Opaque" in fp
    result, caught = _caught(lambda: _cka_masked(net))
    msgs = _cache_warnings(caught)
    assert len(msgs) == 1 and "helper" in msgs[0] and "cache=False" in msgs[0], msgs
    assert vcache.info()["files"] == 0
    np.testing.assert_array_equal(result.matrix, _cka_masked(net, cache=False).matrix)


@dataclasses.dataclass
class Options:
    gain: float = 1.0
    extra: tuple = ()


def test_config_records_are_keyed_by_their_values():
    net = Masked().eval()
    net.cfg = Options()
    fp = vcache.model_fingerprint(net)
    assert not fp.startswith(NO_CACHE)
    net.cfg.gain = 2.0
    assert vcache.model_fingerprint(net) != fp
    net.cfg = Options(extra=(Opaque(),))  # an opaque value inside a record is still opaque
    assert vcache.model_fingerprint(net).startswith(NO_CACHE)


def test_functions_are_keyed_by_code_and_captured_values():
    net = Masked().eval()

    def scaled(g):
        return lambda x: x * g

    net.act = scaled(1.0)
    fp = vcache.model_fingerprint(net)
    assert not fp.startswith(NO_CACHE)
    net.act = scaled(2.0)  # same code, another captured value
    assert vcache.model_fingerprint(net) != fp
    net.act = functools.partial(torch.mul, other=2.0)
    assert not vcache.model_fingerprint(net).startswith(NO_CACHE)
    net.act = torch.relu
    assert not vcache.model_fingerprint(net).startswith(NO_CACHE)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "resnet50", "mixer_b16_224",
                                  "convnext_tiny"])
def test_timm_models_are_still_cacheable(name):
    model = timm.create_model(name, pretrained=False)
    assert not vcache.model_fingerprint(model).startswith(NO_CACHE)


def test_zoo_and_tiny_models_are_still_cacheable():
    for name in vitlens.zoo.names():
        fp = vcache.model_fingerprint(vitlens.load_model(f"vitlens/{name}"))
        assert not fp.startswith(NO_CACHE), (name, fp[:300])
    for family in TINY:
        fp = vcache.model_fingerprint(make_tiny(family))
        assert not fp.startswith(NO_CACHE), (family, fp[:300])


def test_a_zoo_model_hits_the_cache(zoo_vit):
    first = _cka(zoo_vit)
    again, caught = _caught(lambda: _cka(zoo_vit))
    assert not _cache_warnings(caught)
    assert again.meta == first.meta  # served from the cache (same key, stored meta)
    np.testing.assert_array_equal(again.matrix, first.matrix)


# --------------------------------------------------------------------------- 4: images

def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, stride=2)).eval()


@pytest.mark.parametrize("wrap", ["tensor", "loader"])
def test_reshaped_images_with_the_same_bytes_miss(wrap):
    net = _net()
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = x.reshape(12, 3, 8, 32)

    def run(t, **kw):
        images = t if wrap == "tensor" else DataLoader(TensorDataset(t), batch_size=4)
        return vitlens.cka(net, images, layers_a=["0", "2"], progress=False, **kw)

    a, b = run(x), run(y)
    assert a.meta["cache_key"] != b.meta["cache_key"]
    np.testing.assert_array_equal(b.matrix, run(y, cache=False).matrix)
    assert np.nanmax(np.abs(a.matrix - b.matrix)) > 1e-3


def test_image_keys_hold_dtype_and_the_preprocessed_flag():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    fp = vcache.images_fingerprint(as_images(x))
    assert vcache.images_fingerprint(as_images(x.double())) != fp
    assert vcache.images_fingerprint(as_images(x.reshape(4, 3, 4, 16))) != fp
    raw = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    loader = LoaderImages(DataLoader(TensorDataset(raw), batch_size=2))
    assert not loader.preprocessed
    flipped = LoaderImages(DataLoader(TensorDataset(raw), batch_size=2))
    flipped.preprocessed = True  # the same bytes, fed to models as they are
    assert vcache.images_fingerprint(flipped) != vcache.images_fingerprint(loader)


# --------------------------------------------------------------------------- 5: folders

def test_a_users_empty_kind_folder_is_never_adopted_or_removed(tmp_path, monkeypatch,
                                                               zoo_vit):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path))
    (tmp_path / "cka").mkdir()
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "notes.md").write_text("mine")
    result, caught = _caught(lambda: _cka(zoo_vit))
    msgs = _cache_warnings(caught)
    assert len(msgs) == 1 and "was not created by vitlens" in msgs[0], msgs
    assert list((tmp_path / "cka").iterdir()) == []  # no CACHEDIR.TAG, no entry
    np.testing.assert_array_equal(result.matrix, _cka(zoo_vit, cache=False).matrix)
    assert vcache.clear() == 0
    assert (tmp_path / "cka").is_dir()
    assert (tmp_path / "papers" / "notes.md").read_text() == "mine"


def test_clear_removes_the_folder_vitlens_created(tmp_path, monkeypatch, zoo_vit):
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path / "cache"))
    _cka(zoo_vit)
    folder = tmp_path / "cache" / "cka"
    assert sorted(p.name for p in folder.iterdir())[-1] == "CACHEDIR.TAG"
    assert vcache.clear() == 1
    assert not folder.exists() and (tmp_path / "cache").is_dir()


def test_a_folder_an_older_vitlens_tagged_keeps_working_but_is_kept(tmp_path, monkeypatch,
                                                                   zoo_vit):
    from vitlens import cache_store

    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path))
    (tmp_path / "cka").mkdir()
    (tmp_path / "cka" / "CACHEDIR.TAG").write_text(cache_store.LEGACY_TAG)
    first = _cka(zoo_vit)
    assert vcache.result_path("cka", first.meta["cache_key"]).is_file()
    assert vcache.clear() == 1
    assert [p.name for p in (tmp_path / "cka").iterdir()] == ["CACHEDIR.TAG"]


# --------------------------------------------------------------------------- 6: damage

def test_a_damaged_entry_is_named_and_recomputed(zoo_vit):
    first = _cka(zoo_vit)
    path = vcache.result_path("cka", first.meta["cache_key"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    again, caught = _caught(lambda: _cka(zoo_vit))
    msgs = _cache_warnings(caught)
    assert len(msgs) == 1 and str(path) in msgs[0] and "recomputed" in msgs[0], msgs
    np.testing.assert_array_equal(again.matrix, first.matrix)
    assert vcache.load_result("cka", first.meta["cache_key"]) is not None  # stored anew


# --------------------------------------------------------------------------- class code

_NET = '''
import torch
from torch import nn


def act(h):
    return torch.relu(h)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x):
        return self.b(act(self.a(x)))
'''


def _import_net(path, monkeypatch):
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(path.parent))
    sys.modules.pop(path.stem, None)
    importlib.invalidate_caches()
    mod = importlib.import_module(path.stem)
    torch.manual_seed(0)
    return mod.Net()


def test_editing_a_model_class_or_a_helper_in_its_file_changes_the_key(tmp_path, monkeypatch):
    """Same class name, same seeded weights, other code: another model (review: a user
    iterating on their own architecture was served the previous version's result)."""
    from vitlens.cache_keys import model_fingerprint

    path = tmp_path / "user_net_mod.py"
    path.write_text(_NET)
    base = model_fingerprint(_import_net(path, monkeypatch))
    assert model_fingerprint(_import_net(path, monkeypatch)) == base  # unchanged: a hit
    path.write_text(_NET.replace("self.b(act(self.a(x)))", "self.b(act(self.a(x)) ** 3)"))
    assert model_fingerprint(_import_net(path, monkeypatch)) != base  # forward edited
    path.write_text(_NET.replace("return torch.relu(h)", "return torch.tanh(h)"))
    assert model_fingerprint(_import_net(path, monkeypatch)) != base  # a helper edited


def test_two_classes_of_one_name_with_other_forwards_differ():
    """Redefined in one process (a notebook cell run again after an edit)."""
    from vitlens.cache_keys import model_fingerprint

    def make(power):
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)

            def forward(self, x):
                return self.a(x) ** 2 if power == 2 else self.a(x)

        torch.manual_seed(0)
        return Net()

    def make_cubed():
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)

            def forward(self, x):
                return self.a(x) ** 3

        torch.manual_seed(0)
        return Net()

    assert model_fingerprint(make(2)) == model_fingerprint(make(2))
    assert model_fingerprint(make(2)) != model_fingerprint(make(1))  # closure value differs
    assert model_fingerprint(make(2)) != model_fingerprint(make_cubed())  # bytecode differs
