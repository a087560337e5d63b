"""Shared fixtures: tiny random-init timm models of every supported family."""

from __future__ import annotations

import os
import sys

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


@pytest.fixture(autouse=True)
def _widget_runs_end_with_their_test():
    """After each test, wait for every explorer's background computation still in flight, so
    that none runs on into the next test's forward passes of a shared model."""
    yield
    live = sys.modules.get("vitlens.widgets._live")
    if live is not None:
        unfinished = [runs.name for runs in list(live._LIVE) if not runs.wait(timeout=300)]
        assert not unfinished, f"explorer computations still running after the test: {unfinished}"


@pytest.fixture(params=sorted(TINY))
def tiny_model(request):
    return request.param, make_tiny(request.param)


@pytest.fixture
def tiny_vit():
    return make_tiny("vit")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
