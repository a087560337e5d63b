"""Tiny random-init timm models of every supported family, and random test images.

A module of its own (not conftest.py): `notebooks/conftest.py` shares the module name
`conftest`, so tests import these helpers from here.
"""

from __future__ import annotations

import importlib
import time
import weakref
from collections.abc import Callable

import numpy as np
import timm
import torch

# name -> (timm architecture, kwargs) for tiny random-init models on 32x32 inputs
TINY = {
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32,
                                         num_heads=2, num_classes=5)),
    "deit": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=2,
                                                     embed_dim=32, num_heads=2, num_classes=5)),
    "vit_gap": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=32,
                                             num_heads=2, num_classes=5, class_token=False,
                                             global_pool="avg")),
    "resnet": ("resnet18", dict(layers=(1, 1, 1, 1), num_classes=5, zero_init_last=False)),
    "resnet_bottleneck": ("resnet26", dict(layers=(1, 1, 1, 1), num_classes=5,
                                           zero_init_last=False)),
    "resnetv2": ("timm.models.resnetv2.ResNetV2", dict(layers=(1, 1, 1, 1), channels=(64, 128, 192, 256),
                                                       stem_chs=32, stem_type="fixed", bottle_ratio=0.5,
                                                       num_classes=5)),
    "mixer": ("timm.models.mlp_mixer.MlpMixer", dict(img_size=32, patch_size=8, num_blocks=2,
                                                     embed_dim=32, num_classes=5)),
    "convnext": ("convnext_atto", dict(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32),
                                       num_classes=5)),
}


def make_tiny(family: str, seed: int = 0) -> torch.nn.Module:
    arch, kwargs = TINY[family]
    torch.manual_seed(seed)
    if arch.startswith("timm.models."):  # a class, where the entry point pins the kwargs
        module, cls = arch.rsplit(".", 1)
        return getattr(importlib.import_module(module), cls)(**kwargs).eval()
    return timm.create_model(arch, pretrained=False, **kwargs).eval()


def random_images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    r = np.random.default_rng(seed)
    return [r.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


_COUNTERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _count_module_calls() -> None:
    """Wrap ``nn.Module.__call__`` once so that :class:`ForwardCounter` sees calls of the
    models it counts. The model classes' own code stays as it is: vitlens's cache keys hash
    it (a wrapped ``forward`` would be another model), but not ``nn.Module``'s."""
    if torch.nn.Module.__dict__.get("_counted_by_tests"):
        return
    inner = torch.nn.Module.__call__

    def __call__(self, *args, **kwargs):
        counters = _COUNTERS.get(self)
        for counter in list(counters or ()):
            counter.n += 1
            if counter.on_call is not None:
                counter.on_call(counter.n)
        return inner(self, *args, **kwargs)

    torch.nn.Module.__call__ = __call__
    torch.nn.Module._counted_by_tests = True


class ForwardCounter:
    """Counts forward passes of some models, without a hook or a change to their code: a
    user's forward hook turns vitlens's cache off (what it does to the output cannot be
    fingerprinted), and a model class's code is part of its cache key, so cache tests
    count through one wrapper on ``nn.Module.__call__`` (installed once, it passes every
    call through and counts only the models given here)."""

    def __init__(self, *models: torch.nn.Module,
                 on_call: Callable[[int], None] | None = None) -> None:
        self.n = 0
        self.on_call = on_call
        self.models = list(models)
        _count_module_calls()
        for m in models:
            _COUNTERS.setdefault(m, []).append(self)

    def take(self) -> int:
        n, self.n = self.n, 0
        return n

    def close(self) -> None:
        for m in self.models:
            if self in _COUNTERS.get(m, []):
                _COUNTERS[m].remove(self)


def until(cond: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
