// The live page: wires the socket, the instrument views, the play surface, the event lanes, the meter
// and the listener together. Each part lives in its own module; this one only routes messages.
//
// For tests and debugging the page's state is on `window.sensorsynthLive` and the connection state on
// <html data-state="...">.

import { Connection } from "./connection.js";
import { EventLanes } from "./lanes.js";
import { Listener } from "./listen.js";
import { showConnText, showToast, wireListen } from "./page.js";
import { PlaySurface } from "./pad.js";
import { drawRoll } from "./pianoroll.js";
import { dbOf, knownSources } from "./plot.js";
import { RecordController } from "./record.js";
import { SceneView } from "./scenes.js";
import { drawSpectrum } from "./spectrum.js";

const $ = (id) => document.getElementById(id);

const live = {
  state: "connecting",
  welcome: null,
  voice: null,
  sampleRate: null,
  instrument: null,     // the name playing on this client's voice
  instruments: [],      // summaries from /api/instruments, welcome or a reload
  detail: null,         // /api/instruments/<name> of the one drawn
  lastMeter: null,
  lastHit: null,
  peakSinceHit: 0,      // the loudest meter peak since the last hit: did the hit make a sound?
  counts: { meter: 0, events: 0, audioFrames: 0, errors: 0 },
  errors: [],
};
window.sensorsynthLive = live;

// --- instrument views -------------------------------------------------------------------------------------

let detailRequest = 0;

async function showInstrument(name) {
  const ticket = ++detailRequest;
  try {
    const res = await fetch(`/api/instruments/${encodeURIComponent(name)}`, { cache: "no-store" });
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const detail = await res.json();
    if (ticket !== detailRequest) return;  // a newer choice won the race
    live.detail = detail;
    redrawInstrument();
    const K = detail.control_plane_dim;
    pad.setDims(K);
    lanes.setDims(K);
    renderInstrumentList();
  } catch (err) {
    if (ticket === detailRequest) toast(`could not load instrument ${name}: ${err.message}`);
  }
}

function redrawInstrument() {
  drawSpectrum($("spectrum"), live.detail);
  drawRoll($("roll"), live.detail);
  const d = live.detail;
  $("instrument-info").textContent = d
    ? `${d.name}: ${d.sample_rate} Hz, ${d.control_plane_dim} control dims, ` +
      `${d.n_resonances}×${d.expressivity}×${d.n_oscillators} oscillators, ` +
      `${d.control?.events?.length ?? 0} learned events`
    : "";
}

function renderInstrumentList() {
  const list = $("instrument-list");
  list.replaceChildren();
  if (!live.instruments.length) {
    const li = document.createElement("li");
    li.className = "dim small";
    li.textContent = "no instruments loaded";
    list.append(li);
    return;
  }
  const current = live.instrument ?? live.detail?.name;
  for (const inst of live.instruments) {
    const li = document.createElement("li");
    const btn = document.createElement("button");
    btn.type = "button";
    btn.setAttribute("role", "option");
    btn.setAttribute("aria-selected", String(inst.name === current));
    btn.dataset.name = inst.name;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = inst.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    const kb = inst.size_bytes ? ` · ${Math.round(inst.size_bytes / 1024)} KB` : "";
    const dur = inst.duration_s ? ` · ${inst.duration_s.toFixed(1)} s` : "";
    meta.textContent = `K ${inst.control_plane_dim} · ${inst.n_resonances}×${inst.expressivity}×` +
      `${inst.n_oscillators}${dur}${kb}`;
    btn.append(name, meta);
    btn.addEventListener("click", () => chooseInstrument(inst.name));
    li.append(btn);
    list.append(li);
  }
}

function chooseInstrument(name) {
  if (!conn.send({ type: "instrument", name })) {
    toast("not connected: the instrument will be chosen when the server is back");
    return;
  }
  // The switch is confirmed by instrument_changed; draw it now so the choice feels immediate.
  if (live.detail?.name !== name) showInstrument(name);
}

function setInstruments(list) {
  live.instruments = Array.isArray(list) ? list : [];
  renderInstrumentList();
}

// --- live inputs, meter, server info -----------------------------------------------------------------------

const lanes = new EventLanes($("lanes"));
lanes.start();

const pad = new PlaySurface($("pad"), {
  onHit(index, value, pointerType) {
    const v = Math.round(value * 1000) / 1000;
    const sent = conn.send({ type: "control", index, value: v });
    lanes.addInput(index, v);
    live.lastHit = { index, value: v, pointerType, sent, meterTime: live.lastMeter?.time ?? null, at: Date.now() };
    live.peakSinceHit = 0;
  },
});
pad.setDims(16);

function updateMeter(rms, peak) {
  const pos = (x) => `${Math.max(0, Math.min(100, ((dbOf(x, -60) + 60) / 60) * 100))}%`;
  $("meter-rms").style.width = pos(rms);
  $("meter-peak").style.left = pos(peak);
  $("meter").setAttribute("aria-valuenow", dbOf(rms, -60).toFixed(0));
  $("meter-text").textContent = rms > 0 ? `rms ${dbOf(rms).toFixed(1)} dB · peak ${dbOf(peak).toFixed(1)} dB` : "silent";
}

function showStatus(st) {
  // The status dict belongs to the server; show the parts a player cares about, whatever else it holds.
  const parts = [];
  if (typeof st.clients === "number") parts.push(`${st.clients} client${st.clients === 1 ? "" : "s"}`);
  if (typeof st.underruns === "number") parts.push(`${st.underruns} underruns`);
  if (typeof st.uptime_s === "number") parts.push(`up ${formatUptime(st.uptime_s)}`);
  $("server-info").textContent = parts.join(" · ");
}

function formatUptime(s) {
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function renderLegend() {
  const legend = $("legend");
  const items = [`<span><span class="swatch hollow"></span>this page's input</span>`];
  for (const [name, colour] of knownSources()) {
    items.push(`<span><span class="swatch" style="background:${colour}"></span>${escapeHtml(name)}</span>`);
  }
  legend.innerHTML = items.join("");
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function toast(text) {
  showToast($("toast"), text);
}

// --- the socket ---------------------------------------------------------------------------------------------

const listener = new Listener({ onStats: showListenStats });

const conn = new Connection({
  hello: () => ({ type: "hello", client: "live page", monitor: true, audio: listener.active }),
  onState: showConnState,
  onMessage: handleMessage,
  onBinary(buf) {
    live.counts.audioFrames++;
    if (listener.active && !listener.push(buf) && listener.rate && buf.byteLength >= 8) {
      const rate = new DataView(buf).getUint32(4, true);
      if (rate && rate !== listener.rate) {
        stopListening(false);
        toast(`the server now plays at ${rate} Hz: press Listen again`);
      }
    }
  },
});

const scenes = new SceneView((msg) => conn.send(msg));

function handleMessage(msg) {
  switch (msg?.type) {
    case "welcome": {
      recorder.onWelcome(msg);
      live.welcome = msg;
      live.voice = msg.voice;
      live.sampleRate = msg.sample_rate;
      live.instrument = msg.instrument;
      setInstruments(msg.instruments);
      $("voice").textContent = msg.voice === null || msg.voice === undefined ? "no voice free" : `voice ${msg.voice}`;
      $("listen").disabled = listener.active;
      if (listener.active) conn.send({ type: "audio", enabled: true });
      if (msg.instrument) showInstrument(msg.instrument);
      conn.send({ type: "status" });
      break;
    }
    case "instruments":
      setInstruments(msg.instruments);
      // A hot reload may have changed the one on show: fetch it again, or fall back if it went away.
      if (live.instrument && live.instruments.some((i) => i.name === live.instrument)) showInstrument(live.instrument);
      break;
    case "instrument_changed":
      if (msg.voice === live.voice) {
        live.instrument = msg.instrument;
        showInstrument(msg.instrument);
      }
      break;
    case "meter":
      live.counts.meter++;
      live.lastMeter = msg;
      live.peakSinceHit = Math.max(live.peakSinceHit, msg.peak ?? 0);
      updateMeter(msg.rms ?? 0, msg.peak ?? 0);
      lanes.addLevel(msg.rms ?? 0, msg.peak ?? 0);
      break;
    case "events": {
      const before = knownSources().length;
      for (const ev of msg.events ?? []) {
        live.counts.events++;
        lanes.addEvent(ev);
        if (ev.voice === live.voice && ev.kind === "control" && Array.isArray(ev.values)) {
          ev.values.forEach((v, k) => v > 0 && pad.flash(k, Math.min(1, v), true));
        }
      }
      if (knownSources().length !== before) renderLegend();
      break;
    }
    case "status":
      showStatus(msg);
      scenes.onStatus(msg);
      break;
    case "scene":
      scenes.onScene(msg);
      break;
    case "fit":
      recorder.onFit(msg);
      break;
    case "error":
      live.counts.errors++;
      live.errors.push(msg);
      if (live.errors.length > 20) live.errors.shift();
      if (recorder.onError(msg)) break;  // shown in the Record panel
      toast(`server: ${msg.message ?? msg.code}`);
      // A refused switch: go back to drawing what the voice really plays.
      if (msg.ref === "instrument" && live.instrument && live.detail?.name !== live.instrument) {
        showInstrument(live.instrument);
      }
      break;
    default:
      break;  // newer servers may send more: ignore what this page does not know
  }
}

function showConnState(state, detail, c) {
  live.state = state;
  document.documentElement.dataset.state = state;
  showConnText($("conn-text"), state, detail, c);
  $("listen").disabled = state !== "connected" || listener.active;
}

// The server's counters (clients, underruns) now and then, while connected. The request also keeps this
// client active: the server gives the voice of a client silent for a minute back to the pool.
setInterval(() => conn.connected && conn.send({ type: "status" }), 5000);

// A hidden tab's timers are throttled, so its voice may have been given back meanwhile: saying hello again
// brings a fresh welcome with the voice this client has now.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && conn.connected) conn.send(conn.hello());
});

// --- listening ----------------------------------------------------------------------------------------------

let lastUnderflows = 0;
function showListenStats(st) {
  const info = $("listen-info");
  const bad = st.underflows > lastUnderflows;
  lastUnderflows = st.underflows;
  const waiting = !st.playing && st.received === 0 ? "waiting for audio · " : "";
  info.textContent = `${waiting}buffer ${st.fillMs.toFixed(0)} ms · underflows ${st.underflows}` +
    (st.gaps ? ` · gaps ${st.gaps}` : "");
  info.classList.toggle("listen-info-bad", bad);
  live.listen = st;
}

const stopListening = wireListen({
  $, conn, listener, toast, sampleRate: () => live.sampleRate, onStart: () => (lastUnderflows = 0),
});

// --- recording a new instrument (record.js) ----------------------------------------------------------------

const recorder = new RecordController({
  page: live,
  conn,
  toast,
  playHint: "tap the play surface",
  els: { button: $("record"), cancel: $("record-cancel"), name: $("record-name"), level: $("record-level"),
    progress: $("record-progress"), info: $("record-info") },
});

// --- start -------------------------------------------------------------------------------------------------

// Redraw the static plots when their size changes (rotation, window resize); the lanes redraw every frame.
const resize = new ResizeObserver(() => redrawInstrument());
resize.observe($("spectrum"));
resize.observe($("roll"));

// Show what the server has even before the socket is up, so a slow connect is not an empty page.
fetch("/api/instruments", { cache: "no-store" })
  .then((res) => (res.ok ? res.json() : Promise.reject(new Error(res.statusText))))
  .then((body) => {
    if (live.welcome) return;
    setInstruments(body.instruments);
    if (!live.detail && live.instruments.length) showInstrument(live.instruments[0].name);
  })
  .catch(() => {});  // the socket's welcome brings the same list

renderLegend();
conn.open();
