// The control signal the fit learned, as a piano roll: time across, one row per control dimension
// (dimension 0 on top, in the same order as the play surface), intensity = value. The signal is sparse
// (a few dozen attacks in thousands of cells), so each event gets at least a few pixels of width.

import { AXIS_TEXT, GRID, clear, fitCanvas, indexColour } from "./plot.js";
import { message } from "./spectrum.js";

const PAD = { left: 26, right: 8, top: 6, bottom: 20 };

export function drawRoll(canvas, detail) {
  const { ctx, w, h } = fitCanvas(canvas);
  clear(ctx, w, h);
  const control = detail?.control;
  if (!control) {
    message(ctx, w, h, "no instrument loaded");
    return;
  }
  const K = control.dims || detail.control_plane_dim;
  const F = Math.max(1, control.frames);
  const rate = control.frame_rate || 1;
  const events = control.events || [];
  const plotW = w - PAD.left - PAD.right;
  const plotH = h - PAD.top - PAD.bottom;
  const rowH = plotH / K;
  const colW = plotW / F;

  // Rows and a time grid in whole seconds (or tenths for a very short signal).
  ctx.lineWidth = 1;
  ctx.font = "10px system-ui, sans-serif";
  for (let k = 0; k < K; k++) {
    const y = PAD.top + k * rowH;
    ctx.fillStyle = k % 2 ? "#10151b" : "#0d1116";
    ctx.fillRect(PAD.left, y, plotW, rowH);
    if (rowH >= 9 && (K <= 16 || k % 4 === 0)) {
      ctx.fillStyle = AXIS_TEXT;
      ctx.textAlign = "right";
      ctx.fillText(String(k), PAD.left - 4, y + rowH / 2 + 3);
    }
  }
  const seconds = F / rate;
  const step = seconds > 2 ? 1 : 0.1;
  ctx.strokeStyle = GRID;
  ctx.fillStyle = AXIS_TEXT;
  ctx.textAlign = "center";
  for (let t = 0; t <= seconds + 1e-9; t += step) {
    const x = Math.round(PAD.left + (t * rate) * colW) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, PAD.top);
    ctx.lineTo(x, h - PAD.bottom);
    ctx.stroke();
    ctx.fillText(step >= 1 ? `${Math.round(t)}s` : `${t.toFixed(1)}s`, x, h - 6);
  }

  if (!events.length) {
    message(ctx, w, h, "this instrument has no learned control signal");
    return;
  }
  let maxV = 0;
  for (const [, , v] of events) maxV = Math.max(maxV, v);
  if (!(maxV > 0)) maxV = 1;
  const barW = Math.max(3, colW);
  // Quieter events first, so a strong attack is never hidden under a weak one in the same cell.
  const sorted = [...events].sort((a, b) => a[2] - b[2]);
  for (const [frame, k, v] of sorted) {
    if (k < 0 || k >= K || !(v > 0)) continue;
    const rel = Math.sqrt(v / maxV);  // sqrt: the quiet attacks stay visible beside the loud ones
    const x = PAD.left + frame * colW;
    ctx.fillStyle = indexColour(k, K, 0.25 + 0.75 * rel, 40 + 30 * rel);
    ctx.fillRect(x, PAD.top + k * rowH + 1, barW, Math.max(1, rowH - 2));
  }
  ctx.fillStyle = AXIS_TEXT;
  ctx.textAlign = "right";
  ctx.fillText(`${events.length} events, max ${maxV.toFixed(2)}`, w - PAD.right - 2, PAD.top + 10);
}
