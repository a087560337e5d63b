// vitlens SliderKeys: arrow keys move the explorer's sliders in every front end.
// Notebook 7 (and JupyterLab for ArrowUp/Down) binds arrow keys in command mode to notebook
// commands, which take the key before a focused slider sees it. Lumino skips its shortcuts
// for a target inside an element marked data-lm-suppress-shortcuts: mark every slider of
// the explorer this (invisible) view sits in, also the ones rendered later.
// Older Lumino (Notebook 7's) ignores that mark but skips any key event already
// default-prevented; a window capture listener, which runs before the shortcut handler on
// the document, prevents the default of slider keys on a marked slider. The slider still
// gets the key (noUiSlider prevents the default itself anyway: no page scroll).
const SLIDER_KEYS = new Set(["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End",
  "PageUp", "PageDown"]);
function guardKeys() {
  if (window.__vitlensSliderKeys) return;
  window.__vitlensSliderKeys = true;
  window.addEventListener("keydown", (e) => {
    const t = e.target;
    if (SLIDER_KEYS.has(e.key) && t instanceof Element &&
        t.closest(".vitlens-explorer [data-lm-suppress-shortcuts]")) e.preventDefault();
  }, true);
}

function render({ model, el }) {
  guardKeys();
  el.style.display = "none";
  let box = null, queued = false;
  const mark = () => {
    queued = false;
    box = box || el.closest(".vitlens-explorer");
    if (!box) return;
    let n = 0;
    for (const s of box.querySelectorAll(".noUi-target, .widget-slider input, .widget-hslider")) {
      if (!s.hasAttribute("data-lm-suppress-shortcuts")) s.setAttribute("data-lm-suppress-shortcuts", "true");
      n += 1;
    }
    box.dataset.sliderKeys = String(n); // how many sliders are guarded (for tests)
  };
  const later = () => { if (!queued) { queued = true; requestAnimationFrame(mark); } };
  const obs = new MutationObserver(later);
  requestAnimationFrame(() => {
    mark();
    if (box) obs.observe(box, { childList: true, subtree: true });
  });
  return () => obs.disconnect();
}

export default { render };
