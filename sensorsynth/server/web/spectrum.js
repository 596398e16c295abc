// The instrument's modes as a spectrum: one stem per oscillator on a log-frequency axis, amplitude in dB,
// one colour per resonance. Expressivity variants of a resonance share its colour; variants after the
// first are drawn fainter, so the resting sound stands out and the deformation's reach is still visible.

import { AXIS_TEXT, GRID, clear, dbOf, fitCanvas, hzLabel, indexColour, logTicks } from "./plot.js";

const RANGE_DB = 80;
const PAD = { left: 36, right: 12, top: 8, bottom: 20 };

export function drawSpectrum(canvas, detail) {
  const { ctx, w, h } = fitCanvas(canvas);
  clear(ctx, w, h);
  if (!detail?.modes) {
    message(ctx, w, h, "no instrument loaded");
    return;
  }
  const { freq_hz: freq, amplitude } = detail.modes;
  const R = detail.n_resonances;
  const E = detail.expressivity;
  const M = detail.n_oscillators;
  const nyquist = detail.sample_rate / 2;
  const lo = 10;
  const hi = Math.max(lo * 10, nyquist);

  let maxDb = -Infinity;
  for (let i = 0; i < amplitude.length; i++) maxDb = Math.max(maxDb, dbOf(Math.abs(amplitude[i])));
  if (!Number.isFinite(maxDb) || maxDb <= -120) maxDb = 0;
  const top = Math.ceil(maxDb / 10) * 10;
  const bottom = top - RANGE_DB;

  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const logLo = Math.log10(lo);
  const logSpan = Math.log10(hi) - logLo;
  const xOf = (f) => PAD.left + (plotW * (Math.log10(Math.min(hi, Math.max(lo, f))) - logLo)) / logSpan;
  const yOf = (db) => PAD.top + (plotH * (top - Math.max(bottom, Math.min(top, db)))) / RANGE_DB;

  drawAxes(ctx, w, h, lo, hi, top, bottom, xOf, yOf);

  // Weak stems first so the loud ones end up on top; the order inside the arrays is (r, e, m).
  const order = [];
  for (let i = 0; i < R * E * M; i++) if (amplitude[i] !== 0 && freq[i] > 0) order.push(i);
  order.sort((a, b) => Math.abs(amplitude[a]) - Math.abs(amplitude[b]));
  const base = yOf(bottom);
  ctx.lineWidth = 1.25;
  for (const i of order) {
    const r = Math.floor(i / (E * M));
    const e = Math.floor(i / M) % E;
    const x = Math.round(xOf(freq[i])) + 0.5;
    const y = yOf(dbOf(Math.abs(amplitude[i])));
    if (y >= base) continue;
    ctx.strokeStyle = indexColour(r, R, e === 0 ? 0.9 : 0.35);
    ctx.beginPath();
    ctx.moveTo(x, base);
    ctx.lineTo(x, y);
    ctx.stroke();
    if (e === 0) {
      ctx.fillStyle = indexColour(r, R, 1, 70);
      ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
  }
  ctx.fillStyle = AXIS_TEXT;
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "right";
  ctx.fillText(`${R} resonances × ${E} variants × ${M} oscillators`, w - PAD.right - 2, PAD.top + 11);
}

function drawAxes(ctx, w, h, lo, hi, top, bottom, xOf, yOf) {
  ctx.font = "10px system-ui, sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = GRID;
  ctx.fillStyle = AXIS_TEXT;
  ctx.textAlign = "center";
  for (const f of logTicks(lo, hi)) {
    const x = Math.round(xOf(f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, PAD.top);
    ctx.lineTo(x, h - PAD.bottom);
    ctx.stroke();
    ctx.fillText(hzLabel(f), x, h - 6);
  }
  ctx.textAlign = "right";
  for (let db = top; db >= bottom; db -= 20) {
    const y = Math.round(yOf(db)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(PAD.left, y);
    ctx.lineTo(w - PAD.right, y);
    ctx.stroke();
    ctx.fillText(`${db}`, PAD.left - 4, Math.max(y + 3, PAD.top + 7));
  }
}

export function message(ctx, w, h, text) {
  ctx.fillStyle = AXIS_TEXT;
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(text, w / 2, h / 2);
}
