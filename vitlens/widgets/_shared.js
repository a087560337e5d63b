// Shared by the vitlens views (prepended to each view's module by vitlens/widgets/_base.py):
// colour maps as 256-entry lookup tables, and typed arrays from binary traits.

const CMAPS = {
  magma: ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55064", "#fb8761", "#fec287", "#fcfdbf"],
  viridis: ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"],
  blues: ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"],
  rdbu: ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#f7f7f7", "#92c5de", "#4393c3", "#2166ac", "#053061"],
};
function makeLut(name, fallback = "viridis") {
  const stops = (CMAPS[name] || CMAPS[fallback]).map((h) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16)));
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(t), stops.length - 2);
    const f = t - k;
    for (let c = 0; c < 3; c++) lut[i * 3 + c] = stops[k][c] * (1 - f) + stops[k + 1][c] * f;
  }
  return lut;
}

function typed(v, dtype) {
  const C = { float32: Float32Array, float64: Float64Array, uint8: Uint8Array, int32: Int32Array }[dtype] || Float32Array;
  if (!v) return new C(0);
  let bytes;
  if (v instanceof ArrayBuffer) bytes = new Uint8Array(v);
  else if (ArrayBuffer.isView(v)) bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  else return new C(0);
  return new C(bytes.slice().buffer); // copy: aligned for any dtype
}
