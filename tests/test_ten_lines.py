"""The README's "Ten lines", run as a script (``python ten.py``), exit cleanly.

The script ends with a SimilarityExplorer whose CKA is still computing in a background
thread; the interpreter must stop it and exit 0 (it used to abort with SIGABRT, 134).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ten_lines() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ten lines", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "README.md has no python block under '## Ten lines'"
    return found.group(1)


def test_the_readme_block_ends_with_an_explorer():
    code = ten_lines()
    assert code.strip().splitlines()[-1].startswith("vitlens.widgets.SimilarityExplorer(")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10


@pytest.mark.timeout(300)
def test_ten_lines_as_a_script_exits_0(tmp_path):
    script = tmp_path / "ten.py"
    script.write_text(ten_lines())
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               VITLENS_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=280, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "terminate called" not in proc.stderr
    assert (tmp_path / "vit_vs_resnet.npz").exists()  # the script did its work first
