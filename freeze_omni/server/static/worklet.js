// Microphone capture: mono float at the AudioContext's rate in, 16 kHz PCM16 frames out (to the main thread).
// Resampling: an averaging decimator (each output sample is the mean of the input samples of its 1/16000 s span,
// which doubles as the anti-alias filter); for a context slower than the target it holds the last value.
class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.target = o.targetRate || 16000;
    this.frame = o.frameSamples || 1600;           // 100 ms at 16 kHz
    this.ratio = sampleRate / this.target;         // input samples per output sample
    this.buf = new Int16Array(this.frame);
    this.n = 0;
    this.acc = 0; this.accN = 0; this.pos = 0; this.last = 0;
    this.sumSq = 0; this.count = 0;
    this.running = true;
    this.port.onmessage = (e) => { if (e.data === 'stop') this.running = false; };
  }

  emit(v) {
    const s = Math.max(-1, Math.min(1, v));
    this.buf[this.n++] = s < 0 ? s * 32768 : s * 32767;
    this.sumSq += s * s; this.count++;
    if (this.n === this.frame) {
      const rms = Math.sqrt(this.sumSq / this.count);
      this.port.postMessage({ pcm: this.buf.buffer, rms }, [this.buf.buffer]);
      this.buf = new Int16Array(this.frame);
      this.n = 0; this.sumSq = 0; this.count = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length) {
      const ch = input[0];
      const chans = input.length;
      for (let i = 0; i < ch.length; i++) {
        let x = ch[i];
        if (chans > 1) { for (let c = 1; c < chans; c++) x += input[c][i]; x /= chans; }
        this.acc += x; this.accN++; this.pos += 1;
        while (this.pos >= this.ratio) {
          if (this.accN) { this.last = this.acc / this.accN; this.acc = 0; this.accN = 0; }
          this.emit(this.last);
          this.pos -= this.ratio;
        }
      }
    }
    return this.running;
  }
}

registerProcessor('pcm16-capture', Pcm16Capture);
