"""Property-based tests of cache entries and checkpoints: random bytes, truncation at any
position, flipped bytes and wrong keys never crash and never return a wrong result."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vitlens import SimilarityResult, cache_store
from vitlens import cache as vcache

KEY = vcache.make_key("cka", {"test": "entries"})
OTHER = vcache.make_key("cka", {"test": "other"})
FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _result(matrix: np.ndarray, key: str = KEY) -> SimilarityResult:
    la = [f"blocks.{i}" for i in range(matrix.shape[0])]
    lb = [f"layer{j}" for j in range(matrix.shape[1])]
    return SimilarityResult(matrix, la, lb, {"cache_key": key, "n_images": 8})


ENTRY = cache_store.encode_result("cka", KEY, _result(np.linspace(0, 1, 12).reshape(3, 4)))
STATE = {"key": KEY, "done": 3, "engine": {"hsic_ab": torch.arange(12.0).reshape(3, 4),
                                            "n_examples": 24, "names_a": ["a", "b", "c"]}}
CKPT = cache_store.encode_checkpoint(KEY, STATE)


def _same(a: SimilarityResult, b: SimilarityResult) -> bool:
    return (type(a) is type(b) and a.layers_a == b.layers_a and a.layers_b == b.layers_b
            and a.meta == b.meta and np.array_equal(a.matrix, b.matrix, equal_nan=True)
            and a.matrix.dtype == b.matrix.dtype)


def _same_state(a: dict, b: dict) -> bool:
    return (a.keys() == b.keys() and a["done"] == b["done"] and a["key"] == b["key"]
            and a["engine"]["n_examples"] == b["engine"]["n_examples"]
            and a["engine"]["names_a"] == b["engine"]["names_a"]
            and torch.equal(a["engine"]["hsic_ab"], b["engine"]["hsic_ab"]))


ORIGINAL = cache_store.decode_result(ENTRY, "cka", KEY)


def test_the_reference_entries_decode():
    assert ORIGINAL is not None and ORIGINAL.matrix.shape == (3, 4)
    assert _same_state(cache_store.decode_checkpoint(CKPT, KEY), STATE)


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_are_a_miss(data):
    assert cache_store.decode_result(data, "cka", KEY) is None
    assert cache_store.decode_checkpoint(data, KEY) is None


@FAST
@given(st.data())
def test_truncation_anywhere_is_a_miss(data):
    n = data.draw(st.integers(0, len(ENTRY) - 1))
    assert cache_store.decode_result(ENTRY[:n], "cka", KEY) is None
    m = data.draw(st.integers(0, len(CKPT) - 1))
    assert cache_store.decode_checkpoint(CKPT[:m], KEY) is None


@FAST
@given(st.data())
def test_a_flipped_byte_is_a_miss_or_the_same_result(data):
    pos = data.draw(st.integers(0, len(ENTRY) - 1))
    xor = data.draw(st.integers(1, 255))
    bad = bytearray(ENTRY)
    bad[pos] ^= xor
    got = cache_store.decode_result(bytes(bad), "cka", KEY)
    assert got is None or _same(got, ORIGINAL)  # zip header fields may not matter
    pos = data.draw(st.integers(0, len(CKPT) - 1))
    bad = bytearray(CKPT)
    bad[pos] ^= xor
    state = cache_store.decode_checkpoint(bytes(bad), KEY)
    assert state is None or _same_state(state, STATE)


@FAST
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_any_matrix_round_trips_and_only_under_its_key(matrix):
    result = _result(matrix)
    data = cache_store.encode_result("cka", KEY, result)
    back = cache_store.decode_result(data, "cka", KEY)
    assert back is not None and _same(back, result)
    assert cache_store.decode_result(data, "cka", OTHER) is None  # another key
    assert cache_store.decode_result(data, "probe", KEY) is None  # another kind
    assert cache_store.decode_checkpoint(cache_store.encode_checkpoint(KEY, STATE), OTHER) is None


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(how=st.sampled_from(["random", "truncate", "flip", "other_key"]), data=st.data())
def test_through_the_files_a_bad_entry_is_a_miss_and_removed(how, data):
    path = vcache.store_result("cka", KEY, _result(np.eye(3, 4)))
    good = path.read_bytes()
    if how == "random":
        bad = data.draw(st.binary(max_size=2048))
    elif how == "truncate":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "flip":
        pos = data.draw(st.integers(0, len(good) - 1))
        bad = bytearray(good)
        bad[pos] ^= data.draw(st.integers(1, 255))
        bad = bytes(bad)
    else:
        bad = cache_store.encode_result("cka", OTHER, _result(np.eye(3, 4), OTHER))
    path.write_bytes(bad)
    got = vcache.load_result("cka", KEY)
    if got is None:
        assert not path.exists()  # vitlens's own bad entry is discarded
    else:
        assert _same(got, _result(np.eye(3, 4))) and path.read_bytes() == bad
    ckpt = vcache.checkpoint_path("cka", KEY)
    assert vcache.save_checkpoint(ckpt, STATE)
    raw = ckpt.read_bytes()
    ckpt.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    assert vcache.load_checkpoint(ckpt) is None and not ckpt.exists()
