// Capture: the context's rate -> 16 kHz PCM16 frames of 20 ms (320 samples), posted to the page.
class Capture extends AudioWorkletProcessor {
  constructor() { super(); this.step = sampleRate / 16000; this.pos = 0; this.buf = new Int16Array(320); this.n = 0; }
  process(inputs) {
    const ch = inputs[0] && inputs[0][0];
    if (!ch) return true;
    for (; this.pos < ch.length; this.pos += this.step) {
      const s = Math.max(-1, Math.min(1, ch[Math.floor(this.pos)]));
      this.buf[this.n++] = s * 32767;
      if (this.n === 320) { this.port.postMessage(this.buf.buffer.slice(0)); this.n = 0; }
    }
    this.pos -= ch.length;
    return true;
  }
}
// Playback: a ring buffer of float samples at the context's rate, gapless; "flush" empties it at once.
class Playback extends AudioWorkletProcessor {
  constructor() {
    super(); this.ring = new Float32Array(sampleRate * 30); this.r = 0; this.w = 0; this.played = 0;
    this.port.onmessage = (e) => {
      if (e.data === "flush") { this.r = this.w; return; }
      for (const s of e.data) { this.ring[this.w % this.ring.length] = s; this.w++; }
    };
  }
  process(_, outputs) {
    const out = outputs[0][0];
    let n = 0;
    for (let i = 0; i < out.length; i++) {
      if (this.r < this.w) { out[i] = this.ring[this.r % this.ring.length]; this.r++; n++; } else out[i] = 0;
    }
    if (n) { this.played += n; this.port.postMessage(this.played); }
    return true;
  }
}
registerProcessor("capture", Capture);
registerProcessor("playback", Playback);
