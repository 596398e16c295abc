// Teach (the phone page): a learned mapping from this phone's motion to the instrument, as Wekinator does
// (README "Learned mappings: record → train → run").
//
//   Record (on) → hold a pose and tap the cell it should play; hold a rest pose without tapping → Record
//   (off) → Train (ridge or mlp) → Run: the phone now plays through the trained model instead of the
//   instrument's own basis. Replay records while the voice replays the instrument's own performance (one
//   pass, then the server stops the recording by itself).
//
// Every button sends one {type: "learn", action, ...} message; every answer is a "learn" message holding
// the session's state, and the panel shows only that: what the server says, never what the page hoped.
// The learn session belongs to the WebSocket client, so a reconnect starts a new (empty) one: each welcome
// asks for the status, and the panel shows the truth (Record and Run off; a trained model, saved beside
// the instrument, stays). While recording or replaying it asks again twice a second, for the pairs count
// and for the end of a replay (the server does not announce it).
//
// Tapping a cell sends {type: "control", index, value}: it sounds, and while recording it is the target.
//
// For tests and debugging the state is on window.sensorsynthPhone.teach (see `view`) and the panel's
// <section data-teach="idle|recording|replaying|training|running">.

import { PlaySurface } from "./pad.js";

const POLL_MS = 500;
const MAX_PLAYED = 64;

export class TeachPanel {
  // els: {panel, pad, record, replay, train, model, run, clear, state, pairs, targets, score, info, error}
  // onHit(index, value): the page's own echo of a tap (the event lanes).
  constructor({ conn, els, source = "phone", onHit }) {
    this.conn = conn;
    this.els = els;
    this.source = source;
    this.onHitEcho = onHit;
    this.view = {
      state: null,        // the last "learn" answer (null until the server answered)
      answers: 0,
      training: false,    // a train request is out (the server answers only when the fit is done)
      trained: null,      // the last train answer's "trained" and "errors"
      errors: null,
      error: null,        // the last refusal, in words
      taps: 0,
      played: [],         // the control events this voice played from this phone's source: {index, value, t}
      voice: null,
    };
    this.pad = new PlaySurface(els.pad, { onHit: (index, value) => this.tap(index, value) });
    this.pad.setDims(16);
    els.record.addEventListener("click", () => {
      this.ask({ action: "record", enabled: !this.view.state?.recording, source: this.source });
    });
    els.replay.addEventListener("click", () => this.ask({ action: "replay", source: this.source }));
    els.train.addEventListener("click", () => {
      if (this.ask({ action: "train", model: els.model.value })) {
        this.view.training = true;
        this.render();
      }
    });
    els.run.addEventListener("click", () => this.ask({ action: "run", enabled: !this.view.state?.running }));
    els.clear.addEventListener("click", () => this.ask({ action: "clear" }));
    setInterval(() => this.poll(), POLL_MS);
    this.render();
  }

  // --- to the server ------------------------------------------------------------------------------------

  ask(fields) {
    this.view.error = null;  // a new action: the last one's complaints are old news
    this.view.trained = this.view.errors = null;
    const sent = this.conn.send({ type: "learn", ...fields });
    if (!sent) this.view.error = "Not connected: wait for the connection to come back.";
    this.render();
    return sent;
  }

  tap(index, value) {
    const v = Math.round(value * 1000) / 1000;
    if (this.conn.send({ type: "control", index, value: v })) this.view.taps++;
    this.onHitEcho?.(index, v);
  }

  poll() {
    const s = this.view.state;
    if (this.conn.connected && !this.view.training && s && (s.recording || s.replaying)) {
      this.conn.send({ type: "learn", action: "status" });
    }
  }

  // --- from the server ----------------------------------------------------------------------------------

  onWelcome(welcome, instruments) {
    this.view.voice = welcome.voice;
    this.view.training = false;  // an answer due on the old connection will never come
    this.setInstrument(welcome.instrument, instruments);
    this.conn.send({ type: "learn", action: "status" });
  }

  setInstrument(name, instruments) {
    const inst = (instruments ?? []).find((i) => i.name === name);
    if (inst) this.pad.setDims(inst.control_plane_dim);
  }

  onInstrumentChanged(name, instruments) {
    this.setInstrument(name, instruments);
    this.conn.send({ type: "learn", action: "status" });  // models are per instrument
  }

  onLearn(msg) {
    this.view.answers++;
    this.view.state = msg;
    if ("trained" in msg || "errors" in msg) {
      this.view.training = false;
      this.view.trained = msg.trained ?? {};
      this.view.errors = msg.errors ?? {};
    }
    this.render();
  }

  // The socket's state changed: a closed socket took the session with it (the server forgets it).
  onConnState(state) {
    if (state !== "connected") {
      this.view.state = null;
      this.view.training = false;
    }
    this.render();
  }

  // An "error" message: the panel's own (ref "learn") are shown here; true when handled.
  onError(msg) {
    if (msg?.code === "no_voice") this.view.training = false;  // no voice, no answer: the page toasts it
    if (msg?.ref !== "learn") return false;
    this.view.training = false;
    this.view.error = `The server refused: ${msg.message ?? msg.code}`;
    this.render();
    return true;
  }

  // One entry of an "events" push: light the cells this phone's motion played on this voice.
  onEvent(ev) {
    if (ev.voice !== this.view.voice || ev.kind !== "control" || !Array.isArray(ev.values)) return;
    if (ev.source !== `motion:${this.source}`) return;
    let index = 0;
    ev.values.forEach((v, k) => {
      if (v > ev.values[index]) index = k;
    });
    this.view.played.push({ index, value: ev.values[index], t: performance.now() });
    if (this.view.played.length > MAX_PLAYED) this.view.played.shift();
    const peak = ev.values[index] || 1;
    ev.values.forEach((v, k) => v > 0 && this.pad.flash(k, Math.min(1, v / peak), true));
  }

  // --- the panel ------------------------------------------------------------------------------------------

  phase() {
    const s = this.view.state;
    if (this.view.training) return "training";
    if (s?.replaying) return "replaying";
    if (s?.recording) return "recording";
    if (s?.running) return "running";
    return "idle";
  }

  render() {
    const { els, view } = this;
    const s = view.state;
    const connected = this.conn.connected && s !== null;
    const phase = this.phase();
    els.panel.dataset.teach = phase;

    els.record.textContent = s?.recording ? "Stop recording" : "Record";
    els.record.setAttribute("aria-pressed", String(!!s?.recording));
    els.run.textContent = s?.running ? "Stop running" : "Run";
    els.run.setAttribute("aria-pressed", String(!!s?.running));
    els.record.disabled = !connected || view.training;
    els.replay.disabled = !connected || view.training || !!s?.recording;
    els.train.disabled = !connected || view.training || !!s?.recording;
    els.model.disabled = els.train.disabled;
    els.run.disabled = !connected || view.training;
    els.clear.disabled = !connected || view.training || !!s?.recording;

    const pairs = s ? (s.frames?.[this.source] ?? 0) : null;
    const model = s?.models?.[this.source] ?? null;
    els.pairs.textContent = pairs === null ? "–" : String(pairs);
    els.targets.textContent = s ? String(s.targets ?? 0) : "–";
    els.score.textContent = model ? scoreText(model.score) : "–";

    const words = {
      idle: s ? "Idle." : "Waiting for the server…",
      recording: "Recording: hold a pose and tap the cell it should play; rest without tapping.",
      replaying: "Recording while the instrument replays its own performance: move along with it.",
      training: `Training (${els.model.value})…`,
      running: model ? "Running: this phone plays through its model." :
        `Running, but there is no model for this phone on ${s?.instrument ?? "this instrument"} yet: it ` +
        "plays as before.",
    };
    els.state.textContent = words[phase];
    if (s?.running && phase !== "running") els.state.textContent += " Run is on.";

    els.info.textContent = model
      ? `Model for ${s.instrument}: ${model.model}, ${model.pairs} pairs, ${model.events} notes, ` +
        `score R² ${scoreText(model.score)}.`
      : s ? `No model yet for ${s.instrument}: record, then train.` : "";

    const problems = [];
    if (view.error) problems.push(view.error);
    for (const [who, why] of Object.entries(view.errors ?? {})) {
      problems.push(who === "*" ? `Not trained: ${why}.` : `Not trained for ${who}: ${why}.`);
    }
    if (view.trained && !Object.keys(view.trained).length && !problems.length) {
      problems.push("Nothing was trained: no sensor frames were recorded.");
    }
    els.error.textContent = problems.join(" ").replace(/\.\./g, ".");
    els.error.hidden = problems.length === 0;
  }
}

function scoreText(score) {
  return typeof score === "number" && Number.isFinite(score) ? score.toFixed(2) : "–";
}
