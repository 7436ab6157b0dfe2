"""The live calls page's HTML and script (one self-contained page; no external resources).

Call data is inserted with ``textContent`` only, never as HTML: numbers, transcripts and custom parameters
come from callers. ``window.__vr`` exposes counters (events received, audio bytes) for the browser test.
"""

from __future__ import annotations

LOGIN_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Live calls: sign in</title>
<style>body{font:15px system-ui,sans-serif;margin:15vh auto;max-width:360px;color:#222}
input,button{font:inherit;padding:6px 10px;width:100%;box-sizing:border-box;margin:6px 0}.m{color:#c62828}</style>
</head><body><h1>Live calls</h1><p>This page needs the server's live calls token.</p>
<form method="post" action="{{action}}"><input type="password" name="token" autocomplete="current-password"
placeholder="token" autofocus><button type="submit">Sign in</button></form><p class="m">{{message}}</p></body></html>"""

PAGE_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>Live calls</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222}
h1{font-size:20px;margin:0 0 12px} table{border-collapse:collapse;width:100%}
th,td{padding:5px 10px;border-bottom:1px solid #eee;text-align:left} th{background:#fafafa}
tbody tr{cursor:pointer} tbody tr:hover{background:#f3f7fd} tr.sel{background:#dce8f7}
td.n{font-variant-numeric:tabular-nums} #empty{color:#777;padding:10px}
#detail{margin-top:18px;display:none} #events{height:45vh;overflow:auto;border:1px solid #eee;font:12px ui-monospace,monospace;padding:6px}
.ev{white-space:pre-wrap;word-break:break-all} .k{font-weight:bold} .caller{color:#2f6db5} .agent{color:#d9782d} .alert{color:#c62828}
button{font:inherit;padding:4px 12px;margin:0 8px 8px 0}
</style></head><body>
<h1>Live calls <small id="count"></small></h1>
<table><thead><tr><th>call</th><th>carrier</th><th>from</th><th>to</th><th>state</th><th>duration</th><th>last turn latency</th></tr></thead>
<tbody id="calls"></tbody></table><div id="empty">No live calls.</div>
<div id="detail"><h2 id="title"></h2>
<button id="listen">Listen in</button><button id="stop" disabled>Stop listening</button><span id="audio"></span>
<div id="events"></div></div>
<script>
"use strict";
const BASE = "{{base}}";
const vr = window.__vr = {calls: [], selected: null, events: [], eventsReceived: 0, audioBytes: 0, audioPeak: 0, eventsClosed: false};
let eventsSocket = null, listenSocket = null, audioCtx = null, playAt = 0;
const CALLER = new Set(["stt_speech_started","speech_ended","stt_partial","stt_final","dtmf_received"]);
const ALERT = new Set(["barge_in","clear_sent","mark_cleared","stt_error","tts_error","protocol_error","call_ended"]);
function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); if (cls) td.className = cls; tr.appendChild(td); }
function wsUrl(path) { return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path; }
async function refresh() {
  try {
    const r = await fetch(BASE + "/data", {cache: "no-store", credentials: "same-origin"});
    if (r.status === 401) { location.reload(); return; }
    const data = await r.json(); vr.calls = data.calls;
    const body = document.getElementById("calls"); body.replaceChildren();
    for (const c of data.calls) {
      const tr = document.createElement("tr"); tr.dataset.key = c.key; tr.dataset.callId = c.id || "";
      if (c.key === vr.selected) tr.className = "sel";
      cell(tr, c.id); cell(tr, c.carrier); cell(tr, c.from); cell(tr, c.to); cell(tr, c.state);
      cell(tr, c.duration_s.toFixed(1) + " s", "n"); cell(tr, c.last_turn_latency_ms == null ? "-" : c.last_turn_latency_ms + " ms", "n");
      tr.addEventListener("click", () => select(c)); body.appendChild(tr);
    }
    document.getElementById("empty").style.display = data.calls.length ? "none" : "block";
    document.getElementById("count").textContent = "(" + data.count + ")";
  } catch (e) { /* the server restarts: try again on the next tick */ }
}
function select(c) {
  stopListening(); if (eventsSocket) eventsSocket.close();
  vr.selected = c.key; vr.events = []; vr.eventsClosed = false;
  document.getElementById("detail").style.display = "block";
  document.getElementById("title").textContent = "Call " + (c.id || c.key) + " (" + (c.carrier || "") + ")";
  const box = document.getElementById("events"); box.replaceChildren();
  const t0 = {v: null};
  eventsSocket = new WebSocket(wsUrl(BASE + "/" + encodeURIComponent(c.key) + "/events"));
  eventsSocket.onmessage = (m) => {
    const e = JSON.parse(m.data); vr.eventsReceived++; vr.events.push(e.kind);
    if (t0.v == null) t0.v = e.at;
    const div = document.createElement("div");
    div.className = "ev " + (ALERT.has(e.kind) ? "alert" : CALLER.has(e.kind) ? "caller" : "agent");
    const k = document.createElement("span"); k.className = "k"; k.textContent = e.kind;
    div.append(((e.at - t0.v)).toFixed(3).padStart(8) + "  ", k, "  " + JSON.stringify(e.data));
    box.appendChild(div); box.scrollTop = box.scrollHeight;
  };
  eventsSocket.onclose = () => { vr.eventsClosed = true; };
  refresh();
}
function startListening() {
  if (!vr.selected) return;
  audioCtx = audioCtx || new AudioContext(); audioCtx.resume(); playAt = 0;
  listenSocket = new WebSocket(wsUrl(BASE + "/" + encodeURIComponent(vr.selected) + "/listen"));
  listenSocket.binaryType = "arraybuffer";
  listenSocket.onmessage = (m) => {
    const pcm = new Int16Array(m.data); vr.audioBytes += m.data.byteLength;
    const buffer = audioCtx.createBuffer(1, pcm.length, 8000); const ch = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) { ch[i] = pcm[i] / 32768; if (Math.abs(pcm[i]) > vr.audioPeak) vr.audioPeak = Math.abs(pcm[i]); }
    const src = audioCtx.createBufferSource(); src.buffer = buffer; src.connect(audioCtx.destination);
    const now = audioCtx.currentTime; if (playAt < now + 0.05) playAt = now + 0.15;  // small jitter buffer
    src.start(playAt); playAt += buffer.duration;
    document.getElementById("audio").textContent = Math.round(vr.audioBytes / 16000) + " s heard";
  };
  listenSocket.onclose = () => stopListening();
  document.getElementById("listen").disabled = true; document.getElementById("stop").disabled = false;
}
function stopListening() {
  if (listenSocket) { const s = listenSocket; listenSocket = null; s.close(); }
  document.getElementById("listen").disabled = false; document.getElementById("stop").disabled = true;
}
document.getElementById("listen").addEventListener("click", startListening);
document.getElementById("stop").addEventListener("click", stopListening);
refresh(); setInterval(refresh, 1000);
</script></body></html>"""
