// Listening: the server's PCM stream played through an AudioWorklet.
//
// Binary frames (sensorsynth/protocol/ws.py): a 16-byte little-endian header
// <4s magic "SSA1" (mono) or "SSA2" (stereo, interleaved L R), uint32 sample_rate, uint64 first_sample> then
// float32 LE samples. The AudioContext runs at the server's rate, so samples go to the worklet untouched (no
// resampling); a server with several speakers sends its stereo fold-down.

export const MAGIC = "SSA1";
export const MAGIC_STEREO = "SSA2";
export const HEADER_BYTES = 16;
const JITTER_MS = 80;

export function parseAudioFrame(buf) {
  if (!(buf instanceof ArrayBuffer) || buf.byteLength < HEADER_BYTES) return null;
  const view = new DataView(buf);
  const magic = String.fromCharCode(view.getUint8(0), view.getUint8(1), view.getUint8(2), view.getUint8(3));
  if (magic !== MAGIC && magic !== MAGIC_STEREO) return null;
  const channels = magic === MAGIC_STEREO ? 2 : 1;
  const count = Math.floor((buf.byteLength - HEADER_BYTES) / 4 / channels) * channels;
  return {
    sampleRate: view.getUint32(4, true),
    firstSample: Number(view.getBigUint64(8, true)),
    channels,
    frames: count / channels,
    // A view, not a copy: the buffer is transferred to the worklet as a whole.
    samples: new Float32Array(buf, HEADER_BYTES, count),
  };
}

export class Listener {
  constructor({ onStats } = {}) {
    this.onStats = onStats;
    this.ctx = null;
    this.node = null;
    this.rate = 0;
    this.nextSample = -1;
    this.gaps = 0;
    this.channels = 0;
    this.frames = 0;
  }

  get active() {
    return this.ctx !== null;
  }

  // Call from a click handler: browsers only let a user gesture start audio, and the context is created
  // before the first await so it still counts as part of that gesture.
  async start(sampleRate) {
    if (this.ctx) return;
    const ctx = new AudioContext({ sampleRate, latencyHint: "interactive" });
    this.ctx = ctx;
    this.rate = sampleRate;
    this.nextSample = -1;
    this.gaps = 0;
    this.frames = 0;
    try {
      await ctx.audioWorklet.addModule("/static/audio-worklet.js");
      if (this.ctx !== ctx) return;  // stopped while loading
      const node = new AudioWorkletNode(ctx, "sensorsynth-pcm-player", {
        numberOfInputs: 0,
        numberOfOutputs: 1,
        outputChannelCount: [2],
        processorOptions: { targetMs: JITTER_MS },
      });
      node.port.onmessage = (e) => {
        if (e.data?.type === "stats") {
          this.onStats?.({ ...e.data, gaps: this.gaps, frames: this.frames, channels: this.channels });
        }
      };
      node.connect(ctx.destination);
      this.node = node;
      await ctx.resume();
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  stop() {
    const ctx = this.ctx;
    this.ctx = null;
    this.node?.disconnect();
    this.node = null;
    if (ctx && ctx.state !== "closed") ctx.close().catch(() => {});
  }

  // One binary frame from the socket. Returns false when it cannot be played here.
  push(buf) {
    const frame = parseAudioFrame(buf);
    if (!frame || !this.node) return false;
    if (frame.sampleRate !== this.rate) return false;
    if (this.nextSample >= 0 && frame.firstSample !== this.nextSample) {
      // The server skipped audio for this client (it was too slow) or restarted: the worklet's margin
      // covers it, but count it so the page can say so.
      this.gaps++;
    }
    this.nextSample = frame.firstSample + frame.frames;
    this.frames++;
    this.channels = frame.channels;
    this.node.port.postMessage({ type: "samples", samples: frame.samples, channels: frame.channels }, [buf]);
    return true;
  }
}
