// The live view: a scrolling lane per control dimension showing what comes in and what it becomes.
//
// Hollow marks are this page's own inputs at the moment the finger or mouse hit (the raw input); filled
// bars are the control events the server reports it applied ("events" messages, from every source:
// OSC, mappings, other pages, this one), coloured by source, height = value. Below them a lane for
// deformations and a trace of the output level, so the sound can be matched to what caused it.

import { AXIS_TEXT, GRID, clear, dbOf, fitCanvas, sourceColour } from "./plot.js";

const WINDOW_S = 8;
const PAD = { left: 26, right: 6, top: 4, bottom: 4 };
const LEVEL_H = 46;
const DEFORM_H = 14;
const FULL_VALUE = 1.5;   // a value this big fills the lane; fitted controls rarely exceed it

export class EventLanes {
  constructor(canvas) {
    this.canvas = canvas;
    this.dims = 16;
    this.marks = [];   // {t, k, v, colour, input}
    this.deforms = []; // {t, colour}
    this.levels = [];  // {t, rms, peak}
    this.running = false;
    this.draw = this.draw.bind(this);
  }

  setDims(k) {
    this.dims = Math.max(1, k | 0);
  }

  now() {
    return performance.now() / 1000;
  }

  // One entry of an "events" message: {voice, kind, values, source}.
  addEvent(ev, t = this.now()) {
    const colour = sourceColour(ev.source);
    if (ev.kind === "deform") {
      this.deforms.push({ t, colour });
      return;
    }
    if (ev.kind !== "control" || !Array.isArray(ev.values)) return;
    ev.values.forEach((v, k) => {
      if (v > 0 && k < this.dims) this.marks.push({ t, k, v, colour, input: false });
    });
  }

  addInput(k, v, t = this.now()) {
    this.marks.push({ t, k, v, colour: "#e8edf3", input: true });
  }

  addLevel(rms, peak, t = this.now()) {
    this.levels.push({ t, rms, peak });
  }

  start() {
    if (this.running) return;
    this.running = true;
    requestAnimationFrame(this.draw);
  }

  prune(now) {
    const oldest = now - WINDOW_S - 0.5;
    // Entries arrive in time order, so the stale ones are a prefix.
    for (const list of [this.marks, this.deforms, this.levels]) {
      let n = 0;
      while (n < list.length && list[n].t < oldest) n++;
      if (n) list.splice(0, n);
    }
  }

  draw() {
    if (!this.running) return;
    requestAnimationFrame(this.draw);
    const now = this.now();
    this.prune(now);
    const { ctx, w, h } = fitCanvas(this.canvas);
    clear(ctx, w, h);
    const K = this.dims;
    const plotW = w - PAD.left - PAD.right;
    const lanesH = h - PAD.top - PAD.bottom - LEVEL_H - DEFORM_H;
    const laneH = lanesH / K;
    const xOf = (t) => PAD.left + plotW * (1 - (now - t) / WINDOW_S);

    ctx.font = "10px system-ui, sans-serif";
    ctx.textAlign = "right";
    for (let k = 0; k < K; k++) {
      const y = PAD.top + k * laneH;
      ctx.fillStyle = k % 2 ? "#10151b" : "#0d1116";
      ctx.fillRect(PAD.left, y, plotW, laneH);
      if (laneH >= 9 && (K <= 16 || k % 4 === 0)) {
        ctx.fillStyle = AXIS_TEXT;
        ctx.fillText(String(k), PAD.left - 4, y + laneH / 2 + 3);
      }
    }
    const deformY = PAD.top + lanesH;
    const levelY = deformY + DEFORM_H;
    ctx.fillStyle = "#12171e";
    ctx.fillRect(PAD.left, deformY, plotW, DEFORM_H);
    ctx.fillStyle = AXIS_TEXT;
    ctx.fillText("def", PAD.left - 2, deformY + DEFORM_H / 2 + 3);
    ctx.fillText("out", PAD.left - 2, levelY + LEVEL_H / 2 + 3);

    // Whole-second grid lines that scroll with the data.
    ctx.strokeStyle = GRID;
    ctx.lineWidth = 1;
    for (let s = Math.ceil(now - WINDOW_S); s <= now; s++) {
      const x = Math.round(xOf(s)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, PAD.top);
      ctx.lineTo(x, h - PAD.bottom);
      ctx.stroke();
    }

    for (const m of this.marks) {
      const x = xOf(m.t);
      const frac = Math.min(1, Math.max(0.12, m.v / FULL_VALUE));
      const bh = Math.max(2, (laneH - 2) * frac);
      const y = PAD.top + m.k * laneH + (laneH - bh) / 2;
      if (m.input) {
        ctx.strokeStyle = m.colour;
        ctx.lineWidth = 1.5;
        ctx.strokeRect(x - 3.5, y, 7, bh);
      } else {
        ctx.fillStyle = m.colour;
        ctx.fillRect(x - 2, y, 4, bh);
      }
    }
    for (const d of this.deforms) {
      ctx.fillStyle = d.colour;
      ctx.fillRect(xOf(d.t) - 2, deformY + 3, 4, DEFORM_H - 6);
    }
    this.drawLevel(ctx, xOf, levelY, plotW);
  }

  drawLevel(ctx, xOf, y0, plotW) {
    const floor = -60;
    const yOf = (x) => y0 + LEVEL_H - 2 - ((LEVEL_H - 4) * (dbOf(x, floor) - floor)) / -floor;
    ctx.fillStyle = "#12171e";
    ctx.fillRect(PAD.left, y0, plotW, LEVEL_H);
    if (this.levels.length < 2) return;
    ctx.beginPath();
    ctx.moveTo(xOf(this.levels[0].t), y0 + LEVEL_H);
    for (const l of this.levels) ctx.lineTo(xOf(l.t), yOf(l.rms));
    ctx.lineTo(xOf(this.levels[this.levels.length - 1].t), y0 + LEVEL_H);
    ctx.closePath();
    ctx.fillStyle = "rgba(60, 207, 122, 0.45)";
    ctx.fill();
    ctx.beginPath();
    this.levels.forEach((l, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, xOf(l.t), yOf(l.peak)));
    ctx.strokeStyle = "rgba(232, 237, 243, 0.6)";
    ctx.lineWidth = 1;
    ctx.stroke();
  }
}
