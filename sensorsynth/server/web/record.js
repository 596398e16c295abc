// Record: a few seconds from the microphone become a new instrument that this page then plays.
//
//   tap Record → getUserMedia (the page must be a secure context: https, or localhost) → capture through an
//   AudioWorklet (capture-worklet.js) with a countdown and a level meter → resample here to 22050 Hz mono
//   (windowed sinc), normalise to -1 dBFS, encode a 16-bit WAV (4 s ≈ 176 kB, well under the socket's
//   1 MiB frame limit) → on the page's WebSocket: {type: "upload", name, size, sha256} then the WAV as one
//   binary frame → the server submits it to its trainer and sends "fit" messages (queued, running with
//   stage, step/steps, ETA, loss; installing) → when the instrument has loaded, the server switches this
//   page's voice to it ("instrument_changed") and sends "fit" done: the page already plays it.
//
// Every welcome says whether the server can do this (its "record" field: available, reason); without a
// trainer the button stays off and the reason (how to start one) is shown. Errors say what to do: no
// microphone permission, no microphone, not https, no trainer, the fit failed (the trainer's reason).
//
// The state is on pageState.record (window.sensorsynthLive.record / window.sensorsynthPhone.record) and
// on <html data-record="...">: unavailable, idle, asking, recording, encoding, uploading, uploaded, queued,
// running, installing, done, failed, cancelled.

export const TARGET_RATE = 22050;
export const RECORD_SECONDS = 4;
const PEAK_TARGET = 0.89;       // -1 dBFS
const SILENCE_PEAK = 1e-4;      // quieter than this: the microphone gave nothing
const ACTIVE = ["uploading", "uploaded", "queued", "running", "installing"];
const BUSY = ["asking", "recording", "encoding", ...ACTIVE];

// --- pure parts: resampling, WAV, hashing --------------------------------------------------------------

// Band-limited resampling: each output sample is a Blackman-windowed sinc over the input, its cut-off at the
// lower of the two Nyquist frequencies (a little under it), so downsampling from 48 kHz does not alias.
export function resample(input, fromRate, toRate, zeros = 16) {
  if (fromRate === toRate) return Float32Array.from(input);
  const ratio = fromRate / toRate;
  const cutoff = 0.97 * Math.min(1, toRate / fromRate);  // of the input's Nyquist
  const half = zeros / cutoff;                          // the kernel's half width, in input samples
  const out = new Float32Array(Math.floor((input.length * toRate) / fromRate + 1e-9));
  const last = input.length - 1;
  for (let j = 0; j < out.length; j++) {
    const t = j * ratio;
    const k0 = Math.max(0, Math.ceil(t - half));
    const k1 = Math.min(last, Math.floor(t + half));
    let acc = 0;
    for (let k = k0; k <= k1; k++) {
      const d = k - t;
      const x = Math.PI * d * cutoff;
      const sinc = x === 0 ? 1 : Math.sin(x) / x;
      const w = 0.42 + 0.5 * Math.cos((Math.PI * d) / half) + 0.08 * Math.cos((2 * Math.PI * d) / half);
      acc += input[k] * sinc * w;
    }
    out[j] = acc * cutoff;
  }
  return out;
}

export function peakOf(samples) {
  let peak = 0;
  for (let i = 0; i < samples.length; i++) peak = Math.max(peak, Math.abs(samples[i]));
  return peak;
}

// A 16-bit mono PCM WAV file of the samples (clipped to [-1, 1]).
export function encodeWav(samples, rate) {
  const bytes = 44 + samples.length * 2;
  const buf = new ArrayBuffer(bytes);
  const v = new DataView(buf);
  const text = (at, s) => [...s].forEach((c, i) => v.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  v.setUint32(4, bytes - 8, true);
  text(8, "WAVE");
  text(12, "fmt ");
  v.setUint32(16, 16, true);        // fmt chunk size
  v.setUint16(20, 1, true);         // PCM
  v.setUint16(22, 1, true);         // mono
  v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true);  // bytes per second
  v.setUint16(32, 2, true);         // bytes per frame
  v.setUint16(34, 16, true);        // bits per sample
  text(36, "data");
  v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, Math.round(s * 32767), true);
  }
  return buf;
}

export async function sha256Hex(buf) {
  if (!globalThis.crypto?.subtle) return null;  // only secure contexts have it; the hash is optional
  const digest = await crypto.subtle.digest("SHA-256", buf);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// What to tell the user when getUserMedia fails.
export function micError(err) {
  const name = err?.name ?? "";
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    return "The microphone needs a secure page: start the server with --tls self-signed and open the https " +
      "address it prints.";
  }
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Microphone access was refused. Allow the microphone for this site in the browser's settings " +
      "(the icon left of the address), then tap Record again.";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") return "No microphone found on this device.";
  if (name === "NotReadableError" || name === "AbortError") {
    return "The microphone is busy or failed (another app may be using it). Close it and try again.";
  }
  return `The microphone did not start: ${err?.message ?? err}`;
}

// --- capture -------------------------------------------------------------------------------------------

export class MicCapture {
  constructor({ onChunk } = {}) {
    this.onChunk = onChunk;
    this.ctx = null;
    this.stream = null;
    this.node = null;
    this.chunks = [];
    this.frames = 0;
    this.rate = 0;
  }

  // Call from a tap: the AudioContext is made before the first await so it counts as the user's gesture.
  async start() {
    if (!navigator.mediaDevices?.getUserMedia) {
      throw Object.assign(new Error("no getUserMedia"), { name: "NotSupportedError" });
    }
    const ctx = new AudioContext({ latencyHint: "interactive" });
    this.ctx = ctx;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      await ctx.audioWorklet.addModule("/static/capture-worklet.js");
      const source = ctx.createMediaStreamSource(this.stream);
      const node = new AudioWorkletNode(ctx, "sensorsynth-capture", { numberOfInputs: 1, numberOfOutputs: 0 });
      node.port.onmessage = (e) => {
        if (e.data?.type === "chunk") {
          this.chunks.push(e.data.samples);
          this.frames += e.data.samples.length;
          this.onChunk?.(e.data.samples, this);
        } else if (e.data?.type === "flushed") {
          this.flushed?.();
        }
      };
      source.connect(node);
      this.node = node;
      this.rate = ctx.sampleRate;
      await ctx.resume();
    } catch (err) {
      this.close();
      throw err;
    }
  }

  get seconds() {
    return this.rate ? this.frames / this.rate : 0;
  }

  // Stop and return everything captured: {samples, rate}.
  async stop() {
    if (this.node) {
      const done = new Promise((resolve) => (this.flushed = resolve));
      this.node.port.postMessage("flush");
      await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 250))]);
    }
    const rate = this.rate;
    const samples = new Float32Array(this.frames);
    let at = 0;
    for (const c of this.chunks) {
      samples.set(c.subarray(0, Math.min(c.length, samples.length - at)), at);
      at += c.length;
    }
    this.close();
    return { samples, rate };
  }

  close() {
    this.stream?.getTracks().forEach((t) => t.stop());  // the browser's recording indicator goes off
    this.stream = null;
    this.node?.disconnect();
    this.node = null;
    const ctx = this.ctx;
    this.ctx = null;
    if (ctx && ctx.state !== "closed") ctx.close().catch(() => {});
  }
}

// --- the controller: button, countdown, level, upload, progress ------------------------------------------

function formatEta(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return "";
  if (s < 60) return `${Math.ceil(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

export class RecordController {
  // els: {button, cancel, name, level, progress, info}; page: the page's state object (gets .record);
  // conn: the Connection; toast(text); playHint: what to do once the instrument plays.
  constructor({ els, page, conn, toast, seconds = RECORD_SECONDS, playHint = "play it now" }) {
    this.els = els;
    this.conn = conn;
    this.toast = toast;
    this.seconds = seconds;
    this.playHint = playHint;
    this.capture = null;
    this.timer = 0;
    this.info = null;  // the welcome's "record" field
    this.rec = {
      state: "unavailable",
      available: false,
      reason: "connecting…",
      job: null,
      name: null,
      instrument: null,
      last: null,       // the last fit message
      fits: 0,          // fit messages received
      progress: [],     // [{state, stage, step, steps, eta_s, loss, at}] of this fit
      times: {},        // Date.now() of each milestone: start, recordEnd, sent, uploaded, queued, running, ...
      error: null,
      peak: 0,
      seconds: 0,
      bytes: 0,
    };
    page.record = this.rec;
    els.button.addEventListener("click", () => this.onButton());
    els.cancel.addEventListener("click", () => this.cancel());
    this.set("unavailable", "connecting…");
  }

  set(state, text) {
    this.rec.state = state;
    document.documentElement.dataset.record = state;
    const { button, cancel } = this.els;
    const busy = BUSY.includes(state);
    button.disabled = !this.rec.available || (busy && state !== "recording");
    button.textContent = state === "recording" ? "Stop" : "Record";
    button.classList.toggle("recording", state === "recording");
    cancel.hidden = !ACTIVE.includes(state) || state === "installing";
    this.els.name.disabled = busy;
    if (text !== undefined) this.els.info.textContent = text;
    this.els.info.classList.toggle("record-bad", ["failed", "unavailable", "denied"].includes(state) && !!text);
  }

  showProgress(fraction) {
    const bar = this.els.progress;
    bar.hidden = fraction === null;
    if (fraction !== null) bar.firstElementChild.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
  }

  showLevel(rms, peak) {
    const pos = (x) => `${Math.max(0, Math.min(100, ((20 * Math.log10(Math.max(x, 1e-6)) + 60) / 60) * 100))}%`;
    this.els.level.firstElementChild.style.width = pos(rms);
    this.els.level.lastElementChild.style.left = pos(peak);
  }

  // --- from the socket ---
  // Every welcome (each connect) says whether this server can record: its "record" field.
  onWelcome(welcome) {
    const job = this.rec.job;
    if (job && ["uploaded", "queued", "running", "installing"].includes(this.rec.state)) {
      // A reconnect: follow the same fit again; when it lands the server switches the new voice to it.
      this.conn.send({ type: "watch", job });
    } else if (this.rec.state === "uploading") {
      this.fail("The connection dropped during the upload: tap Record to try again.");
    }
    const info = welcome?.record ?? { available: false, reason: "This server does not take recordings." };
    this.info = info;
    this.rec.available = !!info.available;
    this.rec.reason = info.reason ?? null;
    this.els.button.title = info.available ? "" : (info.reason ?? "");
    if (BUSY.includes(this.rec.state)) {
      this.set(this.rec.state);
    } else if (!info.available) {
      this.set("unavailable", info.reason ?? "Recording is not available on this server.");
    } else if (this.rec.state === "unavailable") {
      this.set("idle", `Record ${this.seconds} s with the microphone: it becomes a new instrument that plays here.`);
    } else {
      this.set(this.rec.state);
    }
  }

  onFit(msg) {
    const r = this.rec;  // the server sends a client the fit messages of its own fits only
    r.fits++;
    r.job = msg.job;
    r.name = msg.name;
    r.last = msg;
    const now = Date.now();
    if (!(msg.state in r.times)) r.times[msg.state] = now;
    r.progress.push({ state: msg.state, stage: msg.stage, step: msg.step, steps: msg.steps, eta_s: msg.eta_s,
      loss: msg.loss, at: now });
    if (r.progress.length > 500) r.progress.shift();
    const note = msg.note ? ` (${msg.note})` : "";
    switch (msg.state) {
      case "uploaded":
        this.set("uploaded", `Uploaded ${msg.seconds?.toFixed?.(1) ?? "?"} s as “${msg.name}”: sending it to the trainer…`);
        this.showProgress(0);
        break;
      case "queued":
        this.set("queued", `“${msg.name}” is waiting for a trainer worker…${note}`);
        this.showProgress(0);
        break;
      case "running": {
        const steps = msg.steps ? `${msg.step}/${msg.steps}` : "";
        const stage = msg.stage ? `${msg.stage} ` : "";
        const eta = msg.eta_s !== null && msg.eta_s !== undefined ? ` · about ${formatEta(msg.eta_s)} left` : "";
        const loss = typeof msg.loss === "number" ? ` · loss ${msg.loss.toPrecision(3)}` : "";
        this.set("running", `Fitting “${msg.name}”: ${stage}${steps}${eta}${loss}${note}`);
        this.showProgress(msg.steps ? msg.step / msg.steps : 0);
        break;
      }
      case "installing":
        this.set("installing", `“${msg.name}” is fitted: loading it into the server…`);
        this.showProgress(1);
        break;
      case "done":
        r.instrument = msg.instrument;
        this.set("done", `“${msg.instrument}” is playing on this page: ${this.playHint}.`);
        this.showProgress(null);
        break;
      case "cancelled":
        this.set("cancelled", `The fit of “${msg.name}” was cancelled.`);
        this.showProgress(null);
        break;
      case "failed":
        this.fail(`The fit of “${msg.name}” failed: ${msg.reason ?? "no reason given"}`);
        break;
      default:
        break;
    }
  }

  // An "error" message; true when it was about recording.
  onError(msg) {
    if (!["upload", "cancel", "watch"].includes(msg?.ref)) return false;
    if (msg.ref === "cancel") {
      this.toast?.(`cancel: ${msg.message}`);
      return true;
    }
    if (msg.ref === "watch") {
      this.fail("The server lost track of the fit (it restarted?). If the trainer finishes it, the instrument " +
        "still appears in the list.");
      return true;
    }
    if (msg.code === "no_trainer" || msg.code === "unsupported") {
      this.rec.available = false;
      this.set("unavailable", msg.message);
      return true;
    }
    if (msg.code === "no_voice" || msg.code === "unknown_instrument" || msg.code === "overload") {
      this.toast?.(`server: ${msg.message}`);
      return true;
    }
    this.fail(`The server refused the recording: ${msg.message}`);
    return true;
  }

  fail(text) {
    this.rec.error = text;
    this.set("failed", text);
    this.showProgress(null);
  }

  // --- actions ---
  onButton() {
    if (this.rec.state === "recording") {
      this.finish();
      return;
    }
    if (BUSY.includes(this.rec.state) || !this.rec.available) return;
    this.startRecording();
  }

  startRecording() {
    const r = this.rec;
    Object.assign(r, { job: null, name: null, instrument: null, last: null, fits: 0, progress: [], error: null,
      peak: 0, seconds: 0, bytes: 0, times: { start: Date.now() } });
    this.showProgress(null);
    this.set("asking", "Asking for the microphone…");
    const capture = new MicCapture({
      onChunk: (samples, cap) => {
        let sum = 0;
        let peak = 0;
        for (let i = 0; i < samples.length; i++) {
          sum += samples[i] * samples[i];
          peak = Math.max(peak, Math.abs(samples[i]));
        }
        r.peak = Math.max(r.peak, peak);
        this.showLevel(Math.sqrt(sum / samples.length), peak);
        if (cap.seconds >= this.seconds) this.finish();
      },
    });
    this.capture = capture;
    capture.start().then(
      () => {
        if (this.capture !== capture) return;
        r.times.recording = Date.now();
        this.set("recording");
        const tick = () => {
          const left = Math.max(0, this.seconds - capture.seconds);
          this.els.info.textContent = `● Recording… ${left.toFixed(1)} s left (tap Stop to end now)`;
          this.showProgress(capture.seconds / this.seconds);
        };
        tick();
        this.timer = setInterval(tick, 100);
      },
      (err) => {
        this.capture = null;
        r.error = micError(err);
        this.set(err?.name === "NotAllowedError" ? "denied" : "failed", r.error);
      },
    );
  }

  async finish() {
    const capture = this.capture;
    if (!capture || this.rec.state !== "recording") return;
    this.capture = null;
    clearInterval(this.timer);
    const r = this.rec;
    r.times.recordEnd = Date.now();
    this.set("encoding", "Preparing the clip…");
    this.showLevel(0, 0);
    const { samples, rate } = await capture.stop();
    r.seconds = samples.length / (rate || 1);
    if (samples.length < 0.25 * (rate || 1)) {
      this.fail("The recording is too short: hold Record for a few seconds.");
      return;
    }
    const mono = resample(samples, rate, TARGET_RATE);
    const peak = peakOf(mono);
    if (peak < SILENCE_PEAK) {
      this.fail("The microphone gave silence: check that it is not muted and that this page may use it.");
      return;
    }
    const gain = PEAK_TARGET / peak;
    for (let i = 0; i < mono.length; i++) mono[i] *= gain;
    const wav = encodeWav(mono, TARGET_RATE);
    const max = this.info?.max_bytes ?? 1_000_000;
    if (wav.byteLength > max) {
      this.fail(`The clip is ${wav.byteLength} bytes; the server takes at most ${max}. Record fewer seconds.`);
      return;
    }
    const sha256 = await sha256Hex(wav);
    r.times.encoded = Date.now();
    r.bytes = wav.byteLength;
    const ws = this.conn.ws;
    if (!this.conn.connected || !ws) {
      this.fail("Not connected to the server: the clip was not sent. Tap Record again once connected.");
      return;
    }
    const name = (this.els.name.value || "take").trim() || "take";
    // The upload message and the clip's frame go back to back on the same socket: nothing comes between.
    ws.send(JSON.stringify({ type: "upload", name, size: wav.byteLength, ...(sha256 ? { sha256 } : {}) }));
    ws.send(wav);
    r.times.sent = Date.now();
    this.set("uploading", `Uploading ${(wav.byteLength / 1024).toFixed(0)} kB…`);
  }

  cancel() {
    if (!ACTIVE.includes(this.rec.state)) return;
    if (!this.conn.send({ type: "cancel", ...(this.rec.job ? { job: this.rec.job } : {}) })) {
      this.toast?.("not connected: cannot cancel now");
      return;
    }
    this.els.info.textContent = "Cancelling…";
  }
}
