// The PCM player, running on the browser's audio thread (AudioWorkletGlobalScope).
//
// Network frames arrive in bursts; the sound card asks for 128 samples at a steady pace. A ring buffer
// between them holds a jitter margin: playback starts (and restarts after an underflow) only once
// `targetMs` of audio is queued, so a late frame is absorbed instead of heard as a click. If the queue
// grows far beyond the target (the server's clock running a little fast, or a burst after a stall), the
// oldest audio is skipped so latency does not creep up. Counts go back to the page a few times a second.

const CAPACITY_S = 2;
const REPORT_EVERY_S = 0.25;
const FADE = 64;   // samples of fade in after a restart and out into an underflow, to avoid clicks

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options?.processorOptions ?? {};
    this.ring = new Float32Array(Math.ceil(sampleRate * CAPACITY_S));
    this.read = 0;
    this.fill = 0;
    this.target = Math.round(((opts.targetMs ?? 80) / 1000) * sampleRate);
    this.maxFill = this.target + Math.round(((opts.maxExtraMs ?? 150) / 1000) * sampleRate);
    this.playing = false;
    this.fadeIn = 0;
    this.underflows = 0;
    this.skipped = 0;
    this.received = 0;
    this.sinceReport = 0;
    this.port.onmessage = (e) => this.receive(e.data);
  }

  receive(msg) {
    if (msg.type === "reset") {
      this.read = 0;
      this.fill = 0;
      this.playing = false;
      return;
    }
    if (msg.type !== "samples") return;
    const data = msg.samples;
    const cap = this.ring.length;
    let src = data;
    if (src.length > cap) src = src.subarray(src.length - cap);
    if (this.fill + src.length > cap) {
      // Full: drop the oldest queued audio to make room; the newest is what the player wants to hear.
      const drop = this.fill + src.length - cap;
      this.read = (this.read + drop) % cap;
      this.fill -= drop;
      this.skipped += drop;
    }
    let write = (this.read + this.fill) % cap;
    const first = Math.min(src.length, cap - write);
    this.ring.set(src.subarray(0, first), write);
    if (first < src.length) this.ring.set(src.subarray(first), 0);
    this.fill += src.length;
    this.received += src.length;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!out) return true;
    const n = out.length;
    const cap = this.ring.length;

    if (!this.playing && this.fill >= this.target) {
      this.playing = true;
      this.fadeIn = FADE;
    }
    if (this.playing && this.fill > this.maxFill) {
      // Too much queued: jump forward to the target latency.
      const drop = this.fill - this.target;
      this.read = (this.read + drop) % cap;
      this.fill -= drop;
      this.skipped += drop;
      this.fadeIn = FADE;
    }

    if (!this.playing) {
      out.fill(0);
    } else {
      const take = Math.min(n, this.fill);
      for (let i = 0; i < take; i++) {
        let s = this.ring[this.read];
        this.read = this.read + 1 === cap ? 0 : this.read + 1;
        if (this.fadeIn > 0) {
          s *= 1 - this.fadeIn / FADE;
          this.fadeIn--;
        }
        out[i] = s;
      }
      this.fill -= take;
      if (take < n) {
        // Underflow: fade the tail we had, play silence, and wait for a full margin again.
        const fade = Math.min(FADE, take);
        for (let i = 0; i < fade; i++) out[take - fade + i] *= 1 - (i + 1) / fade;
        out.fill(0, take);
        this.playing = false;
        this.underflows++;
      }
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);

    this.sinceReport += n;
    if (this.sinceReport >= sampleRate * REPORT_EVERY_S) {
      this.sinceReport = 0;
      this.port.postMessage({
        type: "stats",
        fillMs: (this.fill / sampleRate) * 1000,
        playing: this.playing,
        underflows: this.underflows,
        skippedMs: (this.skipped / sampleRate) * 1000,
        received: this.received,
      });
    }
    return true;
  }
}

registerProcessor("sensorsynth-pcm-player", PcmPlayer);
