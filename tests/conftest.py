"""Shared fixtures: tiny random-init timm models of every supported family."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from tiny_models import TINY, make_tiny

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_vitlens_cache(tmp_path_factory, monkeypatch):
    """Each test gets an empty result cache (vitlens.cka caches on disk by default)."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(tmp_path_factory.mktemp("vitlens_cache")))


@pytest.fixture(params=sorted(TINY))
def tiny_model(request):
    return request.param, make_tiny(request.param)


@pytest.fixture
def tiny_vit():
    return make_tiny("vit")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
