"""The one page `serve` shows at /: HTML, CSS and JavaScript in a string.

Self-contained on purpose: no CDN, font or script from elsewhere (the Pi
may have no internet, and the page's Content-Security-Policy forbids it),
and no package data to install beside the code. It talks to the server
only through the public endpoints: /stream.mjpg for the video,
/api/latest?after=N (answered as soon as a newer frame exists) for the
labels, /input.png for the model input, /api/info once, /api/label for the
buttons, /api/forget for a class's 'forget' (with --own). A token, when the server needs one, comes in the address's
fragment (#token=...), which the browser never sends to a server.

Element ids are what tests/test_serve_browser.py looks for.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fashion-edge</title>
<link rel="icon" href="data:,">
<style>
:root { --ok: #1a7f37; --unknown: #bc4c00; --bg: #f3f4f6; --card: #fff; --ink: #1f2328; --mute: #59636e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       background: var(--bg); color: var(--ink); }
header { padding: 10px 18px; background: #24292f; color: #fff; display: flex; gap: 6px 18px;
         align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #d0d7de; font-size: 13px; }
main { display: grid; grid-template-columns: minmax(0, 3fr) minmax(280px, 2fr); gap: 16px; padding: 16px;
       max-width: 1280px; margin: 0 auto; }
@media (max-width: 800px) { main { grid-template-columns: 1fr; } }
.card { background: var(--card); border-radius: 10px; padding: 14px; box-shadow: 0 1px 3px rgba(0, 0, 0, .12); }
h2 { font-size: 15px; margin: 18px 0 8px; }
#view { position: relative; line-height: 0; background: #111; border-radius: 6px; overflow: hidden; min-height: 120px; }
#video { width: 100%; height: auto; display: block; }
#roi { position: absolute; border: 3px solid var(--ok); display: none; pointer-events: none; border-radius: 2px; }
#roi.unknown { border-color: var(--unknown); border-style: dashed; }
.stats { color: var(--mute); font-size: 13px; font-variant-numeric: tabular-nums; margin: 8px 0 0; }
#label { font-size: 34px; font-weight: 700; margin: 0; line-height: 1.15; }
#label.unknown { color: var(--unknown); }
#score { color: var(--mute); margin: 2px 0 10px; font-size: 13px; }
.row { display: flex; align-items: center; gap: 8px; margin: 5px 0; }
.row .name { width: 120px; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.row .bar { flex: 1; height: 14px; background: #e6e8eb; border-radius: 7px; overflow: hidden; }
.row .bar i { display: block; height: 100%; background: var(--ok); border-radius: 7px; transition: width .15s; }
.row .pct { width: 52px; text-align: right; font-variant-numeric: tabular-nums; }
.seen { display: flex; gap: 12px; align-items: center; margin-top: 12px; }
#input { width: 112px; height: 112px; image-rendering: pixelated; background: #000; border-radius: 4px; flex: none; }
#buttons { display: grid; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); gap: 6px; }
#buttons button { padding: 7px 6px; border: 1px solid #d0d7de; background: #f6f8fa; border-radius: 6px;
                  cursor: pointer; font: inherit; line-height: 1.25; }
#buttons button:hover:enabled { background: #eaeef2; border-color: #afb8c1; }
#buttons button:disabled { opacity: .55; cursor: default; }
#buttons .n { color: var(--mute); font-size: 12px; }
#buttons .cls { display: flex; flex-direction: column; gap: 2px; }
#buttons button.forget { padding: 1px 4px; font-size: 12px; color: var(--mute); background: none; border: none;
                         text-decoration: underline; }
#buttons button.forget[hidden] { display: none; }
#buttons.own button.forget[hidden] { display: block; visibility: hidden; }  /* rows stay even */
#status { min-height: 1.45em; margin: 10px 0 0; color: var(--mute); overflow-wrap: anywhere; }
#status.error { color: #cf222e; }
</style>
</head>
<body>
<header><h1>fashion-edge</h1><span id="model">loading the model's details…</span><span id="source"></span></header>
<main>
  <section class="card">
    <div id="view"><img id="video" alt="the camera, live"><div id="roi"></div></div>
    <p class="stats" id="stats">waiting for the camera…</p>
  </section>
  <section class="card">
    <p id="label">…</p>
    <p id="score"></p>
    <div id="topk"></div>
    <div class="seen">
      <img id="input" alt="the 28x28 input the model saw">
      <p class="stats">What the model saw: the region in the box, 28x28, garment bright on black.</p>
    </div>
    <h2>Label this frame</h2>
    <p class="stats" id="collect-note"></p>
    <div id="buttons"></div>
    <p id="status" role="status"></p>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "fashion-edge-token";
const fragment = new URLSearchParams(location.hash.slice(1));
let token = fragment.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
if (fragment.get("token")) sessionStorage.setItem(TOKEN_KEY, token);
let info = null;
let last = -1;

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
const pct = (x) => (100 * x).toFixed(x >= 0.9995 || x < 0.0005 ? 0 : 1) + "%";

function say(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store"});
  const d = await r.json().catch(() => ({error: "HTTP " + r.status}));
  if (!r.ok) throw new Error(d.error || "HTTP " + r.status);
  return d;
}

async function loadInfo() {
  info = await getJSON("/api/info");
  const m = info.model;
  const parts = [m.file];
  if (m.variant) parts.push(m.variant);
  if (m.accuracy != null) parts.push("Fashion-MNIST test accuracy " + pct(m.accuracy));
  const photos = Object.entries(m.photo_accuracy || {});
  for (const [source, acc] of photos) {
    parts.push("held-out photos" + (photos.length > 1 ? " (" + source + ")" : "") + " " + pct(acc));
  }
  parts.push("unknown below " + pct(m.threshold));
  parts.push(info.labels.length + " classes");
  $("model").textContent = parts.join(" · ");
  $("source").textContent = info.source;
  $("collect-note").textContent = info.own
    ? "Each button saves the region in the box as one of your own photos of that class; the model uses it at "
      + "once. 'forget' sets a class's own photos aside."
    : info.collect
    ? "Each button saves the region in the box as a photo of that class, for python -m train --photos."
    : "Labelling is off: start serve with --collect DIR (or --own DIR) to turn these buttons on.";
  const box = $("buttons");
  box.textContent = "";
  box.className = info.own ? "own" : "";
  for (const label of info.choices) {
    const cell = document.createElement("div");
    cell.className = "cls";
    cell.dataset.label = label;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "label";
    b.dataset.label = label;
    b.disabled = !info.collect;
    const n = document.createElement("span");
    n.className = "n";
    b.append(label, document.createElement("br"), n);
    b.addEventListener("click", () => save(label, b));
    const f = document.createElement("button");
    f.type = "button";
    f.className = "forget";
    f.textContent = "forget";
    f.title = "set the own photos of " + label + " aside";
    f.addEventListener("click", () => forget(label, f));
    cell.append(b, f);
    box.append(cell);
    showCounts(label, info.counts[label] || 0, info.own ? info.own[label] || 0 : null);
  }
}

// "3 saved", and with --own "· 2 own" and the class's forget action while it has own photos.
function showCounts(label, saved, own) {
  const cell = [...$("buttons").children].find((c) => c.dataset.label === label);
  cell.querySelector(".n").textContent = !info.collect ? "" : saved + " saved" + (own == null ? "" : " · " + own + " own");
  cell.querySelector(".forget").hidden = !own;
}

// A POST of {label} to a labelling endpoint; asks for the token once if the server wants it.
async function post(url, label) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = {"Content-Type": "application/json"};
    if (token) headers["Authorization"] = "Bearer " + token;
    const r = await fetch(url, {method: "POST", headers, body: JSON.stringify({label})});
    const d = await r.json().catch(() => ({error: "HTTP " + r.status}));
    if ((r.status === 401 || r.status === 403) && attempt === 0 && d.error && d.error.includes("token")) {
      const given = prompt("This server needs its token (serve printed it at start):");
      if (!given) throw new Error(d.error);
      token = given.trim();
      sessionStorage.setItem(TOKEN_KEY, token);
      continue;
    }
    if (!r.ok) throw new Error(d.error || "HTTP " + r.status);
    return d;
  }
}

async function save(label, button) {
  button.disabled = true;
  try {
    const d = await post("/api/label", label);
    say("saved " + d.saved + " (frame " + d.frame + ")" + (d.own == null ? "" : ", " + d.own + " own photos of " + label));
    showCounts(label, d.count, info.own ? d.own : null);
  } catch (e) {
    say(e.message, true);
  } finally {
    button.disabled = !(info && info.collect);
  }
}

async function forget(label, button) {
  if (!confirm("Forget your own photos of " + label + "? They are moved aside, into .forgotten/ in the photo folder."))
    return;
  button.disabled = true;
  try {
    const d = await post("/api/forget", label);
    say("forgot " + d.forgotten + " own photos of " + label + (d.moved_to ? " (files moved to " + d.moved_to + "/)" : ""));
    info.counts[label] = 0;  // the class folder moved aside with its photos
    showCounts(label, 0, d.own);
  } catch (e) {
    say(e.message, true);
  } finally {
    button.disabled = false;
  }
}

function render(d) {
  const unknown = d.unknown;
  const label = $("label");
  label.textContent = d.nothing_found ? "nothing found" : d.label;
  label.className = unknown ? "unknown" : "";
  $("score").textContent = d.nothing_found ? "no garment stands out from the background"
    : unknown ? "best guess " + d.top_k[0].label + " " + pct(d.score) + ", below the threshold"
    : pct(d.score) + " sure";
  const rows = $("topk");
  rows.textContent = "";
  for (const p of d.top_k) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = p.label;
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("i");
    fill.style.width = (100 * p.score).toFixed(1) + "%";
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct(p.score);
    row.append(name, bar, value);
    rows.append(row);
  }
  const [x, y, w, h] = d.roi, [W, H] = d.frame_size;
  const roi = $("roi");
  Object.assign(roi.style, {display: "block", left: 100 * x / W + "%", top: 100 * y / H + "%",
                            width: 100 * w / W + "%", height: 100 * h / H + "%"});
  roi.className = unknown ? "unknown" : "";
  $("input").src = "/input.png?frame=" + d.frame;
  $("stats").textContent = d.fps.toFixed(1) + " fps · " + d.latency_ms.toFixed(1) + " ms per frame · frame "
    + d.frame + " · " + W + "x" + H + " · " + new Date(d.timestamp * 1000).toLocaleTimeString();
}

async function poll() {
  for (;;) {
    const started = performance.now();
    try {
      const d = await getJSON("/api/latest?after=" + last);
      if (d.frame !== last) {
        last = d.frame;
        render(d);
      }
    } catch (e) {
      $("stats").textContent = "no answer from the device (" + e.message + "); trying again";
      await sleep(1000);
    }
    // At most 10 updates a second: enough to read, light on a Pi.
    const rest = 100 - (performance.now() - started);
    if (rest > 0) await sleep(rest);
  }
}

function startVideo() {
  const video = $("video");
  // A server restart ends the stream: reconnect after a moment.
  video.addEventListener("error", () => setTimeout(() => { video.src = "/stream.mjpg?t=" + Date.now(); }, 2000));
  video.src = "/stream.mjpg";
}

async function start() {
  for (;;) {
    try { await loadInfo(); break; } catch (e) { say("can't reach the device: " + e.message, true); await sleep(2000); }
  }
}

// The stream starts after the page's load event: an image that never ends
// would otherwise keep the page "loading" forever.
window.addEventListener("load", () => { startVideo(); start(); poll(); });
</script>
</body>
</html>
"""
