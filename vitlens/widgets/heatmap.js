// vitlens HeatmapView: a canvas matrix with labelled axes, a legend, hover and click.
// Plain ESM with no imports, so it works offline in JupyterLab, Notebook 7, VS Code, Colab.

const PENDING = [228, 228, 228];
const FONT = "10px sans-serif";

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "pending";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(3) : v.toFixed(4);
}

// Legend ticks: 2 or 3 decimals; more only for a range narrower than 0.01.
function tickFmt(v, span) {
  const a = Math.abs(v);
  if (a >= 1e4 || (a !== 0 && a < 1e-3 && span < 1e-2)) return v.toExponential(2);
  const digits = span >= 1 ? 2 : span >= 0.01 ? 3 : Math.min(6, 2 - Math.floor(Math.log10(span)));
  return v.toFixed(digits);
}

function range(vals, vmin, vmax) {
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < vals.length; k++) {
    const v = vals[k];
    if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  if (vmin !== null && vmin !== undefined) lo = vmin;
  if (vmax !== null && vmax !== undefined) hi = vmax;
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) { lo = 0; hi = 1; }
  if (hi <= lo) hi = lo + 1e-9;
  return [lo, hi];
}

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "vitlens-heatmap";
  const title = document.createElement("div");
  title.className = "vl-title";
  const plot = document.createElement("div");
  plot.className = "vl-plot";
  const base = document.createElement("canvas");
  base.className = "vl-base";
  const over = document.createElement("canvas");
  over.className = "vl-overlay";
  over.tabIndex = 0;
  const tip = document.createElement("div");
  tip.className = "vl-tooltip";
  const msg = document.createElement("div");
  msg.className = "vl-message";
  const readout = document.createElement("div");
  readout.className = "vl-readout";
  plot.append(base, over, tip, msg);
  root.append(title, plot, readout);
  el.appendChild(root);

  let st = null; // geometry and data of the last draw
  let hover = null; // [row, col] under the pointer, from the data of the last draw
  let ptr = null; // the pointer over the overlay, [x, y] in CSS px; null when outside
  let draws = 0;

  function load() {
    const shape = model.get("_shape") || [0, 0];
    const rows = shape[0] | 0, cols = shape[1] | 0;
    let vals = typed(model.get("_data"), model.get("_dtype"));
    if (vals.length !== rows * cols) vals = new Float32Array(0);
    return { vals, rows: vals.length ? rows : 0, cols: vals.length ? cols : 0 };
  }

  function draw() {
    const tDraw = performance.now();
    const { vals, rows, cols } = load();
    const rowL = model.get("row_labels") || [], colL = model.get("col_labels") || [];
    const size = Math.max(120, model.get("size") | 0);
    const lower = model.get("origin") === "lower";
    const ctx = base.getContext("2d");
    ctx.font = FONT;
    const widest = (labels) => labels.reduce((m, s) => Math.max(m, ctx.measureText(s).width), 0);
    const left = 22 + Math.min(150, widest(rowL)) + 6;
    const bottom = 22 + Math.min(120, widest(colL)) + 6;
    const top = 8, right = Math.max(78, ctx.measureText(model.get("value_label") || "").width + 16);
    const W = left + size + right, H = top + size + bottom;
    const dpr = window.devicePixelRatio || 1;
    for (const c of [base, over]) {
      c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
      c.style.width = W + "px"; c.style.height = H + "px";
    }
    plot.style.width = W + "px"; plot.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const [lo, hi] = range(vals, model.get("vmin"), model.get("vmax"));
    const lut = makeLut(model.get("colormap"), "magma");
    const cw = rows ? size / cols : 0, ch = rows ? size / rows : 0;
    st = { vals, rows, cols, rowL, colL, left, top, size, cw, ch, lower, W, H, lo, hi };
    ctx.fillStyle = "#f4f4f4";
    ctx.fillRect(left, top, size, size);
    if (rows && cols) {
      const off = document.createElement("canvas");
      off.width = cols; off.height = rows;
      const octx = off.getContext("2d");
      const img = octx.createImageData(cols, rows);
      const px = img.data, scale = 255 / (hi - lo);
      for (let i = 0; i < rows; i++) {
        const r = lower ? rows - 1 - i : i;
        for (let j = 0; j < cols; j++) {
          const v = vals[i * cols + j], o = (r * cols + j) * 4;
          if (Number.isNaN(v)) { px[o] = PENDING[0]; px[o + 1] = PENDING[1]; px[o + 2] = PENDING[2]; }
          else {
            const t = Math.max(0, Math.min(255, Math.round((v - lo) * scale))) * 3;
            px[o] = lut[t]; px[o + 1] = lut[t + 1]; px[o + 2] = lut[t + 2];
          }
          px[o + 3] = 255;
        }
      }
      octx.putImageData(img, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, left, top, size, size);
      drawLabels(ctx, st);
    }
    drawLegend(ctx, st, lut);
    // A still pointer sees new data too: the cell under it, read from this draw's matrix.
    hover = cellAtPtr();
    showTip();
    title.textContent = model.get("title") || "";
    title.style.display = title.textContent ? "" : "none";
    const m = model.get("message") || "";
    msg.textContent = m;
    msg.style.display = m ? "" : "none";
    drawOverlay();
    draws += 1;
    root.dataset.draws = String(draws);
    root.dataset.lastDraw = String(performance.now());
    root.dataset.drawMs = (performance.now() - tDraw).toFixed(2);
    root.dataset.shape = rows + "x" + cols;
    let nan = 0;
    for (let k = 0; k < vals.length; k++) if (Number.isNaN(vals[k])) nan += 1;
    root.dataset.pending = String(nan); // cells not computed yet (a filling matrix)
    root.dataset.plot = [left, top, size].join(","); // where the cells are, for scripted clicks
  }

  function drawLabels(ctx, s) {
    ctx.fillStyle = "#333";
    ctx.font = FONT;
    const stepY = Math.max(1, Math.ceil(11 / s.ch)), stepX = Math.max(1, Math.ceil(11 / s.cw));
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let i = 0; i < s.rows; i += stepY) {
      const r = s.lower ? s.rows - 1 - i : i;
      ctx.fillText(clip(ctx, s.rowL[i] ?? String(i), 150), s.left - 4, s.top + (r + 0.5) * s.ch);
    }
    ctx.save();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let j = 0; j < s.cols; j += stepX) {
      ctx.save();
      ctx.translate(s.left + (j + 0.5) * s.cw, s.top + s.size + 4);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(clip(ctx, s.colL[j] ?? String(j), 120), 0, 0);
      ctx.restore();
    }
    ctx.restore();
    ctx.font = "bold 11px sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "bottom";
    ctx.fillText(model.get("col_title") || "", s.left + s.size / 2, s.H - 2);
    ctx.save();
    ctx.translate(12, s.top + s.size / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textBaseline = "middle";
    ctx.fillText(model.get("row_title") || "", 0, 0);
    ctx.restore();
  }

  function clip(ctx, text, maxw) {
    if (ctx.measureText(text).width <= maxw) return text;
    let t = text;
    while (t.length > 1 && ctx.measureText("…" + t).width > maxw) t = t.slice(1);
    return "…" + t;
  }

  function drawLegend(ctx, s, lut) {
    // The title sits on its own line above the bar, clear of the top tick label.
    const x = s.left + s.size + 14, titleY = s.top + 10, y = s.top + 30;
    const h = Math.min(200, s.size - 36), w = 12;
    for (let k = 0; k < h; k++) {
      const t = Math.round((1 - k / (h - 1)) * 255) * 3;
      ctx.fillStyle = `rgb(${lut[t]},${lut[t + 1]},${lut[t + 2]})`;
      ctx.fillRect(x, y + k, w, 1);
    }
    ctx.strokeStyle = "#999"; ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = "#333"; ctx.font = FONT; ctx.textAlign = "left"; ctx.textBaseline = "middle";
    const span = s.hi - s.lo;
    const ticks = [s.hi, (s.lo + s.hi) / 2, s.lo].map((v) => tickFmt(v, span));
    ctx.fillText(ticks[0], x + w + 3, y);
    ctx.fillText(ticks[1], x + w + 3, y + h / 2);
    ctx.fillText(ticks[2], x + w + 3, y + h);
    ctx.font = "bold 10px sans-serif";
    ctx.fillText(clip(ctx, model.get("value_label") || "", s.W - x + 10), x - 6, titleY);
    root.dataset.ticks = ticks.join(",");
    root.dataset.legend = [x - 6, titleY, y, h].join(","); // title line, bar top, bar height
  }

  function cellRect(i, j) {
    const r = st.lower ? st.rows - 1 - i : i;
    return [st.left + j * st.cw, st.top + r * st.ch, st.cw, st.ch];
  }

  function drawOverlay() {
    if (!st) return;
    const ctx = over.getContext("2d");
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, st.W, st.H);
    const sel = model.get("selected");
    if (sel && sel[0] < st.rows && sel[1] < st.cols) {
      const [x, y, w, h] = cellRect(sel[0], sel[1]);
      ctx.lineWidth = 2; ctx.strokeStyle = "#00e5ff";
      ctx.strokeRect(x - 1, y - 1, w + 2, h + 2);
    }
    if (hover) {
      const [x, y, w, h] = cellRect(hover[0], hover[1]);
      ctx.lineWidth = 1; ctx.strokeStyle = "#ffffff";
      ctx.strokeRect(x + 0.5, y + 0.5, Math.max(1, w - 1), Math.max(1, h - 1));
    }
    const show = hover || sel;
    if (show && show[0] < st.rows && show[1] < st.cols) {
      const v = st.vals[show[0] * st.cols + show[1]];
      const rt = model.get("row_title") || "row", ct = model.get("col_title") || "column";
      readout.textContent = `${rt}: ${st.rowL[show[0]]}  ·  ${ct}: ${st.colL[show[1]]}  ·  ` +
        `${model.get("value_label") || "value"} = ${fmt(v)}${hover ? "" : "  (selected)"}`;
    } else {
      readout.textContent = st.rows ? "hover a cell to read it; click to select" : "";
    }
  }

  function pointer(ev) {
    const b = over.getBoundingClientRect();
    return [ev.clientX - b.left, ev.clientY - b.top];
  }

  // The cell under the pointer in the last draw's geometry, or null.
  function cellAtPtr(p = ptr) {
    if (!st || !st.rows || !p) return null;
    const x = p[0] - st.left, y = p[1] - st.top;
    if (x < 0 || y < 0 || x >= st.size || y >= st.size) return null;
    const j = Math.min(st.cols - 1, Math.floor(x / st.cw));
    const r = Math.min(st.rows - 1, Math.floor(y / st.ch));
    return [st.lower ? st.rows - 1 - r : r, j];
  }

  // The tooltip of the hovered cell, from the last draw's labels and values (or hidden).
  function showTip() {
    if (!hover || !ptr || hover[0] >= st.rows || hover[1] >= st.cols) {
      tip.style.display = "none";
      return;
    }
    const [i, j] = hover;
    tip.textContent = `${st.rowL[i] ?? String(i)}\n${st.colL[j] ?? String(j)}\n${fmt(st.vals[i * st.cols + j])}`;
    tip.style.left = ptr[0] + 12 + "px";
    tip.style.top = ptr[1] + 12 + "px";
    tip.style.display = "block";
  }

  let pending = false;
  function onMove(ev) {
    ptr = pointer(ev);
    const cell = cellAtPtr();
    const same = cell && hover && cell[0] === hover[0] && cell[1] === hover[1];
    if (same || (!cell && !hover)) return;
    hover = cell;
    showTip();
    if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; drawOverlay(); }); }
  }
  function onLeave() { ptr = null; hover = null; showTip(); drawOverlay(); }
  function select(cell) {
    model.set("selected", cell);
    model.save_changes();
    drawOverlay();
  }
  function onClick(ev) { const cell = cellAtPtr(pointer(ev)); if (cell) select(cell); }
  function onKey(ev) {
    const sel = model.get("selected");
    if (!st || !st.rows || !sel) return;
    const up = st.lower ? 1 : -1;
    const d = { ArrowUp: [up, 0], ArrowDown: [-up, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] }[ev.key];
    if (!d) return;
    ev.preventDefault();
    select([Math.max(0, Math.min(st.rows - 1, sel[0] + d[0])), Math.max(0, Math.min(st.cols - 1, sel[1] + d[1]))]);
  }
  over.addEventListener("mousemove", onMove);
  over.addEventListener("mouseleave", onLeave);
  over.addEventListener("click", onClick);
  over.addEventListener("keydown", onKey);

  const redrawOn = ["_version", "row_labels", "col_labels", "title", "row_title", "col_title",
    "value_label", "vmin", "vmax", "colormap", "origin", "size", "message"];
  // Several traits change in one message: draw once, after all of them.
  let queued = false;
  const schedule = () => { if (!queued) { queued = true; queueMicrotask(() => { queued = false; draw(); }); } };
  for (const name of redrawOn) model.on(`change:${name}`, schedule);
  model.on("change:selected", drawOverlay);
  draw();
  return () => {
    for (const name of redrawOn) model.off(`change:${name}`, schedule);
    model.off("change:selected", drawOverlay);
    over.removeEventListener("mousemove", onMove);
    over.removeEventListener("mouseleave", onLeave);
    over.removeEventListener("click", onClick);
    over.removeEventListener("keydown", onKey);
  };
}

export default { render };
