// distill's web page: every control of the OSCQuery tree, the live view and the code grid.
// It reads the tree over HTTP, then LISTENs to every control and to what the engine measures over
// the OSCQuery WebSocket, and sends binary OSC back on it, as ossia score does. No build step, no
// library: the OSC it needs (int, float, string, true/false) is a few lines below.
"use strict";

const P = "/distill";
const GRID_FRAMES = 256;  // frames of codes shown, newest on the right
const REGION = `${P}/region`;
const measures = [];  // what the engine measures: the tree's read-only nodes (meter, codes, frame, stats, measured)
// newest: the frame number of the last column (from /distill/frame); selection: what the pointer marked on the
// grid, {first, length, top, bottom} in frame numbers and levels; heldAt: the newest frame when a hold began
const state = { values: {}, frames: 0, codes: [], levels: 0, descriptors: [], worlds: [], newest: -1,
                selection: null, sent: null, heldAt: -1 };  // sent: the selection the engine was last given
window.distill = state;  // for tests and the curious: what the page knows

// -- OSC over the WebSocket -----------------------------------------------------------------------

function oscString(s) {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array((bytes.length + 4) & ~3);
  out.set(bytes);
  return out;
}

function encode(address, args) {
  const tags = "," + args.map(a => a.type).join("");
  const parts = [oscString(address), oscString(tags)];
  for (const a of args) {
    if (a.type === "s") { parts.push(oscString(a.value)); continue; }
    const b = new DataView(new ArrayBuffer(4));
    a.type === "f" ? b.setFloat32(0, a.value) : b.setInt32(0, a.value);
    parts.push(new Uint8Array(b.buffer));
  }
  return join(parts);
}

function join(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out.buffer;
}

function bundle(messages) {  // [[address, args], ...] as one OSC bundle: the engine applies them at the same frame
  const parts = [oscString("#bundle"), new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1])];  // timetag 1: at once
  for (const [address, args] of messages) {
    const m = new Uint8Array(encode(address, args)), size = new DataView(new ArrayBuffer(4));
    size.setInt32(0, m.length);
    parts.push(new Uint8Array(size.buffer), m);
  }
  return join(parts);
}

function decodeAll(buffer) {  // an OSC message, or a bundle of them (what one feed tick sends): [{address, args}]
  const view = new DataView(buffer), bytes = new Uint8Array(buffer);
  if (bytes[0] !== "#".charCodeAt(0)) return [decode(buffer)];  // a message: its address starts with "/"
  const out = [];
  for (let at = 16; at + 4 <= bytes.length;) {  // "#bundle\0", time tag, then (size, message)...
    const size = view.getInt32(at);
    out.push(decode(buffer.slice(at + 4, at + 4 + size)));
    at += 4 + size;
  }
  return out;
}

function decode(buffer) {
  const view = new DataView(buffer), bytes = new Uint8Array(buffer);
  let at = 0;
  const str = () => {
    let end = at;
    while (bytes[end]) end++;
    const s = new TextDecoder().decode(bytes.subarray(at, end));
    at = (end + 4) & ~3;
    return s;
  };
  const address = str(), tags = str().slice(1), args = [];
  for (const t of tags) {
    if (t === "i") { args.push(view.getInt32(at)); at += 4; }
    else if (t === "f") { args.push(view.getFloat32(at)); at += 4; }
    else if (t === "s") args.push(str());
    else if (t === "T" || t === "F") args.push(t === "T");
  }
  return { address, args };
}

let ws = null;
const listening = [];

function send(address, args) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(encode(address, args));
}

function sendAll(messages) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(bundle(messages));
}

function connect() {
  ws = new WebSocket(`ws://${location.host}/`);
  ws.binaryType = "arraybuffer";
  ws.onopen = () => {
    link(true);
    ws.send(JSON.stringify({ COMMAND: "BUNDLE", DATA: true }));  // one WebSocket message a feed tick
    for (const address of listening) {
      if (!(document.hidden && measures.includes(address))) ws.send(JSON.stringify({ COMMAND: "LISTEN", DATA: address }));
    }
  };
  ws.onmessage = e => {
    if (typeof e.data === "string") {  // PATH_CHANGED: a preset was saved
      const msg = JSON.parse(e.data);
      if (msg.COMMAND === "PATH_CHANGED") refresh(msg.DATA);
      return;
    }
    for (const { address, args } of decodeAll(e.data)) receive(address, args);
  };
  ws.onclose = () => { link(false); forgetCodes(); setTimeout(connect, 1000); };
}

// Hidden (a phone's screen locked, another tab in front), the page stops listening to what the engine
// measures: the engine does not measure for it and the phone does not decode 30 updates a second. The
// controls stay in step. The code grid starts afresh when it shows again: its columns are consecutive frames.
document.addEventListener("visibilitychange", () => {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  forgetCodes();  // (on showing again too: codes that were on their way when it hid came before the gap)
  for (const address of measures) ws.send(JSON.stringify({ COMMAND: document.hidden ? "IGNORE" : "LISTEN", DATA: address }));
});

function link(on) {
  const el = document.getElementById("link");
  el.textContent = on ? "live" : "reconnecting…";
  el.className = on ? "on" : "off";
}

// -- controls from the OSCQuery tree --------------------------------------------------------------

const views = {};  // address -> function(args) that shows a value

function leaves(node, keep = n => n.ACCESS !== 1, out = []) {  // the controls, or the nodes `keep` picks
  if (node.TYPE && keep(node)) out.push(node);
  for (const child of Object.values(node.CONTENTS || {})) leaves(child, keep, out);
  return out;
}

function short(address) { return address.slice(P.length + 1); }

function label(address) {  // world/bells -> bells, descriptor/loudness/free -> loudness: the group says the rest
  const parts = short(address).split("/");
  return parts.length > 1 ? parts.slice(1).filter(p => p !== "free").join("/") : parts[0];
}

function row(labelText, title) {
  const r = document.createElement("div");
  r.className = "row";
  const label = document.createElement("label");
  label.textContent = labelText;
  label.title = title;
  r.append(label);
  return r;
}

function fader(node) {
  const [range] = node.RANGE, integer = node.TYPE === "i";
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const input = document.createElement("input");
  Object.assign(input, { type: "range", min: range.MIN, max: range.MAX,
                         step: integer ? 1 : (range.MAX - range.MIN) / 1000 });
  input.dataset.address = node.FULL_PATH;
  const out = document.createElement("output");
  const unit = node.UNIT ? { "time.second": " s", "gain.db": " dB" }[node.UNIT[0]] || "" : "";
  const show = v => { out.textContent = (integer ? String(v) : Number(v).toFixed(2)) + unit; };
  let held = false;  // the performer's finger is on it: values coming back do not move it
  input.addEventListener("pointerdown", () => { held = true; });
  input.addEventListener("pointerup", () => { held = false; });
  input.addEventListener("input", () => {
    const v = Number(input.value);
    show(v);
    send(node.FULL_PATH, [{ type: integer ? "i" : "f", value: v }]);
  });
  views[node.FULL_PATH] = args => {
    state.values[node.FULL_PATH] = args[0];
    if (!held) input.value = args[0];
    show(args[0]);
  };
  if (node.VALUE) views[node.FULL_PATH](node.VALUE);
  r.append(input, out);
  return r;
}

function toggle(node) {
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const b = document.createElement("button");
  b.dataset.address = node.FULL_PATH;
  b.textContent = "off";
  b.addEventListener("click", () => send(node.FULL_PATH, [{ type: "i", value: b.classList.contains("on") ? 0 : 1 }]));
  views[node.FULL_PATH] = args => {
    const on = Boolean(args[0]);
    state.values[node.FULL_PATH] = on;
    b.classList.toggle("on", on);
    b.textContent = on ? "on" : "off";
  };
  if (node.VALUE) views[node.FULL_PATH](node.VALUE);
  r.append(b);
  return r;
}

function trigger(node) {
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const b = document.createElement("button");
  b.dataset.address = node.FULL_PATH;
  b.textContent = short(node.FULL_PATH).split("/").pop();
  b.addEventListener("click", () => send(node.FULL_PATH, []));
  r.append(b);
  return r;
}

function number(node) {  // a stored whole number too wide for a fader (seed, region/start): typed in
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const n = document.createElement("input");
  Object.assign(n, { type: "number", min: node.RANGE[0].MIN, max: node.RANGE[0].MAX, step: 1, className: "num" });
  n.dataset.address = node.FULL_PATH;
  n.addEventListener("change", () => send(node.FULL_PATH, [{ type: "i", value: Math.round(Number(n.value)) }]));
  views[node.FULL_PATH] = args => {
    state.values[node.FULL_PATH] = args[0];
    if (document.activeElement !== n) n.value = args[0];
  };
  if (node.VALUE) views[node.FULL_PATH](node.VALUE);
  r.append(n);
  return r;
}

function numbered(node, verb) {  // a command that takes a number: preset/save
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const n = document.createElement("input");
  Object.assign(n, { type: "number", min: node.RANGE[0].MIN, max: node.RANGE[0].MAX, value: 0, className: "num" });
  const b = document.createElement("button");
  b.dataset.address = node.FULL_PATH;
  b.textContent = verb;
  b.addEventListener("click", () => send(node.FULL_PATH, [{ type: "i", value: Number(n.value) }]));
  r.append(n, b);
  return r;
}

function choices(node, numbers, into) {  // cue and preset/recall: one button each
  into.replaceChildren(...numbers.map(i => {
    const b = document.createElement("button");
    b.textContent = String(i);
    b.dataset.address = node.FULL_PATH;
    b.title = `${node.FULL_PATH} ${i}`;
    b.addEventListener("click", () => send(node.FULL_PATH, [{ type: "i", value: i }, { type: "f", value: 0.1 }]));
    return b;
  }));
}

function text(node) {  // model: a file name
  const r = row(label(node.FULL_PATH), node.DESCRIPTION);
  const t = document.createElement("input");
  t.placeholder = "file.distill";
  t.addEventListener("change", () => t.value && send(node.FULL_PATH, [{ type: "s", value: t.value }]));
  r.append(t);
  return r;
}

async function refresh(path) {  // a node changed (a preset saved): read it again
  if (path !== `${P}/preset/recall`) return;
  const node = await (await fetch(path)).json();
  choices(node, node.RANGE[0].VALS || [], document.getElementById("presets"));
}

async function build() {
  const tree = await (await fetch("/")).json();
  const groups = {};
  for (const node of leaves(tree)) {
    const address = node.FULL_PATH, group = (node.TAGS || ["other"])[0];
    if (address === `${P}/mix`) continue;  // the worlds have their own faders
    const fieldset = groups[group] || (groups[group] = document.createElement("fieldset"));
    if (!fieldset.firstChild) {
      const legend = document.createElement("legend");
      legend.textContent = group;
      fieldset.append(legend);
    }
    listening.push(address);
    if (address === `${P}/cue`) {
      const all = [];
      for (let i = node.RANGE[0].MIN; i <= node.RANGE[0].MAX; i++) all.push(i);
      choices(node, all, document.getElementById("cues"));
      views[address] = args => { document.getElementById("cue").textContent = String(args[0]); };
    } else if (address === `${P}/preset/recall`) {
      const r = row("recall", node.DESCRIPTION), into = document.createElement("div");
      into.id = "presets";
      r.append(into);
      fieldset.append(r);
      choices(node, node.RANGE[0].VALS || [], into);
    } else if (node.TYPE === "i" && node.VALUE && node.RANGE[0].MAX - node.RANGE[0].MIN > 65536) {
      fieldset.append(number(node));
    } else if (node.TYPE === "f" || (node.TYPE === "i" && node.VALUE)) fieldset.append(fader(node));
    else if (node.TYPE === "i") fieldset.append(numbered(node, "save"));
    else if (node.TYPE === "T") fieldset.append(toggle(node));
    else if (node.TYPE === "N") fieldset.append(trigger(node));
    else if (node.TYPE === "s") fieldset.append(text(node));
    if (address.startsWith(`${P}/world/`)) state.worlds.push(address);
    if (/^\/distill\/descriptor\/[^/]+$/.test(address)) state.descriptors.push(address);
    if (address.endsWith("/free")) {  // a descriptor let go: the model chooses it
      const held = address.slice(0, -"/free".length);
      views[address] = () => { state.values[held] = "free"; };
    }
  }
  document.getElementById("controls").append(...Object.values(groups));
  state.levels = tree.CONTENTS.distill.CONTENTS.levels.RANGE[0].MAX;
  measures.push(...leaves(tree, n => n.ACCESS === 1).map(n => n.FULL_PATH));
  listening.push(...measures);
  liveView();
  regionView();
  connect();
  requestAnimationFrame(draw);
}

// -- the live view --------------------------------------------------------------------------------

let mixBars = [], descriptorBars = [];  // [[address, the element that shows it], ...]

function bars(into, addresses, name, marks) {  // [[address, its bar], ...]
  const out = addresses.map(address => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = marks ? "<div></div><span class='mark'></span>" : "<div></div>";
    bar.dataset.address = address;
    return [address, bar];
  });
  into.replaceChildren(...out.map(([address, bar]) => {
    const r = row(name(address), address);
    r.append(bar);
    return r;
  }));
  return out;
}

function liveView() {
  mixBars = bars(document.getElementById("mix"), state.worlds, a => a.split("/").pop())
    .map(([a, bar]) => [a, bar.firstChild]);
  descriptorBars = bars(document.getElementById("descriptors"), state.descriptors, a => a.split("/").pop(), true);
  const meter = document.getElementById("meter");
  views[`${P}/meter`] = ([peak]) => { meter.style.transform = `scaleX(${Math.min(1, peak)})`; };
  views[`${P}/stats`] = ([rtf, buffer, underruns, latency]) => {
    state.underruns = underruns;
    document.getElementById("stats").textContent =
      `×${rtf.toFixed(1)} real time · ${underruns} underruns · ${latency.toFixed(0)} ms`;
  };
  views[`${P}/measured`] = measured => { state.measured = measured; };
  views[`${P}/codes`] = codes => {
    state.codes.push(codes);
    if (state.codes.length > GRID_FRAMES) state.codes.shift();
    state.frames++;
    if (state.newest >= 0) state.newest++;  // /distill/frame, after the codes, confirms it: never out of step
  };
}

// -- the code grid's region: drag to select, then hold it ------------------------------------------

function cell(e, canvas) {  // the frame number and level under the pointer
  const box = canvas.getBoundingClientRect();
  const x = Math.min(GRID_FRAMES - 1, Math.max(0, Math.floor((e.clientX - box.left) / box.width * GRID_FRAMES)));
  const level = Math.min(state.levels - 1, Math.max(0, Math.floor((e.clientY - box.top) / box.height * state.levels)));
  return { frame: Math.max(0, state.newest - (GRID_FRAMES - 1 - x)), level };
}

function select(a, b) {
  const first = Math.min(a.frame, b.frame);
  state.selection = { first, length: Math.max(a.frame, b.frame) - first + 1,
                      top: Math.min(a.level, b.level), bottom: Math.max(a.level, b.level) };
  const s = state.selection;
  changed = true;
  document.getElementById("selection").textContent =
    `${s.length} frames (${s.first}…${s.first + s.length - 1}) · levels ${s.top}–${s.bottom}`;
}

function hold(mode) {  // lock, loop or mutate what is selected (the region as it is, with nothing selected); 0 lets go
  const s = state.selection, messages = [];
  if (mode && s && s !== state.sent) {  // a new selection: take it (pressing loop after lock keeps the same codes)
    for (const [name, value] of [["start", s.first], ["length", s.length], ["top", s.top], ["bottom", s.bottom]]) {
      messages.push([`${REGION}/${name}`, [{ type: "i", value }]]);
    }
    state.sent = s;
  }
  messages.push([`${REGION}/mode`, [{ type: "i", value: mode }]]);
  sendAll(messages);
}

function regionView() {
  const canvas = document.getElementById("grid");
  let anchor = null;
  canvas.addEventListener("pointerdown", e => {
    if (state.newest < 0) return;
    canvas.setPointerCapture(e.pointerId);
    anchor = cell(e, canvas);
    select(anchor, anchor);
  });
  canvas.addEventListener("pointermove", e => { if (anchor) select(anchor, cell(e, canvas)); });
  canvas.addEventListener("pointerup", () => { anchor = null; });
  canvas.addEventListener("pointercancel", () => { anchor = null; });
  for (const b of document.querySelectorAll("#hold button")) {
    b.addEventListener("click", () => hold(Number(b.dataset.mode)));
  }
  views[`${P}/frame`] = ([frame]) => { state.newest = frame; };
  // a hold begins (or its span moves): remember where, to draw what it plays; from any surface, not just this page
  for (const name of ["mode", "start", "length"]) {
    const address = `${REGION}/${name}`, show = views[address] || (() => {});
    views[address] = args => {
      const was = state.values[`${REGION}/mode`];
      show(args);
      state.values[address] = args[0];
      if (state.values[`${REGION}/mode`] && (name !== "mode" || !was)) state.heldAt = state.newest;
      for (const b of document.querySelectorAll("#hold button")) {
        b.classList.toggle("on", Number(b.dataset.mode) === state.values[`${REGION}/mode`]);
      }
    };
  }
}

function receive(address, args) {
  changed = true;
  const view = views[address];
  if (view) view(args);
  else state.values[address] = args.length === 1 ? args[0] : args;
}

// -- drawing, at the screen's refresh but only when something changed ----------------------------------

const DRAW_EVERY = 1000 / 30;  // ms: as often as the engine sends its meters, not at every screen refresh
let changed = true, drawn = -Infinity;  // something arrived or the pointer moved since the last drawing (at `drawn`)
const codesCanvas = document.createElement("canvas");  // the codes alone, drawn one new column at a time
let drawnFrames = 0;  // state.frames already on codesCanvas

function forgetCodes() {  // frames will be missed (hidden, reconnecting): the grid starts afresh with the next ones
  state.codes = [];
  state.newest = -1;
  codesCanvas.width = 0;  // drawCodes clears it to black
  changed = true;
}

const colours = new Map();

function colour(code) {  // the same code, the same colour: repeats show as repeated colours
  let c = colours.get(code);
  if (c === undefined) {
    c = code < 0 ? "#222" : `hsl(${(code * 137.508) % 360}, 70%, ${45 + (code % 3) * 10}%)`;
    colours.set(code, c);
  }
  return c;
}

function drawCodes(height) {  // the columns that arrived since the last drawing; the older ones scroll left
  const c = codesCanvas, g = c.getContext("2d"), h = height / Math.max(1, state.levels);
  if (c.width !== GRID_FRAMES || c.height !== height) {  // (a canvas resized is cleared: black, then every column)
    Object.assign(c, { width: GRID_FRAMES, height });
    g.fillStyle = "#000";
    g.fillRect(0, 0, GRID_FRAMES, height);
    drawnFrames = state.frames - state.codes.length;
  }
  const fresh = Math.min(state.frames - drawnFrames, state.codes.length);
  if (fresh <= 0) return;
  g.drawImage(c, -fresh, 0);
  g.fillStyle = "#000";
  g.fillRect(GRID_FRAMES - fresh, 0, fresh, height);
  state.codes.slice(-fresh).forEach((codes, i) => {
    codes.forEach((code, level) => {
      g.fillStyle = colour(code);
      g.fillRect(GRID_FRAMES - fresh + i, level * h, 1, h);
    });
  });
  drawnFrames = state.frames;
}

function draw(now) {
  requestAnimationFrame(draw);
  if (!changed || now - drawn < DRAW_EVERY) return;
  changed = false;
  drawn = now;
  const total = state.worlds.reduce((n, a) => n + (state.values[a] || 0), 0);
  for (const [a, bar] of mixBars) bar.style.transform = `scaleX(${total ? (state.values[a] || 0) / total : 0})`;
  descriptorBars.forEach(([a, bar], i) => {
    const target = state.values[a];
    bar.firstChild.style.transform = `scaleX(${state.measured ? state.measured[i] : 0})`;  // measured
    bar.lastChild.style.display = target === "free" || target === undefined ? "none" : "";
    bar.lastChild.style.transform = `translateX(${(target || 0) * 100}%)`;  // the target, a line
  });
  const canvas = document.getElementById("grid"), g = canvas.getContext("2d");
  if (canvas.width !== GRID_FRAMES) canvas.width = GRID_FRAMES;
  drawCodes(canvas.height);
  g.drawImage(codesCanvas, 0, 0);
  drawRegion(g, canvas.height / Math.max(1, state.levels));
}

function drawRegion(g, h) {
  const column = frame => GRID_FRAMES - 1 - (state.newest - frame);  // may be off the left edge: drawn clipped
  const v = name => state.values[`${REGION}/${name}`];
  const mode = v("mode");
  if (mode) {  // the held region: where its codes come from, outlined, and the frames it plays since, shaded
    const start = v("start"), length = v("length");
    const from = start >= 0 ? start : state.heldAt + 1 + start;
    const [top, bottom] = mode === 2 ? [0, state.levels - 1] : [Math.min(v("top"), v("bottom")), Math.max(v("top"), v("bottom"))];
    const played = [column(state.heldAt + 1), top * h, state.newest - state.heldAt, (bottom - top + 1) * h];
    g.fillStyle = "rgba(255, 255, 255, 0.25)";
    g.fillRect(...played);
    g.strokeStyle = "#e9a23b";
    g.lineWidth = 3;
    g.strokeRect(...played);
    g.strokeRect(column(from), top * h + 1.5, length, (bottom - top + 1) * h - 3);
  }
  const s = state.selection;
  if (s) {
    g.strokeStyle = "#fff";
    g.lineWidth = 1;
    g.setLineDash([4, 3]);
    g.strokeRect(column(s.first) + 0.5, s.top * h + 0.5, s.length - 1, (s.bottom - s.top + 1) * h - 1);
    g.setLineDash([]);
  }
}

build();
