// The play surface: one cell per control dimension, played with mouse, pen or fingers (Pointer Events).
//
// A hit's loudness comes from the pointer's pressure when the device really reports one (browsers fill
// in 0.5 for "pressed, pressure unknown" and 0 for "not pressed"; many touchscreens without a force
// sensor, and emulated touches, report a constant 1), otherwise from how fast the pointer was
// moving over its last few moves: a fast strike or swipe plays loud, a slow one soft, a plain click or tap
// gets DEFAULT_VALUE. Dragging across cells fires each cell it enters, like a strum.

import { indexColour } from "./plot.js";

export const DEFAULT_VALUE = 0.6;
const MIN_VALUE = 0.15;
const MAX_VALUE = 1.2;
const SPEED_WINDOW_MS = 100;   // moves older than this say nothing about the current stroke
const MAX_MOVES = 6;

export function hasRealPressure(pressure, pointerType) {
  if (!(pressure > 0 && pressure <= 1) || pressure === 0.5) return false;
  return !(pointerType === "touch" && pressure === 1);
}

export function loudnessFrom(pressure, speedCellsPerS, pointerType = "mouse") {
  if (hasRealPressure(pressure, pointerType)) {
    return clamp(MIN_VALUE + (MAX_VALUE - MIN_VALUE) * pressure);
  }
  if (speedCellsPerS !== null) {
    // 4 cells/s (an easy swipe) gives the default; a flick across the surface reaches the top.
    return clamp(0.2 + 0.1 * speedCellsPerS);
  }
  return DEFAULT_VALUE;
}

function clamp(v) {
  return Math.min(MAX_VALUE, Math.max(MIN_VALUE, v));
}

export class PlaySurface {
  constructor(el, { onHit }) {
    this.el = el;
    this.onHit = onHit;          // (index, value, pointerType) => void
    this.cells = [];
    this.pointers = new Map();   // pointerId -> {down, cell, moves: [{x, y, t}]}
    el.addEventListener("pointerdown", (e) => this.down(e));
    el.addEventListener("pointermove", (e) => this.move(e));
    for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
      el.addEventListener(type, (e) => this.up(e));
    }
    el.addEventListener("pointerleave", (e) => {
      if (!this.pointers.get(e.pointerId)?.down) this.pointers.delete(e.pointerId);
    });
    // A long press must not open a context menu over the surface on a phone.
    el.addEventListener("contextmenu", (e) => e.preventDefault());
    el.addEventListener("keydown", (e) => this.key(e));
  }

  setDims(k) {
    k = Math.max(1, k | 0);
    if (k === this.cells.length) return;
    const cols = Math.ceil(Math.sqrt(k));
    this.el.style.setProperty("--cols", String(cols));
    this.el.replaceChildren();
    this.cells = [];
    for (let i = 0; i < k; i++) {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.index = String(i);
      cell.setAttribute("role", "button");
      cell.setAttribute("tabindex", "0");
      cell.setAttribute("aria-label", `control dimension ${i}`);
      cell.style.setProperty("--hue", indexColour(i, k, 1, 55));
      const flash = document.createElement("div");
      flash.className = "flash";
      const label = document.createElement("span");
      label.textContent = String(i);
      cell.append(flash, label);
      this.el.append(cell);
      this.cells.push(cell);
    }
  }

  cellAt(x, y) {
    // With the pointer captured, the event target is always the surface: ask what lies under the point.
    const hit = document.elementFromPoint(x, y)?.closest?.(".cell");
    if (!hit || !this.el.contains(hit)) return -1;
    return Number(hit.dataset.index);
  }

  track(e) {
    let st = this.pointers.get(e.pointerId);
    if (!st) {
      st = { down: false, cell: -1, moves: [] };
      this.pointers.set(e.pointerId, st);
    }
    const events = e.getCoalescedEvents?.() ?? [];
    for (const c of events.length ? events : [e]) {
      st.moves.push({ x: c.clientX, y: c.clientY, t: c.timeStamp || e.timeStamp });
    }
    if (st.moves.length > MAX_MOVES) st.moves.splice(0, st.moves.length - MAX_MOVES);
    return st;
  }

  speed(st, now) {
    const recent = st.moves.filter((m) => now - m.t <= SPEED_WINDOW_MS);
    if (recent.length < 2) return null;
    const a = recent[0];
    const b = recent[recent.length - 1];
    const dt = Math.max(8, b.t - a.t);
    const px = Math.hypot(b.x - a.x, b.y - a.y);
    const cellPx = this.cells[0]?.getBoundingClientRect().width || 80;
    return (px / cellPx) * (1000 / dt);
  }

  down(e) {
    e.preventDefault();
    // Capture on the surface itself so moves and the release reach us even outside the cell.
    try {
      this.el.setPointerCapture(e.pointerId);
    } catch {
      /* a pointer that already ended cannot be captured; nothing to do */
    }
    // The approach before the press counts (a mouse moves, then clicks); the press point does not.
    const st = this.pointers.get(e.pointerId) ?? this.track(e);
    st.down = true;
    const k = this.cellAt(e.clientX, e.clientY);
    st.cell = k;
    if (k >= 0) this.fire(k, loudnessFrom(e.pressure, this.speed(st, e.timeStamp), e.pointerType), e.pointerType);
    st.moves = [{ x: e.clientX, y: e.clientY, t: e.timeStamp }];
  }

  move(e) {
    const st = this.track(e);
    if (!st.down) return;
    const k = this.cellAt(e.clientX, e.clientY);
    if (k !== st.cell) {
      st.cell = k;
      if (k >= 0) this.fire(k, loudnessFrom(e.pressure, this.speed(st, e.timeStamp), e.pointerType), e.pointerType);
    }
  }

  up(e) {
    const st = this.pointers.get(e.pointerId);
    if (!st) return;
    st.down = false;
    st.cell = -1;
    if (e.pointerType !== "mouse") this.pointers.delete(e.pointerId);
  }

  key(e) {
    if (e.key !== "Enter" && e.key !== " ") return;
    const cell = e.target.closest?.(".cell");
    if (!cell || e.repeat) return;
    e.preventDefault();
    this.fire(Number(cell.dataset.index), DEFAULT_VALUE, "keyboard");
  }

  fire(k, value, pointerType) {
    this.flash(k, value / MAX_VALUE, false);
    this.onHit(k, value, pointerType);
  }

  // Light the cell; remote hits (events from other sources) light it less and outline it.
  flash(k, strength, remote) {
    const cell = this.cells[k];
    if (!cell) return;
    const flash = cell.firstElementChild;
    const peak = remote ? 0.15 + 0.35 * strength : 0.35 + 0.65 * strength;
    flash.animate([{ opacity: Math.min(1, peak) }, { opacity: 0 }], {
      duration: remote ? 500 : 380,
      easing: "ease-out",
    });
    if (remote) {
      cell.classList.add("remote");
      clearTimeout(cell._remoteTimer);
      cell._remoteTimer = setTimeout(() => cell.classList.remove("remote"), 300);
    }
  }
}
