// freeze-omni web client: microphone -> /ws (16 kHz PCM16), answer audio and text <- /ws (docs/protocol.md).
'use strict';

const $ = (id) => document.getElementById(id);
const ui = {
  start: $('start'), state: $('state'), user: $('user'), system: $('system'), apply: $('apply'),
  error: $('error'), transcript: $('transcript'), stats: $('stats'), level: $('level').firstElementChild,
  info: $('info'),
};

let s = null;  // the live session (null when stopped)

function showError(msg) {
  ui.error.textContent = msg;
  ui.error.hidden = !msg;
}

function bump(attr, n) {
  ui.stats.dataset[attr] = String(Number(ui.stats.dataset[attr] || 0) + n);
}

// What the page shows: the server's state, but "speaking" while queued answer audio still plays.
function renderState() {
  let st = 'idle';
  if (s) st = s.serverState === 'listening' && s.sources.size ? 'speaking' : s.serverState;
  ui.state.dataset.state = st;
  ui.state.textContent = st;
}

function wsUrl() {
  const u = new URL('ws', location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(location.search).get('token');
  if (token) u.searchParams.set('token', token);
  return u.href;
}

// ---- playback: AudioBufferSources scheduled back to back at the rate of session.created ----
function playPcm(buf) {
  if (!s || !s.outRate) return;
  const pcm = new Int16Array(buf);
  if (!pcm.length) return;
  const f = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
  const ab = s.ctx.createBuffer(1, f.length, s.outRate);
  ab.copyToChannel(f, 0);
  const src = s.ctx.createBufferSource();
  src.buffer = ab;
  src.connect(s.ctx.destination);
  const now = s.ctx.currentTime;
  if (s.playHead < now + 0.02) s.playHead = now + 0.05;  // (re)start with a small cushion
  src.start(s.playHead);
  s.playHead += ab.duration;
  s.sources.add(src);
  src.onended = () => { if (s) { s.sources.delete(src); renderState(); } };
  bump('audioSamples', pcm.length);
  renderState();
}

function stopPlayback() {
  if (!s) return;
  for (const src of s.sources) { try { src.stop(); } catch (e) { /* not started */ } }
  s.sources.clear();
  s.playHead = 0;
  renderState();
}

// ---- transcript ----
function answerEl(id) {
  let el = s.answers.get(id);
  if (!el) {
    el = document.createElement('div');
    el.className = 'turn answer';
    el.dataset.responseId = String(id);
    ui.transcript.appendChild(el);
    s.answers.set(id, el);
  }
  return el;
}

function note(text) {
  const el = document.createElement('div');
  el.className = 'turn user';
  el.textContent = text;
  ui.transcript.appendChild(el);
}

// ---- server messages ----
function onMessage(ev) {
  if (typeof ev.data !== 'string') {
    if (s.responseId !== null) playPcm(ev.data);  // audio of the current answer
    return;
  }
  let m;
  try { m = JSON.parse(ev.data); } catch (e) { return; }
  switch (m.type) {
    case 'session.created':
      s.inRate = (m.input_audio && m.input_audio.sample_rate) || 16000;
      s.outRate = m.output_audio ? m.output_audio.sample_rate : null;
      if (!ui.system.value && m.system_prompt) ui.system.placeholder = m.system_prompt;
      ui.info.textContent = `session ${m.session_id}` + (s.outRate ? `, answer audio ${s.outRate} Hz` : ', text-only model');
      ui.apply.disabled = false;
      if (ui.system.value.trim()) sendPrompt();
      startMic().catch((e) => { showError(`microphone: ${e.message || e}`); stop(); });
      break;
    case 'session.updated':
      ui.info.textContent = 'system prompt applied; new conversation';
      break;
    case 'state':
      if (m.state === 'interrupted') {
        stopPlayback();
        const el = s.responseId !== null && s.answers.get(s.responseId);
        if (el) el.classList.add('interrupted');
      }
      s.serverState = m.state;
      renderState();
      break;
    case 'input.speech_started': ui.user.hidden = false; break;
    case 'input.speech_stopped': ui.user.hidden = true; break;
    case 'input.turn_ended':
      ui.user.hidden = true;
      if (m.decision === 'ignore') note('(speech not meant for the assistant: ignored)');
      break;
    case 'response.started':
      stopPlayback();  // a new answer replaces whatever was still playing
      s.responseId = m.response_id;
      answerEl(m.response_id);
      bump('responses', 1);
      break;
    case 'response.text.delta':
      answerEl(m.response_id).textContent += m.delta;
      ui.transcript.lastElementChild.scrollIntoView({ block: 'nearest' });
      break;
    case 'response.done': {
      const el = answerEl(m.response_id);
      if (m.status !== 'completed') {
        stopPlayback();
        el.classList.add(m.status === 'cancelled' ? 'cancelled' : 'interrupted');
      }
      if (typeof m.text === 'string' && m.text) el.textContent = m.text;
      if (m.latency_ms && m.latency_ms.first_audio != null) el.title = `first audio after ${m.latency_ms.first_audio} ms`;
      if (s.responseId === m.response_id) s.responseId = null;
      break;
    }
    case 'error':
      showError(`server: ${m.code}: ${m.message}`);
      break;
  }
}

// ---- microphone: AudioWorklet, resampled to 16 kHz PCM16 frames of 100 ms ----
async function startMic() {
  const src = s.ctx.createMediaStreamSource(s.stream);
  const node = new AudioWorkletNode(s.ctx, 'pcm16-capture', {
    numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { targetRate: s.inRate, frameSamples: Math.round(s.inRate / 10) },
  });
  node.port.onmessage = (e) => {
    if (!s || s.ws.readyState !== WebSocket.OPEN) return;
    s.ws.send(e.data.pcm);
    bump('sentSamples', e.data.pcm.byteLength / 2);
    ui.level.style.width = `${Math.min(100, Math.round(e.data.rms * 400))}%`;
  };
  const mute = s.ctx.createGain();
  mute.gain.value = 0;  // keeps the worklet pulled by the graph without playing the microphone back
  src.connect(node).connect(mute).connect(s.ctx.destination);
  s.mic = { src, node, mute };
}

function sendPrompt() {
  if (!s || s.ws.readyState !== WebSocket.OPEN) return;
  s.ws.send(JSON.stringify({ type: 'session.update', system_prompt: ui.system.value }));
}

async function start() {
  showError('');
  ui.start.disabled = true;
  try {
    if (!window.isSecureContext || !navigator.mediaDevices) {
      throw new Error('the microphone needs a secure context: open the page on http://localhost or over https');
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule('static/worklet.js');
    await ctx.resume();
    const ws = new WebSocket(wsUrl());
    ws.binaryType = 'arraybuffer';
    s = { ws, ctx, stream, mic: null, sources: new Set(), playHead: 0, inRate: 16000, outRate: null,
          responseId: null, serverState: 'listening', answers: new Map() };
    ws.onmessage = onMessage;
    ws.onerror = () => showError('websocket error (is the server running? is the token right?)');
    ws.onclose = (e) => {
      if (s && s.ws === ws) {
        if (e.code !== 1000 || e.reason) showError(`connection closed (${e.code}${e.reason ? ': ' + e.reason : ''})`);
        stop();
      }
    };
    ui.start.textContent = 'Stop';
    ui.start.classList.add('on');
    renderState();
  } catch (e) {
    showError(e.message || String(e));
    stop();
  } finally {
    ui.start.disabled = false;
  }
}

function stop() {
  if (!s) return;
  const old = s;
  stopPlayback();
  s = null;
  if (old.mic) { old.mic.node.port.postMessage('stop'); old.mic.src.disconnect(); old.mic.node.disconnect(); }
  old.stream.getTracks().forEach((t) => t.stop());
  if (old.ws.readyState <= WebSocket.OPEN) old.ws.close(1000);
  old.ctx.close();
  ui.start.textContent = 'Start';
  ui.start.classList.remove('on');
  ui.apply.disabled = true;
  ui.user.hidden = true;
  ui.level.style.width = '0';
  renderState();
}

ui.start.addEventListener('click', () => (s ? stop() : start()));
ui.apply.addEventListener('click', sendPrompt);
renderState();
