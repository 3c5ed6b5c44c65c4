// One tab = one session. Test hooks: window.__microturn (played samples, transcript, frames).
const hooks = window.__microturn = { played: 0, transcript: [], frames: 0, state: "", errors: [] };
const $ = (id) => document.getElementById(id);
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
let ctx = null, playback = null, rate = 16000, lastLine = null, lastUid = null;

function line(cls, text) {
  const div = document.createElement("div"); div.className = cls; div.textContent = text;
  $("timeline").appendChild(div); $("timeline").scrollTop = 1e9; return div;
}
async function audio() {
  if (ctx) return;
  ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/worklets.js");
  playback = new AudioWorkletNode(ctx, "playback");
  playback.connect(ctx.destination);
  playback.port.onmessage = (e) => {
    hooks.played = e.data;  // samples at the context's rate, acknowledged in the server's 16 kHz
    if (ws.readyState === 1) ws.send(JSON.stringify({ type: "played", v: 1, samples: Math.round(e.data * rate / ctx.sampleRate) }));
  };
}
function b64(bytes) { let s = ""; for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b); return btoa(s); }
function play(frame) {
  if (!playback) return;
  rate = frame.sample_rate;
  const raw = atob(frame.pcm), n = raw.length >> 1, out = [], ratio = ctx.sampleRate / rate;
  for (let i = 0; i < n * ratio; i++) {
    const j = Math.floor(i / ratio) * 2, v = (raw.charCodeAt(j) | (raw.charCodeAt(j + 1) << 8)) << 16 >> 16;
    out.push(v / 32768);
  }
  playback.port.postMessage(out);
}
ws.onopen = () => { hooks.open = true; $("state").textContent = "connected"; audio().catch((e) => hooks.errors.push(String(e))); };
ws.onclose = () => { $("state").textContent = "disconnected"; };
ws.onmessage = (e) => {
  const f = JSON.parse(e.data); hooks.frames++;
  if (f.type === "audio_out") play(f);
  else if (f.type === "words") {
    if (f.role === "assistant" && lastUid === f.utterance_id && lastLine) lastLine.textContent += f.text;
    else { lastLine = line(f.role, (f.role === "user" ? "you: " : "assistant: ") + f.text); lastUid = f.role === "assistant" ? f.utterance_id : null; }
    hooks.transcript.push([f.role, f.text]);
  } else if (f.type === "stop") { if (playback) playback.port.postMessage("flush"); lastUid = null; }
  else if (f.type === "state") { hooks.state = `floor: ${f.floor} · you: ${f.user} · assistant: ${f.assistant}`; $("state").textContent = hooks.state; }
  else if (f.type === "tool") line("tool", `tool ${f.name}: ${f.status}`);
  else if (f.type === "error") { hooks.errors.push(f); line("error", `error: ${f.field} = ${f.value}: ${f.message}`); }
};
$("form").onsubmit = (e) => {
  e.preventDefault(); const text = $("text").value.trim(); $("text").value = "";
  if (text && ws.readyState === 1) ws.send(JSON.stringify({ type: "text", v: 1, text }));
};
$("mic").onclick = async () => {
  await audio(); await ctx.resume();
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  const capture = new AudioWorkletNode(ctx, "capture");
  ctx.createMediaStreamSource(stream).connect(capture);
  capture.port.onmessage = (e) => { if (ws.readyState === 1) ws.send(JSON.stringify({ type: "audio", v: 1, pcm: b64(e.data) })); };
  $("mic").disabled = true;
};
