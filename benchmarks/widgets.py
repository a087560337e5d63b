"""Widget responsiveness: the numbers in the "Widgets" section of benchmarks/README.md.

    python benchmarks/widgets.py                  # Python-side timings + Chromium draw times
    python benchmarks/widgets.py --browser        # also the end-to-end JupyterLab test

Measured:
1. Attention for a new image on the zoo ViT (``vitlens/vit-cls``, 64x64, CPU): the
   AttentionExplorer's maps, rollout and distances for an image it has not seen, from the
   image choice to the view's data being set (and with the chart rebuild).
2. A slider move on precomputed data: the kernel-side handler (layer slider -> new view
   data), and with ``--browser`` the full path in JupyterLab + Chromium, from the slider's
   key press to the canvas redraw marker the JavaScript sets (``tests/ui``).
3. Canvas draw time of a 400x400 HeatmapView and of an ImageAttentionView in headless
   Chromium (first draw, then redraws), without Jupyter.
The zoo ViT is loaded with its bundled weights when present, else random-init (same cost).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = ROOT / "vitlens" / "widgets"


def _zoo(name: str) -> tuple[torch.nn.Module, str]:
    import vitlens
    from vitlens.zoo import registry

    try:
        return vitlens.load_model(f"vitlens/{name}"), "trained"
    except Exception:  # noqa: BLE001 - no bundled weights yet: same architecture, same cost
        torch.manual_seed(0)
        return registry.create(name).eval(), "random-init"


def _stats(ms: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(ms), "p90_ms": float(np.percentile(ms, 90)),
            "max_ms": max(ms), "n": len(ms)}


def bench_attention(repeats: int) -> dict:
    import vitlens
    from vitlens.widgets import AttentionExplorer

    model, weights = _zoo("vit-cls")
    images = vitlens.datasets.synthetic("test", repeats + 1)
    ex = AttentionExplorer(model, images)  # image 0 computed (and the chart bundle built)
    compute, full = [], []
    for k in range(1, repeats + 1):
        key = ex.image.options[k][1]
        t0 = time.perf_counter()
        ex.compute(key)  # a new image: preprocess, one forward pass, rollout, distances
        compute.append((time.perf_counter() - t0) * 1e3)
        ex.cache._data.pop(next(reversed(ex.cache._data)))  # forget it again
        t0 = time.perf_counter()
        ex.image.value = key  # what a user does: compute + views + chart rebuild
        full.append((time.perf_counter() - t0) * 1e3)
    slider = []
    for k in range(repeats):
        t0 = time.perf_counter()
        ex.layer.value = (k + 1) % (ex.layer.max + 1)  # precomputed: cached maps
        slider.append((time.perf_counter() - t0) * 1e3)
    return {"weights": weights, "threads": torch.get_num_threads(),
            "new_image_compute": _stats(compute), "new_image_with_views_and_chart": _stats(full),
            "layer_slider_kernel_handler": _stats(slider)}


def _harness(js_name: str, css_name: str, setup: str) -> str:
    from vitlens.widgets._base import esm_source

    js = esm_source(js_name).replace("export default { render };", "window.render = render;")
    css = (WIDGETS / css_name).read_text()
    return f"""<html><head><style>{css}</style></head><body><div id=el></div>
<script type=module>
{js}
const handlers = {{}};
{setup}
const model = {{get: k => state[k], set: (k, v) => {{ state[k] = v; }}, save_changes: () => {{}},
  on: (e, f) => {{ (handlers[e] = handlers[e] || []).push(f); }}, off: () => {{}}}};
window.state = state; window.handlers = handlers;
render({{model, el: document.getElementById('el')}});
window.ready = true;
</script></body></html>"""


HEATMAP_SETUP = """
const n = 400, vals = new Float32Array(n * n);
for (let i = 0; i < n * n; i++) vals[i] = Math.random();
const labels = [...Array(n).keys()].map(i => 'blocks.' + i + '.mlp_hidden');
const state = {_data: new DataView(vals.buffer), _dtype: 'float32', _shape: [n, n],
  row_labels: labels, col_labels: labels, title: '400x400', row_title: 'A', col_title: 'B',
  value_label: 'CKA', vmin: null, vmax: null, colormap: 'magma', origin: 'lower', size: 400,
  selected: null, message: '', _version: 0};
"""
ATTENTION_SETUP = """
const H = 12, N = 197, vals = new Float32Array(H * N * N);
for (let i = 0; i < vals.length; i++) vals[i] = Math.random();
const img = new Uint8Array(224 * 224 * 3);
for (let i = 0; i < img.length; i++) img[i] = i % 251;
const state = {_values: new DataView(vals.buffer), _dtype: 'float32', _shape: [H, N, N],
  _image: new DataView(img.buffer), _image_shape: [224, 224, 3], grid: [14, 14], query: 0,
  head: -1, prefix_names: ['CLS'], head_labels: [], title: 'ViT-B/16 shape', opacity: 0.65,
  value_label: 'attention', colormap: 'viridis', size: 256, show_heads: true, message: '',
  _version: 0};
"""


def bench_canvas(repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    out = {}
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=args)
        try:
            for name, files, setup, root in (
                    ("heatmap_400x400", ("heatmap.js", "heatmap.css"), HEATMAP_SETUP,
                     ".vitlens-heatmap"),
                    ("image_attention_12x197x197", ("image_attention.js", "image_attention.css"),
                     ATTENTION_SETUP, ".vitlens-imgattn")):
                page = browser.new_page()
                page.set_content(_harness(*files, setup))
                page.wait_for_function("window.ready === true")
                first = float(page.locator(root).get_attribute("data-draw-ms"))
                redraw = [page.evaluate(
                    """async (sel) => { state._version++; state.query = (state.query + 1) % 50;
                    for (const f of handlers['change:_version']) f();
                    await new Promise(r => setTimeout(r, 0));
                    return +document.querySelector(sel).dataset.drawMs; }""", root)
                    for _ in range(repeats)]
                out[name] = {"first_draw_ms": first, "redraw": _stats(redraw)}
                page.close()
        finally:
            browser.close()
    return out


def bench_browser(out_dir: Path) -> dict:
    """Run the end-to-end JupyterLab test and read the timings it saved."""
    art = out_dir / "ui"
    env = dict(os.environ, VITLENS_UI_ARTIFACTS=str(art))
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-o", "addopts=",
           str(ROOT / "tests" / "ui")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-2000:])
        msg = "the browser test failed; see its output above"
        raise RuntimeError(msg)
    t = json.loads((art / "ui_timings.json").read_text())
    live = json.loads((art / "live_timings.json").read_text())  # tests/ui/test_live.py
    return {"slider_to_redraw": _stats(t["slider_to_redraw_ms"]),
            "heatmap_400_first_draw_ms": t["heatmap_400_first_draw_ms"],
            "control_change_to_first_partial": _stats(live["control_change_to_first_partial_ms"]),
            "control_change_to_cached_result_ms": live["control_change_to_cached_result_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--browser", action="store_true", help="also run tests/ui end to end")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "_out")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    res = {"machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]},
           "attention": bench_attention(args.repeats), "canvas": bench_canvas(args.repeats)}
    if args.browser:
        res["jupyterlab"] = bench_browser(args.out)
    res["machine"]["load_avg_1min_after"] = os.getloadavg()[0]
    (args.out / "widgets.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
