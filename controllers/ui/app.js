// studiod's dashboard: one page, no build step, no framework (ES2020).
//
// Where everything comes from (controllers/web.py has the server's side):
//   GET /                  the OSCQuery namespace: which controls this daemon has, their
//                          types, ranges and current values. The monitor section and the
//                          channel faders are built from it, so a control shows only when
//                          the daemon has it.
//   GET /ui/api/dashboard  start-up state: name, password?, delivery target, channel names,
//                          loudness-log buses, calibrated outputs, alerts.
//   GET /ui/api/history    the loudness log of a time range, for the uPlot chart.
//   ws://host:port/        the OSCQuery WebSocket: LISTEN to an address and every change
//                          (and each meter frame) comes as a binary OSC 1.0 message; the
//                          page changes a value by sending one. No polling anywhere.
//
// Values on the page are always the daemon's: a tap sends a message and the control moves
// when the daemon's change comes back (LISTEN streams it to every page, the sender too).
"use strict";

// ---- OSC 1.0 (int32 i, float32 f, string s; big-endian; 4-byte aligned) ------------------
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

function oscString(text) {
  const bytes = utf8.encode(text);
  const out = new Uint8Array((bytes.length + 4) & ~3); // at least one NUL, padded to 4
  out.set(bytes);
  return out;
}

/** An OSC message: `args` as [[tag, value], ...] with tag "i", "f" or "s". */
function oscEncode(address, args = []) {
  const parts = [oscString(address), oscString("," + args.map((a) => a[0]).join(""))];
  for (const [tag, value] of args) {
    if (tag === "s") {
      parts.push(oscString(String(value)));
    } else {
      const word = new DataView(new ArrayBuffer(4));
      if (tag === "i") word.setInt32(0, value);
      else if (tag === "f") word.setFloat32(0, value);
      else throw new TypeError(`OSC type ${tag} is not sent by this page`);
      parts.push(new Uint8Array(word.buffer));
    }
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out.buffer;
}

/** The messages of an OSC packet (a message or a bundle) in a DataView: [{address, args}]. */
function oscDecode(view, out = []) {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  let at = 0;
  const string = () => {
    let end = at;
    while (end < bytes.length && bytes[end] !== 0) end++;
    if (end >= bytes.length) throw new RangeError("OSC string without its NUL");
    const text = fromUtf8.decode(bytes.subarray(at, end));
    at = (end + 4) & ~3;
    return text;
  };
  const address = string();
  if (address === "#bundle") {
    at += 8; // the time tag: the page acts on arrival
    while (at + 4 <= bytes.length) {
      const size = view.getInt32(at);
      at += 4;
      oscDecode(new DataView(view.buffer, view.byteOffset + at, size), out);
      at += size;
    }
    return out;
  }
  const tags = at < bytes.length ? string() : ",";
  const args = [];
  for (const tag of tags.slice(1)) {
    switch (tag) {
      case "i": args.push(view.getInt32(at)); at += 4; break;
      case "f": args.push(view.getFloat32(at)); at += 4; break;
      case "s": case "S": args.push(string()); break;
      case "d": args.push(view.getFloat64(at)); at += 8; break;
      case "h": args.push(Number(view.getBigInt64(at))); at += 8; break;
      case "T": args.push(true); break;
      case "F": args.push(false); break;
      case "N": args.push(null); break;
      case "b": {
        const size = view.getInt32(at);
        args.push(bytes.slice(at + 4, at + 4 + size));
        at = (at + 4 + size + 3) & ~3;
        break;
      }
      default: throw new RangeError(`OSC type tag ${tag} not understood`);
    }
  }
  out.push({ address, args });
  return out;
}

// ---- small helpers ---------------------------------------------------------------------
const $ = (selector, root = document) => root.querySelector(selector);
const FLOOR_DB = -144; // the daemon's "no signal" (controllers/osc.py METER_FLOOR_DB)
const SILENT_DB = -70; // below this a loudness reads as silence (BS.1770's absolute gate)

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children);
  return node;
}

/** A level as text: one decimal, a real minus sign, "–" for silence. */
function fmt(value, digits = 1, floor = SILENT_DB) {
  if (value === null || value === undefined || !Number.isFinite(value) || value <= floor) {
    return "–";
  }
  const text = Math.abs(value).toFixed(digits);
  return (value < 0 && Number(text) !== 0 ? "−" : "") + text;
}

function signed(value, digits = 1) {
  const text = fmt(value, digits, -Infinity);
  return value > 0 && text !== "–" ? "+" + text : text;
}

const setText = (node, text) => { if (node && node.textContent !== text) node.textContent = text; };
const setAttr = (node, name, value) => {
  if (node && node.getAttribute(name) !== value) node.setAttribute(name, value);
};
const clamp01 = (x) => Math.min(1, Math.max(0, x));
const live = (db) => (Number.isFinite(db) && db > FLOOR_DB ? db : null);

function toast(text) {
  const node = $("#toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

// ---- the colour rules: what the tiles, inputs and dose bars say -------------------------
const NEAR_LU = 2; // amber this far outside the target's tolerance
const NEAR_TP_DB = 1; // amber this close under the ceiling
const INPUT_NEAR_DB = 6; // inputs: green within this of the reference level

/** ok (green), near (amber), over (red, too loud), under (quiet) or none (silence). */
function loudnessState(lufs, target) {
  if (lufs === null || lufs <= SILENT_DB || !target) return "none";
  const off = lufs - target.integrated_lufs;
  const tol = target.tolerance_lu;
  if (Math.abs(off) <= tol) return "ok";
  if (Math.abs(off) <= tol + NEAR_LU) return "near";
  return off > 0 ? "over" : "under";
}

function peakState(dbtp, target) {
  if (dbtp === null || dbtp <= SILENT_DB || !target) return "none";
  if (dbtp > target.ceiling_dbtp) return "over";
  return dbtp > target.ceiling_dbtp - NEAR_TP_DB ? "near" : "ok";
}

// ---- state -------------------------------------------------------------------------------
const state = {
  dashboard: null, // /ui/api/dashboard
  tree: null, // GET /
  nodes: new Map(), // OSCQuery FULL_PATH -> node
  controls: new Map(), // address -> [update(args)]
  meters: new Map(), // /meters/... address -> latest args
  meterTimes: new Map(), // /meters/... address -> when it came (performance.now())
  metersDirty: false,
  listening: new Set(),
  active: new Map(), // "kind|bus" -> alert
  recent: [], // newest last
  password: null,
  authed: false,
  scenes: [],
  heard: null, // the /monitor/system value
  buses: [], // the loudness log's: master and the monitor systems
  stats: { messages: 0, loudnessFrames: 0, draws: 0, reconnects: 0, refreshes: 0, errors: [] },
};
window.studiod = state; // for a console (and the browser test)

// ---- the WebSocket ----------------------------------------------------------------------
const socket = { ws: null, backoffMs: 250, opened: 0 };
const BACKOFF_MAX_MS = 4000;

function setLink(linkState, text) {
  const node = $("#link");
  node.dataset.state = linkState;
  node.textContent = text || linkState;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/`);
  ws.binaryType = "arraybuffer";
  socket.ws = ws;
  ws.onopen = async () => {
    if (socket.opened++) state.stats.reconnects++;
    setLink("loading", "loading");
    state.listening.clear(); // a new connection listens to nothing yet
    try {
      await refresh(); // the namespace and the dashboard may have changed meanwhile
    } catch (err) {
      setLink("offline", "no answer");
      toast(`could not read the daemon's state: ${err.message}`);
      ws.close();
      return;
    }
    if (state.password) sendText("AUTH", state.password);
    socket.backoffMs = 250; // a daemon that answers: the next loss retries soon again
    setLink("live", "live");
  };
  ws.onmessage = (event) => {
    if (typeof event.data === "string") return onCommand(event.data);
    let messages;
    try {
      messages = oscDecode(new DataView(event.data));
    } catch (err) {
      console.warn("studiod: an OSC frame that does not parse:", err.message);
      return;
    }
    for (const message of messages) onMessage(message);
  };
  ws.onclose = () => {
    if (socket.ws !== ws) return;
    socket.ws = null;
    state.authed = false;
    setLink("offline", "reconnecting");
    setTimeout(connect, socket.backoffMs);
    socket.backoffMs = Math.min(socket.backoffMs * 2, BACKOFF_MAX_MS);
  };
}

function sendText(command, data) {
  const ws = socket.ws;
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ COMMAND: command, DATA: data }));
  }
}

function send(address, args = []) {
  const ws = socket.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    toast("not connected: the change was not sent");
    return false;
  }
  ws.send(oscEncode(address, args));
  return true;
}

/** LISTEN to exactly `addresses` (IGNORE the rest). A control is LISTENed to again even
 * when it already was: the daemon answers with its value now, which the rebuilt control
 * needs (a change that came while the page read the namespace went to the old one). */
function listenTo(addresses) {
  const wanted = new Set(addresses);
  for (const address of state.listening) {
    if (!wanted.has(address)) sendText("IGNORE", address);
  }
  for (const address of wanted) {
    if (!state.listening.has(address) || state.controls.has(address)) sendText("LISTEN", address);
  }
  state.listening = wanted;
}

function onCommand(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch {
    return;
  }
  if (message.COMMAND === "PATH_CHANGED") {
    refresh().catch((err) => toast(`could not read the new namespace: ${err.message}`));
  } else if (message.COMMAND === "AUTH") {
    state.authed = message.DATA === true;
    document.body.classList.toggle("locked", locked());
    $("#unlock").hidden = !locked();
    if (state.authed) {
      listScenes();
    } else {
      state.password = null;
      askPassword(true);
    }
  }
}

function onMessage({ address, args }) {
  state.stats.messages++;
  if (address.startsWith("/meters/")) {
    state.meters.set(address, args);
    state.meterTimes.set(address, performance.now());
    if (address === "/meters/loudness") state.stats.loudnessFrames++;
    if (address === "/meters/bus/master") appendHistory(args);
    state.metersDirty = true;
    return;
  }
  if (address === "/alert") return onAlert(args);
  if (address === "/error") {
    const [where, reason] = args;
    state.stats.errors.push(`${where}: ${reason}`);
    toast(`refused: ${reason}`);
    return;
  }
  if (address === "/snapshot/list") return showScenes(args.map(String));
  if (address === "/snapshot/save") {
    setText($("#scene-status"), `Saved “${args[0]}”.`);
    send("/snapshot/list");
    return;
  }
  if (address === "/snapshot/recall") {
    const refused = args[1] ? ` (${args[1]} values refused)` : "";
    setText($("#scene-status"), `Recalled “${args[0]}”${refused}.`);
    return;
  }
  for (const update of state.controls.get(address) || []) update(args);
}

// ---- start-up state and the namespace ------------------------------------------------------
async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function refresh() {
  const ticket = ++state.stats.refreshes;
  const [dashboard, tree] = await Promise.all([getJson("/ui/api/dashboard"), getJson("/")]);
  if (ticket !== state.stats.refreshes) return; // a newer namespace is on its way
  state.dashboard = dashboard;
  state.tree = tree;
  state.nodes = new Map();
  (function index(node) {
    if (node.FULL_PATH) state.nodes.set(node.FULL_PATH, node);
    for (const child of Object.values(node.CONTENTS || {})) index(child);
  })(tree);
  state.controls = new Map();
  renderHeader();
  renderMonitor();
  renderFaders();
  renderBuses();
  renderInputs();
  renderScenes();
  renderDose();
  resetAlerts(dashboard.alerts || [], dashboard.recent_alerts || []);
  // The meters the page shows, whether the namespace lists them yet or not: it lists a
  // meter only while it has a value (no correlation in silence, no loudness-log reading in
  // the daemon's first second), and a LISTEN takes effect whenever the stream starts.
  const meters = ["/meters/loudness", "/meters/lra", "/meters/correlation", "/meters/inputs",
    "/meters/dose", ...state.buses.map((bus) => `/meters/bus/${bus}`)];
  listenTo([...state.controls.keys(), ...meters, "/alert"]);
  if (!locked()) listScenes(); // a locked page may not even ask (the daemon refuses commands)
  loadHistory(trend.rangeS); // again after a reconnect: the gap is in the log
  if (dashboard.password && !state.authed && state.password === null) askPassword(false);
}

function renderHeader() {
  const { dashboard } = state;
  setText($("#name"), dashboard.name || "studiod");
  document.title = dashboard.name || "studiod";
  const t = dashboard.target;
  const band = t && `${fmt(t.integrated_lufs)} LUFS ±${t.tolerance_lu} LU`;
  setText($("#target"), t ? `${t.name} ${band} · TP ≤ ${fmt(t.ceiling_dbtp)}` : "");
  document.body.classList.toggle("locked", locked());
  $("#unlock").hidden = !locked();
  // the loudness tiles' target band, on their -36…0 LUFS scale
  if (t) {
    const lo = clamp01((t.integrated_lufs - t.tolerance_lu + 36) / 36);
    const hi = clamp01((t.integrated_lufs + t.tolerance_lu + 36) / 36);
    for (const band of document.querySelectorAll("#loudness .band")) {
      band.style.left = `${lo * 100}%`;
      band.style.width = `${(hi - lo) * 100}%`;
    }
    const mark = $("#tile-truepeak .mark");
    mark.style.left = `${clamp01((t.ceiling_dbtp + 24) / 27) * 100}%`;
  }
  setText($("#reference"), `reference ${fmt(dashboard.reference_dbfs, 0)} dBFS RMS`);
}

// ---- controls built from the namespace ----------------------------------------------------
function isToggle(node) {
  const range = node.RANGE?.[0];
  return node.TYPE === "i" && range && range.MIN === 0 && range.MAX === 1;
}
const isEnum = (node) => node.TYPE === "s" && Array.isArray(node.RANGE?.[0]?.VALS);
const isFader = (node) => node.TYPE === "f" && /fader law/.test(node.DESCRIPTION || "");

function onUpdate(address, update) {
  if (!state.controls.has(address)) state.controls.set(address, []);
  state.controls.get(address).push(update);
}

/** One button per choice of an enum (`labels` may rename them). */
function choiceControl(node, labels = {}, extraClass = "") {
  const address = node.FULL_PATH;
  const group = el("div", {
    class: `choices ${extraClass}`.trim(), role: "group", "data-address": address,
    "aria-label": node.DESCRIPTION || address,
  });
  for (const choice of node.RANGE[0].VALS) {
    group.append(el("button", {
      type: "button", "data-choice": choice, "aria-pressed": "false",
      text: labels[choice] || choice,
      onclick: () => send(address, [["s", choice]]),
    }));
  }
  const update = ([value]) => {
    setAttr(group, "data-value", String(value));
    for (const button of group.children) {
      setAttr(button, "aria-pressed", String(button.dataset.choice === value));
    }
  };
  onUpdate(address, update);
  update(node.VALUE || []);
  return group;
}

function toggleControl(node, label) {
  const address = node.FULL_PATH;
  const button = el("button", {
    type: "button", class: "toggle", "data-address": address, "aria-pressed": "false",
    title: node.DESCRIPTION, text: label,
    onclick: () => send(address, [["i", button.getAttribute("aria-pressed") === "true" ? 0 : 1]]),
  });
  const update = ([value]) => {
    setAttr(button, "data-value", String(value ? 1 : 0));
    setAttr(button, "aria-pressed", String(Boolean(value)));
  };
  onUpdate(address, update);
  update(node.VALUE || [0]);
  return button;
}

// The console fader law the daemon uses (dsp/registry.py, after Behringer's X32 OSC protocol):
// (position 0…1, dB), linear in dB between breakpoints; the top is the fader's maximum.
const FADER_LAW = [[0, -90], [0.0625, -60], [0.25, -30], [0.5, -10], [1, 10]];

function lawOf(node) {
  const range = node.RANGE[0];
  if (!isFader(node)) return [[0, range.MIN], [1, range.MAX]];
  return FADER_LAW.map(([p, db], k) => [p, k === FADER_LAW.length - 1 ? range.MAX : db]);
}

function interp(x, points, from, to) {
  if (x <= points[0][from]) return points[0][to];
  for (let k = 1; k < points.length; k++) {
    const [a, b] = [points[k - 1], points[k]];
    if (x <= b[from]) return a[to] + ((x - a[from]) / (b[from] - a[from])) * (b[to] - a[to]);
  }
  return points[points.length - 1][to];
}

const STEPS = 1000; // slider resolution along the taper

/** A fader: a slider along the control's taper and its value in dB. */
function faderControl(node, label) {
  const address = node.FULL_PATH;
  const law = lawOf(node);
  const bottom = node.RANGE[0].MIN;
  const slider = el("input", {
    type: "range", min: 0, max: STEPS, step: 1, "aria-label": label, title: node.DESCRIPTION,
  });
  const readout = el("output", { class: "readout" });
  const row = el("div", { class: "fader", "data-address": address },
    el("span", { class: "name", text: label }), slider, readout);
  const off = (db) => isFader(node) && db <= bottom; // the bottom of a fader is -inf
  const show = (db) => setText(readout, off(db) ? "−∞ dB" : `${signed(db)} dB`);
  let dragging = false;
  let pending = null;
  let timer = null;
  const flush = () => {
    timer = null;
    if (pending !== null) send(address, [["f", pending]]);
    pending = null;
  };
  slider.addEventListener("input", () => {
    const db = Math.round(interp(slider.value / STEPS, law, 0, 1) * 10) / 10;
    show(db);
    pending = db;
    if (timer === null) timer = setTimeout(flush, 30); // at most ~30 changes a second
  });
  slider.addEventListener("pointerdown", () => { dragging = true; });
  for (const type of ["pointerup", "pointercancel", "change", "blur"]) {
    slider.addEventListener(type, () => { dragging = false; });
  }
  const update = ([db]) => {
    setAttr(row, "data-value", String(Math.round(db * 100) / 100));
    if (dragging) return; // the hand on the fader wins until it lets go
    slider.value = String(Math.round(interp(db, law, 1, 0) * STEPS));
    show(db);
  };
  onUpdate(address, update);
  update(node.VALUE || [0]);
  return row;
}

const SYSTEM_LABELS = {};
const SOURCE_LABELS = { mix: "Mix", ref: "Ref", ext: "Ext" };
const SOLO_LABELS = { off: "Solo off", left: "Solo L", right: "Solo R" };
const TOGGLES = [
  ["/monitor/dim/on", "Dim"],
  ["/monitor/cut", "Cut"],
  ["/monitor/mono", "Mono"],
  ["/monitor/swap", "Swap L/R"],
  ["/monitor/reference/on", "Ref level"],
  ["/talkback/on", "Talkback"],
];

function renderMonitor() {
  const box = $("#monitor-controls");
  box.replaceChildren();
  const node = (address) => state.nodes.get(address);
  const system = node("/monitor/system");
  if (system && isEnum(system)) {
    box.append(choiceControl(system, SYSTEM_LABELS, "systems"));
    onUpdate("/monitor/system", ([value]) => { state.heard = value; markHeard(); });
    state.heard = system.VALUE?.[0] ?? null;
  }
  const source = node("/monitor/source");
  const play = node("/player/play");
  if (source && isEnum(source)) {
    const row = el("div", { class: "row ab" }, choiceControl(source, SOURCE_LABELS));
    if (play && isToggle(play)) row.append(toggleControl(play, "▶ Play"));
    box.append(el("h3", { text: "Reference A/B" }), row);
  }
  const toggles = TOGGLES.map(([a, label]) => [node(a), label]).filter(([n]) => n && isToggle(n));
  if (toggles.length) {
    box.append(el("div", { class: "toggles" }, ...toggles.map(([n, l]) => toggleControl(n, l))));
  }
  const solo = node("/monitor/solo");
  if (solo && isEnum(solo)) box.append(choiceControl(solo, SOLO_LABELS, "solo"));
  const level = node("/monitor/level");
  if (level && level.TYPE === "f") box.append(faderControl(level, "Level"));
  $("#monitor").hidden = box.children.length === 0;
}

function renderFaders() {
  const box = $("#faders");
  box.replaceChildren();
  const names = state.dashboard.channels || [];
  for (let n = 1; state.nodes.has(`/ch/${n}/fader`); n++) {
    box.append(faderControl(state.nodes.get(`/ch/${n}/fader`), names[n - 1] || `ch ${n}`));
  }
  $("#faders-section").hidden = box.children.length === 0;
}

// ---- scenes ----------------------------------------------------------------------------
const locked = () => Boolean(state.dashboard?.password) && !state.authed;

function listScenes() {
  if (state.nodes.has("/snapshot/list")) send("/snapshot/list");
}

function renderScenes() {
  const has = (a) => state.nodes.has(a);
  $("#scene-save").hidden = !has("/snapshot/save");
  $("#scenes").hidden = !has("/snapshot/save") && !has("/snapshot/list");
  showScenes(state.scenes);
}

function showScenes(names) {
  state.scenes = names;
  const box = $("#scene-list");
  const canRecall = state.nodes.has("/snapshot/recall");
  box.replaceChildren(...names.map((name) => el("button", {
    type: "button", "data-address": "/snapshot/recall", "data-scene": name, disabled: !canRecall,
    text: name, title: `recall ${name}`, onclick: () => send("/snapshot/recall", [["s", name]]),
  })));
  if (!names.length) box.append(el("span", { class: "note", text: "no scene saved yet" }));
}

$("#scene-save").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#scene-name");
  const name = input.value.trim();
  if (!/^[A-Za-z0-9 _.+-]{1,64}$/.test(name)) {
    toast("a scene name is letters, digits, space and _ . + - (up to 64)");
    return;
  }
  if (send("/snapshot/save", [["s", name]])) input.value = "";
});

// ---- the password ------------------------------------------------------------------------
function askPassword(wrong) {
  const dialog = $("#auth");
  $("#auth-error").hidden = !wrong;
  $("#password").value = "";
  if (!dialog.open) dialog.showModal();
  $("#password").focus();
}

$("#auth-form").addEventListener("submit", () => {
  state.password = $("#password").value;
  sendText("AUTH", state.password);
});
$("#auth-cancel").addEventListener("click", () => $("#auth").close());
$("#unlock").addEventListener("click", () => askPassword(false));

// ---- meters --------------------------------------------------------------------------------
/** The loudness log's buses: the master and every monitor system (additive ones too). */
function renderBuses() {
  const systems = Object.keys(state.nodes.get("/monitor/systems")?.CONTENTS || {});
  state.buses = ["master", ...systems];
  const body = $("#buses tbody");
  body.replaceChildren(...state.buses.map((bus) => el("tr", { "data-bus": bus },
    el("th", { text: bus }), ...[0, 1, 2, 3].map(() => el("td", { text: "–" })))));
  $("#buses-section").hidden = true; // until the first reading (a daemon may log nothing)
  markHeard();
}

function markHeard() {
  for (const row of document.querySelectorAll("#buses tr[data-bus]")) {
    setAttr(row, "aria-current", String(row.dataset.bus === state.heard));
  }
}

function renderInputs() {
  const box = $("#inputs");
  box.replaceChildren();
  const names = state.dashboard.channels || [];
  const at = `${clamp01((state.dashboard.reference_dbfs + 60) / 60) * 100}%`;
  names.forEach((name, k) => box.append(el("div",
    { class: "input", "data-channel": k + 1, "data-state": "none" },
    el("span", { class: "name", text: name }),
    el("div", { class: "scale" }, el("i", { class: "rms" }), el("i", { class: "peak" }),
      el("i", { class: "ref", style: `left: ${at}` })),
    el("span", { class: "re", text: "–" }),
    el("span", { class: "clips", "data-clips": "0", text: "0" }))));
  $("#inputs-section").hidden = true; // until the first reading
}

function renderDose() {
  const box = $("#dose");
  box.replaceChildren();
  const calibrated = state.dashboard.calibrated || [];
  for (const bus of calibrated) {
    box.append(el("div", { class: "dose", "data-bus": bus, "data-state": "none" },
      el("span", { class: "name", text: bus }),
      el("div", { class: "scale" }, el("i", { class: "fill" })),
      el("span", { class: "percent", text: "–" })));
  }
  if (!calibrated.length) {
    box.append(el("p", {
      class: "note", text: "No calibrated output: the dose needs [loudness] spl_at_minus20dbfs.",
    }));
  }
}

function tile(id, text, position, tileState) {
  const node = $(`#tile-${id}`);
  setText($(`#${id}`), text);
  setAttr(node, "data-state", tileState);
  const fill = $(".fill", node);
  const at = `${(clamp01(position) * 100).toFixed(1)}%`;
  const side = fill.parentNode.classList.contains("centre") ? "left" : "width"; // a marker
  if (fill.style[side] !== at) fill.style[side] = at;
}

const STALE_MS = 1500;
setInterval(() => { state.metersDirty = true; }, 500); // let stopped streams go blank

function drawMeters() {
  requestAnimationFrame(drawMeters);
  if (!state.metersDirty || !state.dashboard) return;
  state.metersDirty = false;
  state.stats.draws++;
  const target = state.dashboard.target;
  // a stream that stopped (the daemon sends no correlation in silence) reads as no signal
  const now = performance.now();
  const m = new Map([...state.meters].filter(([a]) => now - state.meterTimes.get(a) < STALE_MS));
  const loud = m.get("/meters/loudness");
  if (loud) {
    const [momentary, shortterm, integrated, truePeak] = loud.map(live);
    const lufs = (v) => (v === null ? 0 : (v + 36) / 36);
    tile("momentary", fmt(momentary), lufs(momentary), loudnessState(momentary, target));
    tile("shortterm", fmt(shortterm), lufs(shortterm), loudnessState(shortterm, target));
    tile("integrated", fmt(integrated), lufs(integrated), loudnessState(integrated, target));
    const tp = truePeak === null ? 0 : (truePeak + 24) / 27; // on -24 … +3 dBTP
    tile("truepeak", fmt(truePeak), tp, peakState(truePeak, target));
  }
  const lra = m.get("/meters/lra");
  if (lra) {
    const v = live(lra[0]);
    if (v === null) tile("lra", "–", 0, "none");
    else tile("lra", v.toFixed(1), v / 20, "ok"); // on 0 … 20 LU
  }
  const corr = m.get("/meters/correlation");
  {
    const v = !corr || corr[0] < -1.5 ? null : corr[0]; // -144: no reading (silence)
    if (v === null) tile("correlation", "–", 0.5, "none");
    else tile("correlation", signed(v, 2), (v + 1) / 2, v < 0 ? "over" : "ok");
  }
  for (const row of document.querySelectorAll("#buses tr[data-bus]")) {
    const values = m.get(`/meters/bus/${row.dataset.bus}`);
    if (!values) continue;
    $("#buses-section").hidden = false;
    const cells = row.querySelectorAll("td");
    values.slice(0, 4).forEach((v, k) => setText(cells[k], fmt(live(v))));
  }
  drawInputs(m.get("/meters/inputs"));
  drawDose(m.get("/meters/dose"));
}

function drawInputs(values) {
  if (!values) return;
  $("#inputs-section").hidden = !$("#inputs .input");
  const reference = state.dashboard.reference_dbfs;
  for (const row of document.querySelectorAll("#inputs .input")) {
    const k = (Number(row.dataset.channel) - 1) * 4;
    if (k + 3 >= values.length) continue;
    const [peak, rms, re, clips] = values.slice(k, k + 4);
    const scale = (db) => `${(clamp01((db + 60) / 60) * 100).toFixed(1)}%`;
    $(".peak", row).style.left = scale(peak);
    $(".rms", row).style.width = scale(rms);
    const heard = rms > FLOOR_DB && rms > reference - 40;
    setText($(".re", row), heard ? `${signed(re)} dB` : "–");
    const level = Math.abs(re) <= INPUT_NEAR_DB ? "ok" : re > 0 ? "near" : "under";
    setAttr(row, "data-state", heard ? level : "none");
    const clipsNode = $(".clips", row);
    setText(clipsNode, String(clips));
    setAttr(clipsNode, "data-clips", String(clips));
  }
}

function drawDose(values) {
  if (!values) return;
  for (let k = 0; k + 1 < values.length; k += 2) {
    const row = $(`#dose .dose[data-bus="${CSS.escape(String(values[k]))}"]`);
    if (!row) continue;
    const percent = values[k + 1];
    setText($(".percent", row), `${percent.toFixed(1)} %`);
    $(".fill", row).style.width = `${clamp01(percent / 100) * 100}%`;
    setAttr(row, "data-state", percent >= 100 ? "over" : percent >= 50 ? "near" : "ok");
  }
}

// ---- alerts ------------------------------------------------------------------------------
const RECENT_MAX = 50;

function resetAlerts(active, recent) {
  state.active = new Map(active.map((a) => [`${a.kind}|${a.bus}`, a]));
  state.recent = recent.slice(-RECENT_MAX);
  drawAlerts();
}

function onAlert([kind, severity, bus, message]) {
  const alert = { time: Date.now() / 1000, kind, severity, bus, message };
  const key = `${kind}|${bus}`;
  if (severity === "clear") state.active.delete(key);
  else state.active.set(key, alert);
  state.recent.push(alert);
  if (state.recent.length > RECENT_MAX) state.recent.shift();
  if (severity !== "clear") trend.addAlert({ t: alert.time, kind, severity, bus, message });
  drawAlerts();
}

const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

function drawAlerts() {
  const banner = $("#alert-banner");
  const active = [...state.active.values()].sort(
    (a, b) => (SEVERITY_RANK[a.severity] ?? 3) - (SEVERITY_RANK[b.severity] ?? 3)
      || b.time - a.time);
  banner.replaceChildren(...active.map((a) => el("div", {
    class: "alert", "data-kind": a.kind, "data-severity": a.severity, "data-bus": a.bus,
  }, el("b", { text: a.kind.replace("_", " ") }), ` ${a.bus}: ${a.message}`)));
  banner.hidden = active.length === 0;
  banner.dataset.severity = active.length ? active[0].severity : "";
  const list = $("#alerts");
  const items = state.recent.slice().reverse().map((a) => el("li", {
    "data-kind": a.kind, "data-severity": a.severity, "data-bus": a.bus,
  }, el("time", { text: clock(a.time) }), el("span", { class: "sev", text: a.severity }),
  el("span", { class: "what", text: `${a.kind} · ${a.bus}: ${a.message}` })));
  list.replaceChildren(...(items.length ? items : [el("li", { class: "empty", text: "none" })]));
}

// ---- history (uPlot) -----------------------------------------------------------------------
const trend = {
  rangeS: 3600,
  chart: null,
  data: [[], [], [], [], []], // t, momentary, short-term, integrated, true peak
  alerts: [],
  lastT: 0,
  loading: 0,

  addAlert(alert) {
    this.alerts.push(alert);
    $("#history").dataset.alerts = String(this.alerts.length);
    this.chart?.redraw(false, false);
  },
};

const SEVERITY_COLOURS = { critical: "#ff5a4f", warning: "#f0b429", info: "#4aa3ff" };

async function loadHistory(rangeS) {
  trend.rangeS = rangeS;
  state.trend = trend;
state.receive = onMessage; // what a message from the daemon does (the browser test uses it)

for (const button of document.querySelectorAll("[data-range]")) {
    setAttr(button, "aria-pressed", String(Number(button.dataset.range) === rangeS));
  }
  const ticket = ++trend.loading;
  const to = Date.now() / 1000;
  const from = to - rangeS;
  let body;
  try {
    body = await getJson(`/ui/api/history?from=${from.toFixed(0)}&to=${to.toFixed(0)}&bus=master`);
  } catch (err) {
    toast(`no history: ${err.message}`);
    return;
  }
  if (ticket !== trend.loading) return; // a newer range was asked for meanwhile
  const rows = body.readings || [];
  trend.data = [
    rows.map((r) => r.t),
    rows.map((r) => r.momentary_lufs),
    rows.map((r) => r.shortterm_lufs),
    rows.map((r) => r.integrated_lufs),
    rows.map((r) => r.true_peak_dbtp),
  ];
  trend.lastT = rows.length ? rows[rows.length - 1].t : 0;
  trend.alerts = (body.alerts || []).filter((a) => a.severity !== "clear");
  drawHistory(from, to);
}

function chartData() {
  const t = state.dashboard?.target;
  const n = trend.data[0].length;
  const flat = (v) => new Array(n).fill(v ?? null);
  return [...trend.data,
    flat(t && t.integrated_lufs + t.tolerance_lu), flat(t && t.integrated_lufs - t.tolerance_lu)];
}

function drawHistory(from, to) {
  const box = $("#history");
  box.dataset.points = String(trend.data[0].length);
  box.dataset.alerts = String(trend.alerts.length);
  box.dataset.from = String(Math.round(from));
  box.dataset.to = String(Math.round(to));
  if (trend.chart) {
    trend.chart.setData(chartData(), false);
    trend.chart.setScale("x", { min: from, max: to });
    return;
  }
  const width = Math.max(200, box.clientWidth);
  const grid = { stroke: "#262c33", width: 1 };
  const axis = { stroke: "#8a96a3", grid, ticks: grid, font: "11px system-ui, sans-serif" };
  const opts = {
    width, height: 200, pxAlign: 1,
    legend: { show: false },
    cursor: { drag: { x: false, y: false }, points: { show: false } },
    scales: {
      x: { time: true, auto: false, min: from, max: to },
      // at least -40 … 0, wider when the data is
      y: {
        auto: true,
        range: (u, lo, hi) => [Math.min(-40, Math.floor((lo ?? -40) / 6) * 6),
          Math.max(0, Math.ceil((hi ?? 0) / 3) * 3)],
      },
    },
    axes: [
      { ...axis, space: 60 },
      { ...axis, size: 36, values: (u, ticks) => ticks.map((v) => fmt(v, 0, -Infinity)) },
    ],
    series: [
      {},
      { label: "momentary", stroke: "rgba(120, 170, 220, 0.45)", width: 1 },
      { label: "short-term", stroke: "#6cc4ff", width: 2 },
      { label: "integrated", stroke: "#e8edf2", width: 1.5, dash: [6, 4] },
      { label: "true peak", stroke: "rgba(255, 120, 90, 0.8)", width: 1 },
      { label: "target high", stroke: "rgba(58, 208, 122, 0.6)", width: 1 },
      { label: "target low", stroke: "rgba(58, 208, 122, 0.6)", width: 1 },
    ],
    bands: [{ series: [5, 6], fill: "rgba(58, 208, 122, 0.14)" }],
    hooks: {
      // the alerts raised in the range: a line at their time in their severity's colour
      draw: [(u) => {
        const ctx = u.ctx;
        const { top, height } = u.bbox;
        ctx.save();
        ctx.lineWidth = 2 * devicePixelRatio;
        for (const a of trend.alerts) {
          const x = u.valToPos(a.t, "x", true);
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
          ctx.strokeStyle = SEVERITY_COLOURS[a.severity] || "#ccc";
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
        }
        ctx.restore();
      }],
    },
  };
  trend.chart = new uPlot(opts, chartData(), box);
  new ResizeObserver(() => {
    const w = Math.max(200, box.clientWidth);
    if (w !== trend.chart.width) trend.chart.setSize({ width: w, height: 200 });
  }).observe(box);
}

/** The master's reading of the last second, from the /meters/bus/master stream: the log
 * gets one a second, so the chart does too, and moves on with the clock. */
function appendHistory(values) {
  if (!trend.chart) return;
  const now = Date.now() / 1000;
  if (now - trend.lastT < 1) return;
  trend.lastT = now;
  const [momentary, shortterm, integrated, truePeak] = values.map(live);
  const d = trend.data;
  [now, momentary, shortterm, integrated, truePeak].forEach((v, k) => d[k].push(v));
  const from = now - trend.rangeS;
  while (d[0].length && d[0][0] < from) for (const column of d) column.shift();
  drawHistory(from, now);
}

state.trend = trend;
state.receive = onMessage; // what a message from the daemon does (the browser test uses it)

for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => loadHistory(Number(button.dataset.range)));
}

// ---- go ------------------------------------------------------------------------------------
setLink("connecting", "connecting");
connect();
requestAnimationFrame(drawMeters);
