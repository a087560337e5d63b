"""The cache on real disks: concurrent writers, read-only and full file systems, a file in
the way, and reads that write nothing (issue 11, defects 2 and 5)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from tiny_models import make_tiny, random_images

import vitlens
import vitlens.similarity.run as cka_run
from vitlens import cache as vcache

HERE = Path(__file__).parent
ROOT = HERE.parent




def _env() -> dict[str, str]:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


# --------------------------------------------------------------------------- 2: concurrency

WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from vitlens import SimilarityResult, cache
key, value, go, n = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
layers = [f"l{i}" for i in range(40)]
result = SimilarityResult(np.full((40, 40), value), layers, layers, {"cache_key": key})
while not go.exists():
    time.sleep(0.001)
for _ in range(n):
    assert cache.store_result("cka", key, result) is not None
"""

READER = """
import sys, time
from pathlib import Path
import numpy as np
from vitlens import cache
key, go, seconds = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
seen, reads, end = False, 0, time.monotonic() + seconds
while time.monotonic() < end:
    hit = cache.load_result("cka", key)
    reads += 1
    if hit is None:
        assert not seen, "an entry vanished or was unreadable after it had been stored"
        continue
    seen = True
    m = hit.matrix
    assert m.shape == (40, 40) and (np.all(m == 1.0) or np.all(m == 2.0)), "mixed entry"
print(reads)
"""


def test_two_processes_store_one_key(tmp_path):
    key = vcache.make_key("cka", {"test": "concurrency"})
    go = tmp_path / "go"
    writer, reader = tmp_path / "writer.py", tmp_path / "reader.py"
    writer.write_text(WRITER)
    reader.write_text(READER)
    procs = [subprocess.Popen([sys.executable, str(writer), key, str(v), str(go), "150"],
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for v in (1.0, 2.0)]
    procs.append(subprocess.Popen([sys.executable, str(reader), key, str(go), "6"],
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True))
    time.sleep(4)  # let all three import vitlens, then start them together
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert int(outs[2][0]) > 0
    folder = vcache.cache_dir() / "cka"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{key}.npz", "CACHEDIR.TAG"])
    final = vcache.load_result("cka", key)
    assert final is not None and final.matrix[0, 0] in (1.0, 2.0)


# --------------------------------------------------------------------------- 5: bad disks

@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs with the given options at a fresh folder (skips where impossible)."""
    mounted = []

    def _mount(options: str) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root and mount permission): "
                        f"{proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield _mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(folder: Path) -> None:
    """Write a file until the file system is full."""
    with open(folder / "filler.bin", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    with pytest.raises(OSError):
        (folder / "probe.bin").write_bytes(b"\0" * 8192)


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")] if root.is_dir() else []


def _run_on(root: Path, monkeypatch, problem: str, n: int = 16):
    """Run vitlens.cka with its cache at ``root``: the right result, exactly one warning
    that names ``problem`` and the fixes, and no temporary file left."""
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(root))
    monkeypatch.setattr(cka_run, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint every batch
    vit = make_tiny("vit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = vitlens.cka(vit, random_images(n), batch_size=4, progress=False)
    assert len(caught) == 1, [str(w.message) for w in caught]
    w = caught[0]
    assert issubclass(w.category, vcache.CacheUnavailableWarning)
    msg = str(w.message)
    assert problem in msg and "cache=False" in msg and "VITLENS_CACHE_DIR" in msg, msg
    reference = vitlens.cka(vit, random_images(n), batch_size=4, progress=False, cache=False)
    np.testing.assert_array_equal(result.matrix, reference.matrix)
    assert not _temps(root)
    return result


def test_cache_dir_is_a_file(tmp_path, monkeypatch):
    afile = tmp_path / "not_a_folder"
    afile.write_text("the user's file")
    _run_on(afile, monkeypatch, "a file is in the way")
    assert afile.read_text() == "the user's file"


def test_kind_folder_is_a_file(tmp_path, monkeypatch):
    (tmp_path / "cka").write_text("the user's file")
    _run_on(tmp_path, monkeypatch, "a file is in the way")
    assert (tmp_path / "cka").read_text() == "the user's file"


def test_kind_folder_holds_foreign_files(tmp_path, monkeypatch):
    (tmp_path / "cka").mkdir()
    (tmp_path / "cka" / "thesis.tex").write_text("mine")
    _run_on(tmp_path, monkeypatch, "holds files vitlens did not write")
    assert [p.name for p in (tmp_path / "cka").iterdir()] == ["thesis.tex"]


def test_read_only_file_system(mount, monkeypatch):
    _run_on(mount("ro"), monkeypatch, "read-only file system")


def test_full_disk(mount, monkeypatch):
    root = mount("size=64k")
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(root))
    small = vitlens.cka(make_tiny("vit"), random_images(8), batch_size=4, progress=False)
    entries = sorted((root / "cka").iterdir())
    _fill(root)
    _run_on(root, monkeypatch, "the disk is full")
    assert sorted((root / "cka").iterdir()) == entries  # nothing added, nothing lost
    hit = vcache.load_result("cka", small.meta["cache_key"])
    np.testing.assert_array_equal(hit.matrix, small.matrix)


def test_hit_on_a_read_only_file_system_is_silent(mount, monkeypatch):
    root = mount("size=1m")
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(root))
    vit = make_tiny("vit")
    first = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    assert not caught, [str(w.message) for w in caught]
    np.testing.assert_array_equal(again.matrix, first.matrix)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*")} if root.exists() else {}


def test_a_cache_read_writes_nothing(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("VITLENS_CACHE_DIR", str(root))
    key = vcache.make_key("cka", {"test": "read"})
    assert vcache.load_result("cka", key) is None
    assert vcache.load_checkpoint(vcache.checkpoint_path("cka", key)) is None
    vcache.result_path("cka", key)
    assert not root.exists(), "a read created the cache folder"
    vit = make_tiny("vit")
    first = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    (root / "cka" / "CACHEDIR.TAG").unlink()  # e.g. removed by a user's clean-up script
    before = _tree(root)
    time.sleep(0.01)
    again = vitlens.cka(vit, random_images(8), batch_size=4, progress=False)
    np.testing.assert_array_equal(again.matrix, first.matrix)
    assert _tree(root) == before, "a cache hit wrote to the cache"
