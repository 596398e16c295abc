// The PCM player, running on the browser's audio thread (AudioWorkletGlobalScope).
//
// Network frames arrive in bursts; the sound card asks for 128 samples at a steady pace. A ring buffer
// between them holds a jitter margin: playback starts (and restarts after an underflow) only once
// `targetMs` of audio is queued, so a late frame is absorbed instead of heard as a click. If the queue
// grows far beyond the target (the server's clock running a little fast, or a burst after a stall), the
// oldest audio is skipped so latency does not creep up. Counts go back to the page a few times a second.
// Frames come mono (played on both sides) or stereo (interleaved L, R: a server with several speakers sends
// its stereo fold-down); the ring keeps a left and a right row, counted in frames.

const CAPACITY_S = 2;
const REPORT_EVERY_S = 0.25;
const FADE = 64;   // samples of fade in after a restart and out into an underflow, to avoid clicks

class PcmPlayer extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options?.processorOptions ?? {};
    this.ring = new Float32Array(Math.ceil(sampleRate * CAPACITY_S));
    this.ringR = new Float32Array(this.ring.length);
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
    const ch = msg.channels === 2 ? 2 : 1;
    const cap = this.ring.length;
    let src = msg.samples;
    let frames = Math.floor(src.length / ch);
    if (frames > cap) {
      src = src.subarray((frames - cap) * ch);
      frames = cap;
    }
    if (this.fill + frames > cap) {
      // Full: drop the oldest queued audio to make room; the newest is what the player wants to hear.
      const drop = this.fill + frames - cap;
      this.read = (this.read + drop) % cap;
      this.fill -= drop;
      this.skipped += drop;
    }
    let write = (this.read + this.fill) % cap;
    for (let i = 0; i < frames; i++) {
      this.ring[write] = src[i * ch];
      this.ringR[write] = src[i * ch + ch - 1];
      write = write + 1 === cap ? 0 : write + 1;
    }
    this.fill += frames;
    this.received += frames;
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    if (!out) return true;
    const outR = outputs[0].length > 1 ? outputs[0][1] : null;
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
      if (outR) outR.fill(0);
    } else {
      const take = Math.min(n, this.fill);
      for (let i = 0; i < take; i++) {
        let s = this.ring[this.read];
        let r = this.ringR[this.read];
        this.read = this.read + 1 === cap ? 0 : this.read + 1;
        if (this.fadeIn > 0) {
          const g = 1 - this.fadeIn / FADE;
          s *= g;
          r *= g;
          this.fadeIn--;
        }
        if (outR) {
          out[i] = s;
          outR[i] = r;
        } else {
          out[i] = 0.5 * (s + r);
        }
      }
      this.fill -= take;
      if (take < n) {
        // Underflow: fade the tail we had, play silence, and wait for a full margin again.
        const fade = Math.min(FADE, take);
        for (const o of outR ? [out, outR] : [out]) {
          for (let i = 0; i < fade; i++) o[take - fade + i] *= 1 - (i + 1) / fade;
          o.fill(0, take);
        }
        this.playing = false;
        this.underflows++;
      }
    }
    for (let c = 2; c < outputs[0].length; c++) outputs[0][c].set(out);

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
