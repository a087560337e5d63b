"""Real browser, issue 12 in Notebook 7 (``jupyter notebook``): the explorer test again.

The same ``live.ipynb`` as in JupyterLab: the SimilarityExplorer's details after a new run,
a slider moved with the arrow keys recomputing with no Run (item 3 and item 10: arrow keys
on sliders), and the AttentionExplorer's layer slider moved with the keyboard.
"""

from __future__ import annotations

import re
import time

import pytest

from .conftest import Kernel, live_notebook
from .test_live import cell_xy, control, status, type_into, wait_kernel

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]


def run_cells(page, server, notebook: str) -> None:
    """Wait for the page and the notebook's kernel to be idle, then Run > Run All Cells."""
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=180_000)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        kernels = [s["kernel"] for s in server.json("api/sessions")
                   if s.get("path", "").endswith(notebook) and s.get("kernel")]
        if kernels and kernels[0].get("execution_state") == "idle":
            break
        time.sleep(0.5)
    cells = page.locator(".jp-Notebook .jp-CodeCell")
    cells.first.wait_for(timeout=60_000)
    last = cells.last.locator(".jp-InputPrompt")
    for _attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(
            timeout=60_000)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        try:  # every cell queued: the last one shows [*] or its number
            page.wait_for_function("(el) => /\\[(\\*|\\d+)\\]/.test(el.textContent)",
                                   arg=last.element_handle(), timeout=30_000)
            return
        except Exception:  # noqa: BLE001 - retried once, then the waits below fail loudly
            time.sleep(2)


@pytest.fixture(scope="module")
def nb7(tmp_path_factory, artifacts):
    with live_notebook(tmp_path_factory.mktemp("nb7"), app="notebook") as run:
        page, server = run.ui.page, run.server
        page.goto(server.url("notebooks/live.ipynb"))
        try:
            run_cells(page, server, "live.ipynb")
            run.kernel = Kernel(server, "live.ipynb")
            page.locator(".t-sim .vitlens-heatmap").first.wait_for(timeout=90_000)
            page.locator(".t-att .vitlens-imgattn").first.wait_for(timeout=180_000)
            status(page, ".t-sim").get_by_text("done: 32 images").wait_for(timeout=180_000)
        except BaseException:
            page.screenshot(path=str(artifacts / "nb7_failure.png"))
            raise
        yield page, run.kernel, artifacts


def test_notebook7_details_after_a_new_run(nb7):
    page, k, art = nb7
    hm = page.locator(".t-sim .vitlens-heatmap").first
    hm.scroll_into_view_if_needed()
    hm.locator("canvas.vl-overlay").click(position=cell_xy(hm, 4, 2))
    details = page.locator(".t-sim .vitlens-details")
    details.get_by_text("closest to").first.wait_for(timeout=10_000)
    assert k.eval("sim.heatmap.selected") == [4, 2]
    type_into(page, ".t-sim", "Model B", "vitlens/mixer")
    wait_kernel(k, "sim.result is not None and sim.result.meta.get('model_b') == "
                   "'vitlens/mixer' and not sim.running")
    details.get_by_text("Click a cell").wait_for(timeout=10_000)
    assert k.eval("sim.heatmap.selected") is None
    page.locator(".t-sim").screenshot(path=str(art / "nb7_details_after_new_run.png"))


def test_notebook7_arrow_keys_move_sliders(nb7):
    page, k, art = nb7
    # The attention layer slider: continuous, so each key press is one layer.
    handle = control(page, ".t-att", "Layer").locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    handle.click()  # a user clicks the handle, then uses the keys
    assert int(page.locator(".t-att").get_attribute("data-slider-keys")) >= 2  # guarded
    before = k.eval("att.layer.value")
    handle.press("ArrowRight")
    wait_kernel(k, f"att.layer.value == {before + 1}", 10)
    page.locator(".t-att .vitlens-imgattn .vl-title").first.get_by_text(
        f"block {before + 1}:").wait_for(timeout=10_000)
    handle.press("ArrowLeft")
    wait_kernel(k, f"att.layer.value == {before}", 10)
    # The "# images" slider: one key press recomputes, with no Run.
    n = control(page, ".t-sim", "# images").locator(".noUi-handle").first
    n.scroll_into_view_if_needed()
    n.click()
    n.press("ArrowRight")
    status(page, ".t-sim").get_by_text(re.compile("done: 40 images")).wait_for(timeout=60_000)
    assert k.eval("sim.result.meta['n_images']") == 40
    page.locator(".t-sim").screenshot(path=str(art / "nb7_after_arrow_key.png"))
