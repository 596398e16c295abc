// Small helpers the canvases share: crisp sizing on any pixel ratio, the colours, axis ticks.

export const BACKGROUND = "#0b0e12";
export const GRID = "#222a34";
export const AXIS_TEXT = "#8592a3";

// Size the backing store to the element's CSS size times the pixel ratio, so lines stay sharp on a phone,
// and return a context that draws in CSS pixels. Cheap when nothing changed.
export function fitCanvas(canvas) {
  const dpr = Math.max(1, Math.min(window.devicePixelRatio || 1, 3));
  const w = Math.max(1, Math.round(canvas.clientWidth));
  const h = Math.max(1, Math.round(canvas.clientHeight));
  const bw = Math.round(w * dpr);
  const bh = Math.round(h * dpr);
  if (canvas.width !== bw || canvas.height !== bh) {
    canvas.width = bw;
    canvas.height = bh;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, w, h };
}

export function clear(ctx, w, h) {
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, w, h);
}

// One colour per resonance (or control dimension): hues spread round the wheel, skipping none, so
// neighbours differ. Alpha lets callers fade variants and weak values.
export function indexColour(i, n, alpha = 1, light = 60) {
  const hue = (i * 360) / Math.max(1, n);
  return `hsla(${hue.toFixed(1)}, 80%, ${light}%, ${alpha})`;
}

// Sources of control events get a stable colour in order of first appearance; the ones this project
// names are fixed so they look the same on every page.
const KNOWN_SOURCES = {
  page: "#4fb3ff",
  ws: "#4fb3ff",
  websocket: "#4fb3ff",
  osc: "#ffb347",
  mapping: "#c38cff",
  sensor: "#c38cff",
  phone: "#3ccf7a",
  hands: "#ff6fa8",
  midi: "#f2e55c",
};
const SPARE = ["#5ee0d8", "#ff8a65", "#a3d977", "#e88cff", "#ffd166", "#8ab4ff", "#ff9fb2", "#b0bec5"];
const assigned = new Map();

export function sourceColour(source) {
  const key = String(source ?? "unknown").toLowerCase();
  if (!assigned.has(key)) {
    assigned.set(key, KNOWN_SOURCES[key] ?? SPARE[assigned.size % SPARE.length]);
  }
  return assigned.get(key);
}

export function knownSources() {
  return [...assigned.entries()];
}

export function dbOf(x, floor = -120) {
  return x > 0 ? Math.max(floor, 20 * Math.log10(x)) : floor;
}

// Frequency ticks worth labelling on a log axis between lo and hi.
export function logTicks(lo, hi) {
  const out = [];
  for (let decade = 10 ** Math.floor(Math.log10(lo)); decade <= hi; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const f = decade * m;
      if (f >= lo && f <= hi) out.push(f);
    }
  }
  return out;
}

export function hzLabel(f) {
  return f >= 1000 ? `${f / 1000}k` : `${f}`;
}
