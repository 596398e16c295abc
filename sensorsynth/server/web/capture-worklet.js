// The microphone capture, on the browser's audio thread (AudioWorkletGlobalScope): mixes every input block
// down to mono and hands the page chunks of CHUNK samples (about 40 ms), copied, so the page can show the
// level as it records and keep the samples. "flush" sends what is left and answers "flushed".

const CHUNK = 2048;

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buf = new Float32Array(CHUNK);
    this.n = 0;
    this.port.onmessage = (e) => {
      if (e.data === "flush") {
        if (this.n) this.port.postMessage({ type: "chunk", samples: this.buf.slice(0, this.n) });
        this.n = 0;
        this.port.postMessage({ type: "flushed" });
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const len = channels[0].length;
    const scale = 1 / channels.length;
    for (let i = 0; i < len; i++) {
      let s = 0;
      for (let c = 0; c < channels.length; c++) s += channels[c][i];
      this.buf[this.n++] = s * scale;
      if (this.n === CHUNK) {
        this.port.postMessage({ type: "chunk", samples: this.buf });
        this.buf = new Float32Array(CHUNK);  // the posted one is the page's now
        this.n = 0;
      }
    }
    return true;
  }
}

registerProcessor("sensorsynth-capture", Capture);
