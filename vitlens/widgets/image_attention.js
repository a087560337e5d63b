// vitlens ImageAttentionView: an image with a per-patch map overlaid, a head grid and a
// clickable query patch. Plain ESM with no imports (works offline).

function fmt(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? v.toExponential(2) : v.toFixed(3);
}

function el_(tag, cls, parent) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}

function render({ model, el }) {
  const root = el_("div", "vitlens-imgattn", el);
  const title = el_("div", "vl-title", root);
  const top = el_("div", "vl-top", root);
  const plot = el_("div", "vl-plot", top);
  const base = el_("canvas", "vl-base", plot);
  const over = el_("canvas", "vl-overlay", plot);
  const msg = el_("div", "vl-message", plot);
  const legend = el_("canvas", "vl-legend", top);
  const bar = el_("div", "vl-bar", root);
  const readout = el_("div", "vl-readout", root);
  const heads = el_("div", "vl-heads", root);
  let st = null, hover = null, draws = 0;
  let imgCanvas = null, imgVersion = -1;

  function load() {
    const shape = model.get("_shape") || [0, 0, 0];
    const [K, nq, nk] = shape.map((s) => s | 0);
    let vals = typed(model.get("_values"), model.get("_dtype"));
    if (vals.length !== K * nq * nk) vals = new Float32Array(0);
    const [gh, gw] = model.get("grid") || [0, 0];
    const npatch = gh * gw;
    const kp = Math.max(0, nk - npatch), qp = nq > 1 ? Math.max(0, nq - npatch) : 0;
    return { vals, K: vals.length ? K : 0, nq, nk, gh, gw, npatch, kp, qp };
  }

  function imageCanvas() {
    const v = model.get("_version");
    if (v === imgVersion) return imgCanvas;
    imgVersion = v;
    const [h, w] = model.get("_image_shape") || [0, 0];
    const px = typed(model.get("_image"), "uint8");
    if (!h || !w || px.length !== h * w * 3) { imgCanvas = null; return null; }
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    const cx = c.getContext("2d");
    const im = cx.createImageData(w, h);
    for (let i = 0, j = 0; i < h * w; i++, j += 3) {
      im.data[i * 4] = px[j]; im.data[i * 4 + 1] = px[j + 1]; im.data[i * 4 + 2] = px[j + 2]; im.data[i * 4 + 3] = 255;
    }
    cx.putImageData(im, 0, 0);
    imgCanvas = c;
    return c;
  }

  // The spatial map (gh * gw) and the prefix-key values for panel k (-1: mean) and query q.
  function mapOf(d, k, q) {
    const out = new Float32Array(d.nk);
    if (!d.K) return out;
    const ks = k < 0 ? [...Array(d.K).keys()] : [k];
    for (const kk of ks) {
      const off = (kk * d.nq + q) * d.nk;
      for (let t = 0; t < d.nk; t++) out[t] += d.vals[off + t] / ks.length;
    }
    return out;
  }

  function paint(ctx, d, row, w, h, lut, alpha) {
    const img = imageCanvas();
    ctx.clearRect(0, 0, w, h);
    if (img) { ctx.imageSmoothingEnabled = true; ctx.drawImage(img, 0, 0, w, h); }
    else { ctx.fillStyle = "#eee"; ctx.fillRect(0, 0, w, h); }
    if (!d.K || !d.npatch) return [0, 1];
    let lo = Infinity, hi = -Infinity;
    for (let t = d.kp; t < d.nk; t++) { const v = row[t]; if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!(hi > lo)) hi = lo + 1e-9;
    const off = document.createElement("canvas");
    off.width = d.gw; off.height = d.gh;
    const ox = off.getContext("2d");
    const im = ox.createImageData(d.gw, d.gh);
    for (let p = 0; p < d.npatch; p++) {
      const i = Math.max(0, Math.min(255, Math.round(((row[d.kp + p] - lo) / (hi - lo)) * 255))) * 3;
      im.data[p * 4] = lut[i]; im.data[p * 4 + 1] = lut[i + 1]; im.data[p * 4 + 2] = lut[i + 2];
      im.data[p * 4 + 3] = Math.round(alpha * 255);
    }
    ox.putImageData(im, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, w, h);
    return [lo, hi];
  }

  function currentQuery(d) {
    const q = model.get("query");
    return d.nq <= 1 || q === null || q === undefined || q >= d.nq ? 0 : q;
  }

  function draw() {
    const tDraw = performance.now();
    const d = load();
    const size = Math.max(64, model.get("size") | 0);
    const [ih, iw] = model.get("_image_shape") || [0, 0];
    const W = size, H = ih && iw ? Math.round((size * ih) / iw) : size;
    const dpr = window.devicePixelRatio || 1;
    for (const c of [base, over]) {
      c.width = Math.round(W * dpr); c.height = Math.round(H * dpr);
      c.style.width = W + "px"; c.style.height = H + "px";
    }
    plot.style.width = W + "px"; plot.style.height = H + "px";
    const ctx = base.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const lut = makeLut(model.get("colormap"));
    const q = currentQuery(d), head = model.get("head");
    const row = mapOf(d, head, q);
    const [lo, hi] = paint(ctx, d, row, W, H, lut, model.get("opacity"));
    st = { d, W, H, q, row, lo, hi };
    drawLegend(lut, lo, hi, H);
    drawBar(d, q);
    drawHeads(d, q, lut);
    title.textContent = model.get("title") || "";
    title.style.display = title.textContent ? "" : "none";
    const m = model.get("message") || "";
    msg.textContent = m; msg.style.display = m ? "" : "none";
    drawOverlay();
    draws += 1;
    root.dataset.draws = String(draws);
    root.dataset.lastDraw = String(performance.now());
    root.dataset.drawMs = (performance.now() - tDraw).toFixed(2);
    root.dataset.empty = !d.K && !imageCanvas() ? "1" : "0"; // nothing to show (e.g. an error)
    root.dataset.grid = d.gh + "x" + d.gw;
  }

  function drawLegend(lut, lo, hi, H) {
    const h = Math.min(H, 160), dpr = window.devicePixelRatio || 1;
    legend.width = Math.round(64 * dpr); legend.height = Math.round((h + 24) * dpr);
    legend.style.width = "64px"; legend.style.height = h + 24 + "px";
    const c = legend.getContext("2d");
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    c.clearRect(0, 0, 64, h + 24);
    for (let k = 0; k < h; k++) {
      const t = Math.round((1 - k / (h - 1)) * 255) * 3;
      c.fillStyle = `rgb(${lut[t]},${lut[t + 1]},${lut[t + 2]})`;
      c.fillRect(4, 14 + k, 10, 1);
    }
    c.fillStyle = "#333"; c.font = "10px sans-serif"; c.textBaseline = "middle";
    c.fillText(fmt(hi), 17, 14); c.fillText(fmt(lo), 17, 14 + h);
    c.textBaseline = "top"; c.fillText(model.get("value_label") || "", 2, 0);
  }

  function drawBar(d, q) {
    bar.replaceChildren();
    if (d.nq <= 1) return;
    const names = model.get("prefix_names") || [];
    const label = el_("span", "vl-qlabel", bar);
    if (q < d.qp) label.textContent = `query: ${names[q] || "prefix " + q}`;
    else { const p = q - d.qp; label.textContent = `query: patch (${Math.floor(p / d.gw)}, ${p % d.gw})`; }
    for (let t = 0; t < d.qp; t++) {
      const b = el_("button", "vl-prefix" + (t === q ? " vl-active" : ""), bar);
      b.textContent = names[t] || `prefix ${t}`;
      b.onclick = () => { model.set("query", t); model.save_changes(); };
    }
  }

  function drawHeads(d, q, lut) {
    heads.replaceChildren();
    if (!model.get("show_heads") || d.K < 2) return;
    const labels = model.get("head_labels") || [], cur = model.get("head");
    const ih = model.get("_image_shape")[0] || 1, iw = model.get("_image_shape")[1] || 1;
    const s = 76, h = Math.round((s * ih) / iw);
    for (let k = -1; k < d.K; k++) {
      const cell = el_("div", "vl-head" + (k === cur ? " vl-active" : ""), heads);
      const c = el_("canvas", null, cell);
      c.width = s; c.height = h; c.style.width = s + "px"; c.style.height = h + "px";
      paint(c.getContext("2d"), d, mapOf(d, k, q), s, h, lut, model.get("opacity"));
      el_("div", "vl-cap", cell).textContent = k < 0 ? "mean" : labels[k] || `head ${k}`;
      cell.onclick = () => { model.set("head", k); model.save_changes(); };
    }
  }

  function drawOverlay() {
    if (!st) return;
    const { d, W, H, q } = st;
    const ctx = over.getContext("2d"), dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    if (!d.npatch) { readout.textContent = ""; return; }
    const cw = W / d.gw, ch = H / d.gh;
    if (d.nq > 1 && q >= d.qp) {
      const p = q - d.qp;
      ctx.lineWidth = 2; ctx.strokeStyle = "#ff2d55";
      ctx.strokeRect((p % d.gw) * cw + 1, Math.floor(p / d.gw) * ch + 1, cw - 2, ch - 2);
    }
    const names = model.get("prefix_names") || [];
    const pre = [];
    for (let t = 0; t < d.kp; t++) pre.push(`→${names[t] || "prefix " + t}: ${fmt(st.row[t])}`);
    let text = "";
    if (hover) {
      ctx.lineWidth = 1; ctx.strokeStyle = "#fff";
      ctx.strokeRect(hover[1] * cw + 0.5, hover[0] * ch + 0.5, cw - 1, ch - 1);
      const v = st.row[d.kp + hover[0] * d.gw + hover[1]];
      text = `patch (${hover[0]}, ${hover[1]}): ${model.get("value_label") || "value"} = ${fmt(v)}`;
    } else text = d.nq > 1 ? "click a patch to make it the query" : "";
    readout.textContent = [text, ...pre].filter(Boolean).join("  ·  ");
  }

  function patchAt(ev) {
    if (!st || !st.d.npatch) return null;
    const b = over.getBoundingClientRect();
    const x = ev.clientX - b.left, y = ev.clientY - b.top;
    if (x < 0 || y < 0 || x >= st.W || y >= st.H) return null;
    return [Math.min(st.d.gh - 1, Math.floor((y / st.H) * st.d.gh)), Math.min(st.d.gw - 1, Math.floor((x / st.W) * st.d.gw))];
  }
  function onMove(ev) {
    const p = patchAt(ev);
    if ((p && hover && p[0] === hover[0] && p[1] === hover[1]) || (!p && !hover)) return;
    hover = p;
    drawOverlay();
  }
  function onLeave() { hover = null; drawOverlay(); }
  function onClick(ev) {
    const p = patchAt(ev);
    if (!p) return;
    model.set("clicked", p);
    if (st.d.nq > 1) model.set("query", st.d.qp + p[0] * st.d.gw + p[1]);
    model.save_changes();
  }
  over.addEventListener("mousemove", onMove);
  over.addEventListener("mouseleave", onLeave);
  over.addEventListener("click", onClick);

  const redrawOn = ["_version", "grid", "query", "head", "prefix_names", "head_labels", "title",
    "value_label", "colormap", "opacity", "size", "show_heads", "message"];
  // Several traits change in one message: draw once, after all of them.
  let queued = false;
  const schedule = () => { if (!queued) { queued = true; queueMicrotask(() => { queued = false; draw(); }); } };
  for (const name of redrawOn) model.on(`change:${name}`, schedule);
  draw();
  return () => {
    for (const name of redrawOn) model.off(`change:${name}`, schedule);
    over.removeEventListener("mousemove", onMove);
    over.removeEventListener("mouseleave", onLeave);
    over.removeEventListener("click", onClick);
  };
}

export default { render };
