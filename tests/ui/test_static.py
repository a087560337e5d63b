"""Real browser, issue 12 item 9: a saved notebook shows its widgets with no kernel.

``notebooks/build.py`` executes ``saved_src.py`` as it executes the tutorials (widget state
saved). The saved file must carry an ``image/png`` beside every widget view (what GitHub
shows) and the widget state; JupyterLab, opening it with no kernel at all, draws every
explorer from that state.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import HERE, _shutdown, chromium_page, start_server
from .test_ui import drawn_fraction

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]
ROOT = HERE.parents[1]
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("saved")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               VITLENS_CACHE_DIR=str(out / "cache"))
    proc = subprocess.run([sys.executable, str(ROOT / "notebooks" / "build.py"),
                           "--execute-one", str(HERE / "saved_src.py"), str(out / "saved.ipynb")],
                          env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "saved.ipynb"


def test_9_saved_outputs_carry_a_png_and_the_widget_state(saved):
    nb = json.loads(saved.read_text())
    state = nb["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET in o.get("data", {})]
    assert len(views) == 4
    for out in views:
        assert out["data"][WIDGET]["model_id"] in state
        png = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["data"]["image/png"])))
                         .convert("RGB"))
        frac, n_colours = drawn_fraction(Image_bytes(png))
        assert frac > 0.1 and n_colours > 30, (frac, n_colours)
        assert "0x" not in "".join(out["data"]["text/plain"])  # nbval compares this text


def Image_bytes(arr: np.ndarray) -> bytes:  # noqa: N802 - reads like the PIL call it wraps
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_9_a_saved_notebook_opened_with_no_kernel_draws_every_widget(saved, tmp_path_factory,
                                                                        artifacts):
    root = tmp_path_factory.mktemp("nokernel")
    nb = json.loads(saved.read_text())
    nb["metadata"].pop("kernelspec", None)  # so JupyterLab asks, and we answer "No Kernel"
    (root / "saved.ipynb").write_text(json.dumps(nb))
    # A server that has no kernel to start: the notebook stays without one.
    server = start_server(root, extra=["--KernelSpecManager.allowed_kernelspecs=no-such-kernel"])
    try:
        with chromium_page(server) as ui:
            page = ui.page
            page.goto(server.url("lab/tree/saved.ipynb"))
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            no_kernel = page.locator(".jp-Dialog button", has_text="No Kernel")
            try:  # JupyterLab may ask which kernel to use: none
                no_kernel.wait_for(timeout=15_000)
                no_kernel.click()
            except Exception:  # noqa: BLE001 - no dialog: it opened with no kernel anyway
                pass
            outputs = page.locator(".jp-Cell .jp-OutputArea-output")
            outputs.nth(3).wait_for(timeout=60_000)
            page.wait_for_timeout(3000)  # widgets restored from the saved state, if any
            assert server.json("api/kernels") == []  # no kernel anywhere
            shown = []
            for k, name in enumerate(("similarity", "attention", "localization", "residual")):
                out = outputs.nth(k)
                out.scroll_into_view_if_needed()
                frac, n_colours = drawn_fraction(out.screenshot(
                    path=str(artifacts / f"9_no_kernel_{name}.png")))
                assert frac > 0.1 and n_colours > 30, (name, frac, n_colours)
                shown.append("widget" if out.locator("canvas").count() else
                             "png" if out.locator("img").count() else "?")
            print("shown without a kernel:", shown)
            assert "?" not in shown
            page.screenshot(path=str(artifacts / "9_no_kernel_page.png"), full_page=True)
            assert ui.external == [], ui.external
    finally:
        _shutdown(server)
