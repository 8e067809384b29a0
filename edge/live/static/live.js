// edgecell live view: one WebSocket, newest frame only. Each binary message is
// [4-byte big-endian length][JSON: seq, record, words, status, history][JPEG]; text messages carry
// the run's status when no new frame came. The page only shows: it cannot change the run.
"use strict";

const $ = (id) => document.getElementById(id);
let shownSeq = 0;
let shownCount = 0;
let lastUrl = null;
let retryMs = 500;
let lastFrameAt = 0;
let lastStatus = null;
const delays = (window.edgecellDelays = []);

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.binaryType = "arraybuffer";
  ws.onopen = () => { retryMs = 500; setConnection("live", "live"); };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") {
      const msg = JSON.parse(event.data);
      if (msg.status) showStatus(msg.status);
      return;
    }
    const view = new DataView(event.data);
    const n = view.getUint32(0);
    const msg = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, n)));
    const jpeg = new Uint8Array(event.data, 4 + n);
    showFrame(msg, jpeg);
  };
  ws.onclose = () => {
    const ended = lastStatus && lastStatus.state === "finished";
    setConnection(ended ? "ended" : "lost", ended ? "run ended: waiting for the next run" : "connection lost: retrying");
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 5000);
  };
}

function setConnection(state, text) {
  document.body.dataset.connection = state;
  $("connection").textContent = text;
}

function showFrame(msg, jpeg) {
  if (jpeg.length) {
    const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
    const img = $("frame");
    img.onload = () => {
      if (lastUrl && lastUrl !== url) URL.revokeObjectURL(lastUrl);
      lastUrl = url;
      // frame-to-screen delay (publish -> painted), kept for `benchmarks/live_view.py`, last 1000 only
      requestAnimationFrame(() => { delays.push(Date.now() / 1000 - msg.captured); if (delays.length > 1000) delays.shift(); });
    };
    img.src = url;
    $("waiting").hidden = true;
  }
  shownSeq = msg.seq;
  shownCount += 1;
  lastFrameAt = Date.now();
  const shown = $("shown");
  shown.dataset.seq = String(msg.seq);
  shown.dataset.count = String(shownCount);
  shown.dataset.captured = String(msg.captured);
  shown.dataset.shownAt = String(Date.now() / 1000);
  showWords(msg.words, msg.source);
  if (msg.history) showHistory(msg.history);
  if (msg.status) showStatus(msg.status);
}

function showWords(words, source) {
  const box = $("result");
  box.className = "level-" + words.level;
  const headline = $("headline");
  headline.replaceChildren();
  if (words.figures.length) {
    words.figures.forEach(([name, n]) => {
      const tile = document.createElement("span");
      tile.className = "figure";
      const value = document.createElement("b");
      value.textContent = String(n);
      const label = document.createElement("small");
      label.textContent = name;
      tile.append(value, label);
      headline.appendChild(tile);
    });
  } else {
    headline.textContent = words.headline;
  }
  const list = $("details");
  list.replaceChildren();
  const line = (text, cls) => {
    const li = document.createElement("li");
    li.textContent = text;
    if (cls) li.className = cls;
    list.appendChild(li);
  };
  words.flags.forEach((text) => line(text, "flag"));
  words.details.forEach((text) => line(text, ""));
  $("source").textContent = source;
}

function showHistory(items) {
  const list = $("history");
  list.replaceChildren();
  items.slice(1).forEach((item) => {
    const li = document.createElement("li");
    li.className = "level-" + item.level;
    const dot = document.createElement("span");
    dot.className = "dot";
    const text = document.createElement("span");
    text.className = "what";
    const what = document.createElement("span");
    what.textContent = item.headline + (item.flags.length ? " — " + item.flags[0] : "");
    what.title = what.textContent;
    const when = document.createElement("small");
    when.textContent = item.source + " · " + new Date(item.time * 1000).toLocaleTimeString();
    text.append(what, when);
    li.append(dot, text);
    list.appendChild(li);
  });
}

function showStatus(s) {
  lastStatus = s;
  const model = [s.model, s.task, s.precision].filter(Boolean).join(" · ");
  $("model").textContent = (model || "edgecell") + (s.backend ? " on " + s.backend : "") +
    (s.gate ? " · gate " + s.gate : "") + (s.source ? " ← " + s.source : "");
  $("fps").textContent = s.fps.toFixed(1);
  $("frames").textContent = s.frames;
  $("dropped-box").hidden = s.dropped_frames == null;
  $("dropped").textContent = s.dropped_frames;
  $("failures").textContent = s.failures;
  const dev = $("device");
  const parts = [];
  if (s.temperature_c != null) parts.push(s.temperature_c.toFixed(0) + " °C");
  if (s.throttled && s.throttled !== "throttled=0x0") parts.push("throttled (" + s.throttled + ")");
  if (s.reconnects) parts.push(s.reconnects + " reconnects");
  dev.textContent = parts.join(" · ");
  dev.className = (s.throttled && s.throttled !== "throttled=0x0") || s.temperature_c >= 80 ? "hot" : "";
  const keep = $("keep");
  keep.disabled = !s.can_keep || !shownSeq;
  keep.title = s.can_keep ? "Save this frame at full resolution with its result" : "Start the run with --out DIR to keep frames";
  const stale = $("stale");
  if (s.state === "finished") {
    stale.textContent = "The run has ended: showing its last result";
    stale.hidden = false;
  } else if (s.live_source && s.last_frame_age_s != null && s.last_frame_age_s > 3) {
    stale.textContent = "No new frame for " + Math.round(s.last_frame_age_s) + " s: the camera or stream may be reconnecting";
    stale.hidden = false;
  } else {
    stale.hidden = true;
  }
}

async function keepFrame() {
  const keep = $("keep");
  keep.disabled = true;
  try {
    const res = await fetch("/api/keep", { method: "POST", headers: { "Content-Type": "application/json" },
                                          body: JSON.stringify({ seq: shownSeq }) });
    const body = await res.json();
    $("kept").textContent = res.ok ? "Kept frame " + body.seq + ": " + body.files.join(", ") + " in " + body.folder
                                   : "Not kept: " + body.error;
  } catch (err) {
    $("kept").textContent = "Not kept: " + err;
  } finally {
    keep.disabled = !(lastStatus && lastStatus.can_keep);
  }
}

$("keep").addEventListener("click", keepFrame);
connect();
