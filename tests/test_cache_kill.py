"""A run killed (SIGKILL) while writing a checkpoint resumes from the previous one and gives
the uninterrupted matrix exactly; the half-written temporary file is never read, and
``vitlens cache clear`` removes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tiny_models import ForwardCounter, make_tiny, random_images

import vitlens
from vitlens import cache as vcache

HERE = Path(__file__).parent

KILLED_MID_WRITE = """
import os, signal, sys, tempfile
sys.path.insert(0, {tests!r})
from tiny_models import make_tiny, random_images
import importlib
import vitlens
from vitlens import cache_store
for name in ("vitlens.similarity.run", "vitlens._cka_run"):
    try:
        importlib.import_module(name).CHECKPOINT_EVERY_S = 0.0  # a checkpoint every batch
        break
    except ImportError:
        continue
real, calls = cache_store.atomic_write, []
def dying_write(path, data):
    calls.append(path)
    if path.name.endswith(".ckpt.pt") and len(calls) > {writes_before}:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{{path.name}}.", suffix=".tmp")
        os.write(fd, data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)  # mid-write: no cleanup at all
    real(path, data)
cache_store.atomic_write = dying_write
vit, cnn = make_tiny("vit"), make_tiny("resnet")
vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5, progress=False)
"""


Counter = ForwardCounter  # counts without a hook: a user's hook turns the cache off


def test_killed_while_writing_a_checkpoint_resumes_exactly(tmp_path):
    script = tmp_path / "killed.py"
    # writes: the tag, then checkpoints after batches 1, 2, 3; killed writing the 4th
    script.write_text(KILLED_MID_WRITE.format(tests=str(HERE), writes_before=4))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    folder = vcache.cache_dir() / "cka"
    temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    ckpts = list(folder.glob("*.ckpt.pt"))
    assert len(temps) == 1 and len(ckpts) == 1 and not list(folder.glob("*.npz"))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed process
    try:
        vit, cnn = make_tiny("vit"), make_tiny("resnet")
        count = Counter(vit)
        resumed = vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5,
                              progress=False)
        assert count.n == 5  # 8 batches, 3 checkpointed before the kill
        reference = vitlens.cka(vit, random_images(40), cnn, layers_a="all", batch_size=5,
                                progress=False, cache=False)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(resumed.matrix, reference.matrix)
    assert not list(folder.glob("*.ckpt.pt"))
    assert vcache.info()["files"] == 2  # the entry and the stale temporary file
    assert vcache.clear() == 2 and not folder.exists()
