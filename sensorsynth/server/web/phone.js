// The phone page (/phone): streams the phone's motion sensors to the server as sensor frames and shows
// what it sends and what the server plays; it can play the sound on the phone too.
//
// - Start (a tap) asks for motion permission where the browser wants it (iOS), then streams one frame per
//   devicemotion event (motion.js) over the WebSocket: {type: "sensor", source: "phone", kind: "motion",
//   values: [9 numbers], t}. Frames made while the socket is down, or while it is backed up (a stalling
//   Wi-Fi), are dropped: a late shake is worse than none.
// - The socket (connection.js) reconnects by itself with a capped, jittered backoff, and at once when the
//   network or the tab comes back; every (re)connect says hello with monitor on, so the server pushes its
//   meter and the control events it plays. Those pushes also prove the link alive: after a Wi-Fi drop a
//   phone's socket often stays half-open without ever closing, so a link silent for STALE_MS is replaced.
// - "Play on phone" plays the server's PCM stream through the same AudioWorklet listener as the live page.
// - Teach (teach.js) records this phone's motion paired with the cells tapped meanwhile, trains a model on
//   the server and runs it: learned mappings, driven from the page.
//
// For tests and debugging the page's state is on `window.sensorsynthPhone` (the Teach panel's on its
// `teach`), the connection state on <html data-state="...">, and the motion state on
// <html data-motion="stopped|starting|running|denied">.

import { Connection } from "./connection.js";
import { EventLanes } from "./lanes.js";
import { Listener } from "./listen.js";
import { showConnText, showToast, wireListen } from "./page.js";
import { MotionReader, motionSupported, requestMotionPermission } from "./motion.js";
import { AXIS_TEXT, GRID, clear, dbOf, fitCanvas } from "./plot.js";
import { RecordController } from "./record.js";
import { TeachPanel } from "./teach.js";

const $ = (id) => document.getElementById(id);
const SOURCE = "phone";
const MAX_BUFFERED_BYTES = 16 * 1024;  // more than this queued in the socket: the network stalls, drop frames
const NO_EVENTS_HINT_MS = 2500;
const STALE_MS = 4000;  // monitor pushes come 20 times a second: this long without any, the link is dead

const phone = {
  state: "connecting",
  welcome: null,
  voice: null,
  sampleRate: null,
  instrument: null,
  instruments: [],
  motion: "stopped",       // stopped, starting, running, denied, unsupported
  permission: null,        // granted, denied, not-needed, or the error
  accelSource: null,       // device (gravity-free from the phone) or filtered (gravity removed here)
  sent: 0,
  dropped: 0,              // made while disconnected
  congested: 0,            // made while the socket was backed up
  rateHz: 0,
  last: null,              // the last frame sent: {values, t}
  sendMs: [],              // event → handed to the socket, the last 256 frames
  peak: 0,                 // loudest meter peak since resetPeak()
  counts: { meter: 0, events: 0, ownEvents: 0, audioFrames: 0, errors: 0 },
  errors: [],
  listen: null,
  teach: null,             // the Teach panel's view (teach.js)
  resetPeak() {
    this.peak = 0;
  },
  sendLatency() {
    const s = [...this.sendMs].sort((a, b) => a - b);
    const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null);
    return { n: s.length, p50: q(0.5), p99: q(0.99), max: s.length ? s[s.length - 1] : null };
  },
};
window.sensorsynthPhone = phone;

// --- what it sends: values and a 5-second plot ----------------------------------------------------------

const PLOT_S = 5;
const history = [];  // {t (s, performance clock), v: values}

function recordFrame(frame) {
  history.push({ t: frame.eventTime / 1000, v: frame.values });
  const oldest = frame.eventTime / 1000 - PLOT_S - 0.5;
  let n = 0;
  while (n < history.length && history[n].t < oldest) n++;
  if (n) history.splice(0, n);
}

const AXIS_COLOURS = ["#ff6b6b", "#3ccf7a", "#4fb3ff"];

function drawMotion() {
  const canvas = $("motion-plot");
  const { ctx, w, h } = fitCanvas(canvas);
  clear(ctx, w, h);
  const now = performance.now() / 1000;
  const half = h / 2;
  const xOf = (t) => w * (1 - (now - t) / PLOT_S);
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  for (const y of [half / 2, half, half + half / 2]) {
    ctx.beginPath();
    ctx.moveTo(0, Math.round(y) + 0.5);
    ctx.lineTo(w, Math.round(y) + 0.5);
    ctx.stroke();
  }
  // Each half scales to what it shows, with a floor so a phone at rest is a flat line, not magnified noise.
  const scale = (from, floor) => {
    let m = floor;
    for (const f of history) for (let i = from; i < from + 3; i++) m = Math.max(m, Math.abs(f.v[i]));
    return m;
  };
  const accMax = scale(0, 5);
  const rotMax = scale(3, 90);
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillStyle = AXIS_TEXT;
  ctx.fillText(`±${accMax.toFixed(accMax < 10 ? 1 : 0)} m/s²`, 4, 11);
  ctx.fillText(`±${rotMax.toFixed(0)} °/s`, 4, half + 11);
  for (let axis = 0; axis < 6; axis++) {
    const top = axis < 3 ? 0 : half;
    const max = axis < 3 ? accMax : rotMax;
    ctx.strokeStyle = AXIS_COLOURS[axis % 3];
    ctx.lineWidth = 1.25;
    ctx.beginPath();
    history.forEach((f, i) => {
      const y = top + half / 2 - (f.v[axis] / max) * (half / 2 - 2);
      (i ? ctx.lineTo : ctx.moveTo).call(ctx, xOf(f.t), y);
    });
    ctx.stroke();
  }
}

function fixed(v, digits) {
  const s = v.toFixed(digits);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;  // no "-0" for a value that rounds to zero
}

function showValues(values) {
  for (let i = 0; i < 9; i++) $(`v${i}`).textContent = fixed(values[i], i < 3 ? 2 : 0);
}

let lastInfoAt = 0;
function showSendInfo(force = false) {
  const now = performance.now();
  if (!force && now - lastInfoAt < 250) return;
  lastInfoAt = now;
  const parts = [];
  if (phone.motion === "running") parts.push(`${phone.rateHz.toFixed(0)} Hz`);
  parts.push(`${phone.sent} frames`);
  if (phone.dropped) parts.push(`${phone.dropped} dropped offline`);
  if (phone.congested) parts.push(`${phone.congested} dropped (network slow)`);
  if (phone.accelSource === "filtered") parts.push("gravity filtered here");
  $("send-info").textContent = parts.join(" · ");
}

let plotting = false;
function plotLoop() {
  if (!plotting) return;
  requestAnimationFrame(plotLoop);
  if (document.visibilityState === "visible") drawMotion();
}

// --- streaming ------------------------------------------------------------------------------------------

const reader = new MotionReader({ onFrame: sendFrame });

function sendFrame(frame) {
  recordFrame(frame);
  phone.rateHz = reader.rateHz;
  phone.accelSource = reader.accelSource;
  if (phone.motion === "starting") setMotion("running");
  if (!conn.connected) {
    phone.dropped++;
  } else if (conn.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
    phone.congested++;
  } else {
    conn.send({ type: "sensor", source: SOURCE, kind: "motion", values: frame.values, t: frame.t });
    phone.sent++;
    phone.sendMs.push(performance.now() - frame.eventTime);
    if (phone.sendMs.length > 256) phone.sendMs.shift();
  }
  phone.last = { values: frame.values, t: frame.t };
  showValues(frame.values);
  showSendInfo();
}

function setMotion(state, text) {
  phone.motion = state;
  document.documentElement.dataset.motion = state;
  const button = $("start");
  button.textContent = state === "running" || state === "starting" ? "Stop" : "Start";
  if (text !== undefined) $("start-info").textContent = text;
  else if (state === "running") $("start-info").textContent = "Streaming: shake, tilt or swing the phone.";
  else if (state === "stopped") $("start-info").textContent = "Stopped. Tap Start to stream again.";
}

let noEventsTimer = 0;
let wakeLock = null;

async function keepScreenOn() {
  // A sleeping phone stops its sensors and its socket: hold the screen on while streaming, where allowed.
  try {
    if (navigator.wakeLock && document.visibilityState === "visible" && phone.motion !== "stopped") {
      wakeLock = await navigator.wakeLock.request("screen");
    }
  } catch {
    wakeLock = null;  // refused (battery saver, no permission): the phone may sleep, nothing else breaks
  }
}

function startMotion() {
  // Called straight from the tap: requestMotionPermission() must run before any await (iOS).
  const asked = requestMotionPermission();
  setMotion("starting", "Asking for motion access…");
  asked.then(
    (permission) => {
      phone.permission = permission;
      if (permission === "denied") {
        setMotion("denied", "Motion access was refused. Allow it in the browser's settings for this site " +
          "(iOS: Settings → Safari → Motion & Orientation Access), reload, and tap Start again.");
        return;
      }
      reader.start();
      plotting = true;
      plotLoop();
      keepScreenOn();
      clearTimeout(noEventsTimer);
      noEventsTimer = setTimeout(() => {
        if (phone.motion === "starting") {
          $("start-info").textContent = window.isSecureContext
            ? "No motion events yet: this device or browser may have no motion sensors."
            : "No motion events: the browser hides the sensors on a page that is not https.";
        }
      }, NO_EVENTS_HINT_MS);
    },
    (err) => {
      phone.permission = String(err?.message ?? err);
      setMotion("denied", `Motion access failed: ${phone.permission}`);
    },
  );
}

function stopMotion() {
  reader.stop();
  clearTimeout(noEventsTimer);
  plotting = false;
  wakeLock?.release().catch(() => {});
  wakeLock = null;
  setMotion("stopped");
  showSendInfo(true);
}

$("start").addEventListener("click", () => {
  if (phone.motion === "running" || phone.motion === "starting") stopMotion();
  else startMotion();
});

// --- what it plays ----------------------------------------------------------------------------------------

const lanes = new EventLanes($("lanes"));
lanes.start();

function updateMeter(rms, peak) {
  const pos = (x) => `${Math.max(0, Math.min(100, ((dbOf(x, -60) + 60) / 60) * 100))}%`;
  $("meter-rms").style.width = pos(rms);
  $("meter-peak").style.left = pos(peak);
  $("meter").setAttribute("aria-valuenow", dbOf(rms, -60).toFixed(0));
  $("meter-text").textContent = rms > 0 ? `rms ${dbOf(rms).toFixed(1)} dB · peak ${dbOf(peak).toFixed(1)} dB` : "silent";
}

function setInstruments(list) {
  phone.instruments = Array.isArray(list) ? list : [];
  const select = $("instrument");
  select.replaceChildren();
  for (const inst of phone.instruments) {
    const opt = document.createElement("option");
    opt.value = inst.name;
    opt.textContent = `${inst.name} (K ${inst.control_plane_dim})`;
    select.append(opt);
  }
  showInstrument();
}

function showInstrument() {
  const select = $("instrument");
  if (phone.instrument) select.value = phone.instrument;
  const inst = phone.instruments.find((i) => i.name === phone.instrument);
  if (inst) lanes.setDims(inst.control_plane_dim);
}

$("instrument").addEventListener("change", (e) => {
  if (!conn.send({ type: "instrument", name: e.target.value })) {
    toast("not connected");
    showInstrument();
  }
});

function toast(text) {
  showToast($("toast"), text);
}

// --- the socket ------------------------------------------------------------------------------------------

const listener = new Listener({ onStats: showListenStats });

const conn = new Connection({
  hello: () => ({ type: "hello", client: "phone page", monitor: true, audio: listener.active }),
  staleMs: STALE_MS,
  onState: showConnState,
  onMessage: handleMessage,
  onBinary(buf) {
    phone.counts.audioFrames++;
    if (listener.active && !listener.push(buf) && listener.rate && buf.byteLength >= 8) {
      const rate = new DataView(buf).getUint32(4, true);
      if (rate && rate !== listener.rate) {
        stopListening(false);
        toast(`the server now plays at ${rate} Hz: tap Play on phone again`);
      }
    }
  },
});

function handleMessage(msg) {
  switch (msg?.type) {
    case "welcome":
      recorder.onWelcome(msg);
      phone.welcome = msg;
      phone.voice = msg.voice;
      phone.sampleRate = msg.sample_rate;
      phone.instrument = msg.instrument;
      setInstruments(msg.instruments);
      teach.onWelcome(msg, phone.instruments);
      $("voice").textContent = msg.voice === null || msg.voice === undefined ? "no voice free" : `voice ${msg.voice}`;
      $("listen").disabled = listener.active;
      if (listener.active) conn.send({ type: "audio", enabled: true });
      break;
    case "instruments":
      setInstruments(msg.instruments);
      teach.setInstrument(phone.instrument, phone.instruments);
      break;
    case "instrument_changed":
      if (msg.voice === phone.voice) {
        phone.instrument = msg.instrument;
        showInstrument();
        teach.onInstrumentChanged(msg.instrument, phone.instruments);
      }
      break;
    case "meter":
      phone.counts.meter++;
      phone.peak = Math.max(phone.peak, msg.peak ?? 0);
      updateMeter(msg.rms ?? 0, msg.peak ?? 0);
      lanes.addLevel(msg.rms ?? 0, msg.peak ?? 0);
      break;
    case "events":
      for (const ev of msg.events ?? []) {
        phone.counts.events++;
        if (ev.voice === phone.voice) phone.counts.ownEvents++;
        lanes.addEvent(ev);
        teach.onEvent(ev);
      }
      break;
    case "fit":
      recorder.onFit(msg);
      break;
    case "learn":
      teach.onLearn(msg);
      break;
    case "error":
      phone.counts.errors++;
      phone.errors.push(msg);
      if (phone.errors.length > 20) phone.errors.shift();
      if (recorder.onError(msg)) break;  // shown in the Record panel
      if (teach.onError(msg)) break;     // shown in the Teach panel
      toast(`server: ${msg.message ?? msg.code}`);
      if (msg.ref === "instrument") showInstrument();
      break;
    default:
      break;  // status replies and whatever newer servers send
  }
}

function showConnState(state, detail, c) {
  phone.state = state;
  document.documentElement.dataset.state = state;
  showConnText($("conn-text"), state, detail, c);
  $("listen").disabled = state !== "connected" || listener.active;
  teach.onConnState(state);
}

// Now and then a status request, which also keeps an idle phone's voice (a still phone sends frames anyway).
setInterval(() => conn.connected && conn.send({ type: "status" }), 5000);

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState !== "visible") return;
  if (conn.connected) conn.send(conn.hello());  // the voice may have been given back while hidden
  if (phone.motion === "running" && !wakeLock) keepScreenOn();
});

// --- listening on the phone ---------------------------------------------------------------------------------

function showListenStats(st) {
  const waiting = !st.playing && st.received === 0 ? "waiting for audio · " : "";
  $("listen-info").textContent = `${waiting}buffer ${st.fillMs.toFixed(0)} ms · underflows ${st.underflows}` +
    (st.gaps ? ` · gaps ${st.gaps}` : "");
  phone.listen = st;
}

const stopListening = wireListen({
  $, conn, listener, toast, sampleRate: () => phone.sampleRate,
});

// --- recording a new instrument (record.js) ------------------------------------------------------------------

const recorder = new RecordController({
  page: phone,
  conn,
  toast,
  playHint: "tap Start and move the phone",
  els: { button: $("record"), cancel: $("record-cancel"), name: $("record-name"), level: $("record-level"),
    progress: $("record-progress"), info: $("record-info") },
});

// --- teaching a learned mapping (teach.js) -------------------------------------------------------------------

const teach = new TeachPanel({
  conn,
  source: SOURCE,
  onHit: (index, value) => lanes.addInput(index, value),
  els: { panel: $("teach"), pad: $("teach-pad"), record: $("teach-record"), replay: $("teach-replay"),
    train: $("teach-train"), model: $("teach-model"), run: $("teach-run"), clear: $("teach-clear"),
    state: $("teach-state"), pairs: $("teach-pairs"), targets: $("teach-targets"), score: $("teach-score"),
    info: $("teach-info"), error: $("teach-error") },
});
phone.teach = teach.view;

// --- start ---------------------------------------------------------------------------------------------------

if (!window.isSecureContext) $("secure-warning").hidden = false;
if (!motionSupported()) {
  setMotion("unsupported", "This browser has no motion sensor events.");
  $("start").disabled = true;
}
const resize = new ResizeObserver(() => drawMotion());
resize.observe($("motion-plot"));
drawMotion();
conn.open();
