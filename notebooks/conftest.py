"""nbval guard: a notebook committed without outputs fails instead of passing silently.

nbval compares the outputs of executed cells only; a cell whose ``execution_count`` is empty
(a notebook saved with its outputs cleared) would be run but never compared. The notebooks
are committed executed (``python notebooks/build.py``), so such a cell is an error.
"""

from __future__ import annotations

import pytest


def pytest_runtest_setup(item: pytest.Item) -> None:
    cell = getattr(item, "cell", None)
    if cell is None or cell.get("cell_type") != "code" or not cell.get("source", "").strip():
        return
    if cell.get("execution_count") is None:
        pytest.fail(f"{item.path.name}, code cell {item.cell_num}: committed without outputs. "
                    "Execute the notebooks with `python notebooks/build.py` and commit them "
                    "with their outputs.", pytrace=False)
