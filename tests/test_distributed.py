"""vitlens over torch.distributed: helpers in one process, and 2 gloo ranks under torchrun.

The multi-process tests launch ``torchrun`` on 127.0.0.1 in its own session, compare the
matrix rank 0 writes with a single-process run done here (same thread count: float32
forward passes round differently with other thread counts), and check that every process
of the session is gone afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import _dist_analyses
import _dist_worker as worker
import numpy as np
import pytest
import torch

import vitlens
from vitlens import distributed as vd
from vitlens.datasets import balanced_batches
from vitlens.results import load_result

HERE = Path(__file__).parent


# --------------------------------------------------------------------------- one process

def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not vd.init_from_env()
    assert (vd.world(), vd.rank(), vd.is_main(), vd.is_distributed()) == (1, 0, True, False)
    batches = balanced_batches(50, 8)
    assert vd.shard(batches) == batches
    t = torch.arange(3, dtype=torch.float64)
    assert vd.all_reduce_sum_(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    state = {"a": torch.ones(2), "n": 3, "name": "x"}
    out = vd.all_reduce_state_(state)
    assert out == state and out is not state
    assert vd.broadcast_object({"k": 1}) == {"k": 1}
    assert vd.all_gather_object(5) == [5]


def test_world_size_one_does_not_initialise(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not vd.init_from_env()
    assert not torch.distributed.is_initialized()


def test_missing_master_address_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR.*torchrun"):
        vd.init_from_env()
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize("world", [1, 2, 3, 5, 7])
def test_shard_deals_whole_batches_round_robin(monkeypatch, world):
    batches = balanced_batches(100, 16)  # 7 batches of 14 or 15
    shards = []
    for r in range(world):
        monkeypatch.setattr(vd, "rank", lambda r=r: r)
        monkeypatch.setattr(vd, "world", lambda: world)
        shards.append(vd.shard(batches))
    assert sorted(b.start for s in shards for b in s) == [b.start for b in batches]
    for r, s in enumerate(shards):
        assert s == [batches[i] for i in range(r, len(batches), world)]


def test_shard_batches_needs_a_batch_per_rank(monkeypatch):
    batches = balanced_batches(12, 4)  # 3 batches
    assert vd.shard_batches(batches) == batches  # one process: every batch
    monkeypatch.setattr(vd, "is_distributed", lambda: True)
    monkeypatch.setattr(vd, "world", lambda: 4)
    monkeypatch.setattr(vd, "rank", lambda: 1)
    with pytest.raises(ValueError, match="3 batches for 4 ranks.*smaller batch_size"):
        vd.shard_batches(batches, what="attention distance")
    monkeypatch.setattr(vd, "world", lambda: 2)
    assert vd.shard_batches(batches) == [batches[1]]


# --------------------------------------------------------------------------- torchrun

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _torchrun(args: list[str], cwd: Path, env_extra: dict[str, str],
              timeout: float = 240) -> subprocess.CompletedProcess:
    """Run torchrun with 2 gloo processes on 127.0.0.1 in a new session; kill it on failure
    and check that no process of the session survives."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
           **env_extra}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
           "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s")
    finally:
        deadline = time.monotonic() + 10
        while _session_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _session_pids(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"processes left over after torchrun: {left}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def test_two_gloo_ranks_equal_one_process(tmp_path):
    run = _torchrun([str(HERE / "_dist_worker.py"), str(tmp_path)], tmp_path,
                    {"VITLENS_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stdout[-4000:]
    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r, rec in enumerate(recs):
        assert not _alive(rec["pid"])
        assert (rec["rank"], rec["world"], rec["is_main"]) == (r, 2, r == 0)
        # 5 batches of 8: rank 0 runs batches 0, 2, 4 and rank 1 runs 1, 3
        assert rec["forwards"] == (3 if r == 0 else 2)
        assert rec["shard"] == [[8 * i, 8 * i + 8] for i in range(r, 5, 2)]
        # the cached run computed once (same shards), and the repeat was a hit on every rank
        assert rec["forwards_cached"] == rec["forwards"]
        assert rec["cached_equal"] and rec["again_equal"]
        # all_reduce_state_: sums of rank-dependent values, names and flags untouched
        assert rec["sum"] == [[3.0] * 3] * 2 and rec["count"] == 21 and rec["mean"] == 0.5
        assert rec["nested"] == [1, 2] and rec["name"] == f"rank{r}" and rec["flag"] is True
        assert rec["input_sum_after"] == r + 1  # the input state is not modified
        assert rec["t"] == 3.0 and rec["broadcast"] == "from 0"
    # rank 0 alone stored the result; no checkpoint is left behind
    stored = sorted(p.name for p in (tmp_path / "cache" / "cka").iterdir()
                    if p.name != "CACHEDIR.TAG")  # vitlens's tag marks the folder as its own
    assert len(stored) == 1 and stored[0].endswith(".npz")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        vit, cnn = worker.zoo_pair()
        single = vitlens.cka(vit, worker.images(), cnn, layers_a="all",
                             batch_size=worker.BATCH, progress=False, cache=False)
    finally:
        torch.set_num_threads(threads)
    multi = np.load(tmp_path / "matrix.npy")
    assert multi.shape == single.matrix.shape == (len(single.layers_a), 6)
    assert np.isfinite(multi).all() and np.ptp(multi) > 0.1  # a real, non-trivial matrix
    np.testing.assert_allclose(multi, single.matrix, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.load(tmp_path / "matrix_cached.npy"), multi)
    # distributed=False on rank 0 alone ran all 5 batches there, without waiting for rank 1
    assert recs[0]["solo_forwards"] == 5 and recs[1]["solo_forwards"] is None
    np.testing.assert_allclose(np.load(tmp_path / "matrix_solo.npy"), single.matrix, rtol=0,
                               atol=1e-12)


def test_analyses_shard_over_two_gloo_ranks(tmp_path):
    """Attention distance, ERF, residual ratios, head subsets, localization, probes, CKA with
    confidence and a joint-CKA analysis: 2 ranks equal 1 process, array by array."""
    run = _torchrun([str(HERE / "_dist_analyses.py"), str(tmp_path / "multi")], tmp_path,
                    {"VITLENS_CACHE_DIR": str(tmp_path / "cache")}, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:]
    recs = [json.loads((tmp_path / "multi" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(rec["rank"], rec["world"]) for rec in recs] == [(0, 2), (1, 2)]
    assert not any(_alive(rec["pid"]) for rec in recs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        names, seen = _dist_analyses.run_all(tmp_path / "single")
    finally:
        torch.set_num_threads(threads)
    assert names == recs[0]["names"] and len(names) == 8
    # each rank ran the models on part of the images only (the probes' few-shot training
    # features, a handful of images, are computed on every rank)
    shares = [rec["images_seen"] for rec in recs]
    assert all(0.3 * seen < share < 0.7 * seen for share in shares), (shares, seen)
    assert sum(shares) >= seen
    for name in names:
        multi = load_result(tmp_path / "multi" / f"{name}.npz")
        single = load_result(tmp_path / "single" / f"{name}.npz")
        _assert_meta_close(multi.meta, single.meta, name)
        assert multi.arrays.keys() == single.arrays.keys(), name
        informative = 0
        for key, want in single.arrays.items():
            got = multi.arrays[key]
            assert got.shape == want.shape, (name, key)
            if want.dtype.kind in "fc":
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, equal_nan=True,
                                           err_msg=f"{name}.{key}")
                informative += int(np.nanmax(want) - np.nanmin(want) > 1e-3)
            else:
                np.testing.assert_array_equal(got, want, err_msg=f"{name}.{key}")
        assert informative, f"{name}: every float array is constant"


def _assert_meta_close(a, b, where: str) -> None:
    """Equal metadata, floats (summaries of the arrays) to 1e-10."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_meta_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_meta_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=0, abs=1e-10, nan_ok=True), where
    else:
        assert a == b, where


def test_cli_under_torchrun_equals_single_process(tmp_path):
    from vitlens.cli import main

    args = ["cka", "--model-a", "vit_tiny_patch16_224", "--model-b", "resnet18",
            "--random-init", "--images", "samples", "--samples", "16", "--batch-size", "4",
            "--no-progress", "--no-cache"]
    run = _torchrun(["-m", "vitlens", *args, "--out", str(tmp_path / "multi")], tmp_path,
                    {"VITLENS_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stdout[-4000:]
    assert run.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "--out", str(tmp_path / "single")]) == 0
    finally:
        torch.set_num_threads(threads)
    multi = vitlens.SimilarityResult.load(tmp_path / "multi" / "cka.npz")
    single = vitlens.SimilarityResult.load(tmp_path / "single" / "cka.npz")
    assert multi.matrix.shape == (12, 8) and multi.meta["n_images"] == 16
    np.testing.assert_allclose(multi.matrix, single.matrix, rtol=0, atol=1e-10)
    assert (tmp_path / "multi" / "cka.png").is_file()
    assert not (tmp_path / "cache").exists()  # --no-cache wrote nothing
