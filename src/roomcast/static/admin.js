// admin.js: the admin page of a roomcast node (GET /admin, docs/operations.md#admin-page).
//
// It logs in (POST /admin/login sets an HttpOnly cookie), then asks its node for an admin
// connection token (GET /admin/api/token, again before each connection and before the
// token expires) and joins the room `roomcast:admin` over roomcast's own WebSocket with
// /roomcast.js. Every node of the cluster publishes its stats snapshot there every 2 s
// (roomcast.stats.Snapshot): the page keeps the newest of each node and draws the nodes,
// the busiest rooms and the activity plot from them. Its forms call the admin API
// (publish, disconnect, presence), always with the X-Roomcast-Admin header. Everything a
// client chose (room and user names) goes into the page as text, never as HTML.

import * as roomcast from "/roomcast.js";

const ADMIN_ROOM = "roomcast:admin";
const RESERVED = "roomcast:";
const HEADERS = Object.freeze({ "X-Roomcast-Admin": "1" });
const HISTORY = 8; // snapshots read when the room is joined (the room's history size)
const SILENT_AFTER = 7000; // ms without a snapshot: the node is shown as silent...
const FORGET_AFTER = 300000; // ...and dropped after this
const TOP = 10; // rooms shown
const WINDOW = 600; // seconds plotted
const PLOT = { width: 600, height: 120 };

const $ = (id) => document.getElementById(id);
const page = { nodes: new Map(), client: null, queued: false, ticker: null };

// ------------------------------------------------------------------------ the admin API

class ApiError extends Error {
  constructor(status, body, retry) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? null;
    this.retry = Number(retry) || null;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { ...HEADERS }, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) throw new ApiError(response.status, payload, response.headers.get("Retry-After"));
  return payload;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function showResult(id, ok, text) {
  $(id).dataset.state = ok ? "ok" : "error";
  $(id).textContent = text;
}

// ---------------------------------------------------------------------------- login

function showLogin(message = "") {
  stop();
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  setStatus("login", "Logged out");
  $("password").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const password = $("password").value;
  $("login-error").textContent = "";
  try {
    await api("/admin/login", { method: "POST", body: { password } });
  } catch (err) {
    $("password").select();
    $("login-error").textContent =
      err.status === 401 ? "Wrong password." :
      err.status === 429 ? `Too many attempts: try again in ${err.retry ?? "a few"} s.` : err.message;
    return;
  }
  $("password").value = "";
  start(null);
}

async function onLogout() {
  try {
    await api("/admin/logout", { method: "POST" });
  } finally {
    showLogin("");
  }
}

// --------------------------------------------------------------------- the live feed

/** Connect with `first` (a token already fetched, or null); stats start flowing. */
function start(first) {
  stop();
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  let cached = first;
  const token = async () => {
    if (cached) {
      const value = cached;
      cached = null;
      return value;
    }
    try {
      return (await api("/admin/api/token")).token;
    } catch (err) {
      if (err.status === 401 || err.status === 403) setTimeout(() => showLogin("Your login has expired."));
      throw err;
    }
  };
  setStatus("connecting", "Connecting…");
  const client = roomcast.connect(location.origin, { rooms: [ADMIN_ROOM], transport: "websocket", name: "admin", token });
  page.client = client;
  client.on("open", ({ session, node }) => setStatus("connected", `Live: this page is session ${session} on node ${node}`));
  client.on("close", ({ retry }) => retry && setStatus("reconnecting", "Connection lost: reconnecting…"));
  client.on("error", (err) => setStatus("error", `Error: ${err.message}`));
  client.on("subscribed", ({ room }) => {
    if (room !== ADMIN_ROOM) return;
    client.history(ADMIN_ROOM, { limit: HISTORY }).then(
      (messages) => messages.forEach((message) => ingest(message.data)),
      () => {}, // the live snapshots come anyway
    );
  });
  client.on("message", (message) => {
    if (message.room === ADMIN_ROOM) ingest(message.data);
  });
  page.ticker = setInterval(render, 1000); // ages and silent nodes
}

function stop() {
  page.client?.close();
  page.client = null;
  clearInterval(page.ticker);
}

function ingest(snapshot) {
  if (!snapshot || typeof snapshot.node !== "string" || typeof snapshot.ts !== "number") return;
  const known = page.nodes.get(snapshot.node);
  if (known && known.snapshot.ts >= snapshot.ts) return;
  page.nodes.set(snapshot.node, { snapshot, seen: Date.now() });
  if (!page.queued) {
    page.queued = true;
    setTimeout(() => {
      page.queued = false;
      render();
    }, 50);
  }
}

// ---------------------------------------------------------------------------- drawing

function render() {
  const now = Date.now();
  for (const [id, entry] of page.nodes) if (now - entry.seen > FORGET_AFTER) page.nodes.delete(id);
  const entries = [...page.nodes.values()].sort((a, b) => a.snapshot.node.localeCompare(b.snapshot.node));
  const live = entries.filter((entry) => now - entry.seen <= SILENT_AFTER);
  renderNodes(entries, now);
  renderRooms(live.map((entry) => entry.snapshot));
  renderPlots(entries.map((entry) => entry.snapshot));
}

const total = (connections) => Object.values(connections ?? {}).reduce((sum, n) => sum + n, 0);
const fixed = (value, digits = 1) => (Number(value) || 0).toFixed(digits);

function renderNodes(entries, now) {
  const rows = entries.map(({ snapshot: s, seen }) => {
    const silent = now - seen > SILENT_AFTER;
    const last = s.series?.[s.series.length - 1];
    const cell = (field, value, num = true) => el("td", { "data-field": field, class: num ? "num" : null }, value);
    return el("tr", { "data-node": s.node, "data-state": s.state, class: silent ? "silent" : null },
      cell("node", s.node, false),
      cell("state", silent ? "silent" : s.state, false),
      cell("broker", s.broker ? "up" : "down", false),
      cell("websocket", s.connections?.websocket ?? 0),
      cell("sse", s.connections?.sse ?? 0),
      cell("poll", s.connections?.poll ?? 0),
      cell("connections", total(s.connections)),
      cell("rooms", s.rooms),
      cell("rate", last ? fixed(last.messages) : "–"),
      cell("lag", `${fixed(s.loop_lag * 1000)} ms`),
      cell("seen", `${Math.round((now - seen) / 1000)} s ago`),
    );
  });
  $("nodes").tBodies[0].replaceChildren(...rows);
  const live = entries.filter((entry) => now - entry.seen <= SILENT_AFTER);
  const connections = live.reduce((sum, entry) => sum + total(entry.snapshot.connections), 0);
  $("summary").textContent = `${live.length} live, ${connections} connections`;
}

/** The rooms of every node: members added up, the rate the highest one (each node with
 *  members fans out every message of the room), the busiest first. */
function renderRooms(snapshots) {
  const rooms = new Map();
  for (const s of snapshots) {
    const seen = new Set();
    for (const room of [...(s.busiest ?? []), ...(s.largest ?? [])]) {
      if (seen.has(room.room) || room.room.startsWith(RESERVED)) continue;
      seen.add(room.room);
      const merged = rooms.get(room.room) ?? { room: room.room, members: 0, rate: 0, nodes: 0 };
      merged.members += room.members;
      merged.rate = Math.max(merged.rate, room.rate);
      merged.nodes += 1;
      rooms.set(room.room, merged);
    }
  }
  const top = [...rooms.values()]
    .sort((a, b) => b.rate - a.rate || b.members - a.members || a.room.localeCompare(b.room))
    .slice(0, TOP);
  const rows = top.map((room) => {
    const row = el("tr", { "data-room": room.room },
      el("td", { "data-field": "room" }, room.room),
      el("td", { "data-field": "members", class: "num" }, room.members),
      el("td", { "data-field": "rate", class: "num" }, fixed(room.rate, 2)),
      el("td", { "data-field": "nodes", class: "num" }, room.nodes),
    );
    row.addEventListener("click", () => {
      $("presence-room").value = room.room;
      showMembers(room.room);
    });
    return row;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty" }, "No room has members.")));
  $("rooms").tBodies[0].replaceChildren(...rows);
}

/** The cluster's samples: per time step (the nodes' sampling interval), each node's
 *  numbers added up, a node without a sample in a step counted at its previous one. */
function clusterSeries(snapshots) {
  const interval = Math.max(1, ...snapshots.map((s) => s.interval || 5));
  const perNode = snapshots.map((s) => {
    const steps = new Map();
    for (const sample of s.series ?? []) steps.set(Math.floor(sample.ts / interval), sample);
    return steps;
  });
  const steps = [...new Set(perNode.flatMap((m) => [...m.keys()]))].sort((a, b) => a - b);
  const last = perNode.map(() => null);
  const series = [];
  for (const step of steps) {
    let messages = 0;
    let connections = 0;
    perNode.forEach((samples, i) => {
      const sample = samples.get(step) ?? last[i];
      if (!sample) return;
      last[i] = sample;
      messages += sample.messages;
      connections += sample.connections;
    });
    series.push({ ts: step * interval, messages, connections });
  }
  return series;
}

function renderPlots(snapshots) {
  const series = clusterSeries(snapshots);
  const end = Date.now() / 1000;
  const recent = series.filter((sample) => sample.ts >= end - WINDOW);
  plot("plot-messages", "max-messages", recent, end, (s) => s.messages, (v) => `max ${fixed(v)}/s`);
  plot("plot-connections", "max-connections", recent, end, (s) => s.connections, (v) => `max ${v}`);
}

function plot(svgId, labelId, samples, end, value, label) {
  const top = Math.max(1, ...samples.map(value));
  const points = samples.map((sample) => {
    const x = PLOT.width * (1 - (end - sample.ts) / WINDOW);
    const y = PLOT.height * (1 - value(sample) / top) * 0.95 + PLOT.height * 0.05;
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  $(svgId).querySelector("polyline").setAttribute("points", points.join(" "));
  $(svgId).dataset.points = String(points.length);
  $(labelId).textContent = samples.length ? label(Math.max(0, ...samples.map(value))) : "no samples yet";
}

// ---------------------------------------------------------------------------- actions

async function onPublish(event) {
  event.preventDefault();
  const room = $("publish-room").value.trim();
  const text = $("publish-data").value;
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = text;
  }
  try {
    const ok = await api("/admin/api/publish", { method: "POST", body: { room, data } });
    showResult("publish-result", true, `Published to ${ok.room} at offset ${ok.offset}.`);
  } catch (err) {
    showResult("publish-result", false, `Not published: ${err.message}`);
  }
}

async function disconnect(session) {
  try {
    const ok = await api("/admin/api/disconnect", { method: "POST", body: { session } });
    showResult("disconnect-result", true, `Session ${ok.session} closed on node ${ok.node}.`);
  } catch (err) {
    showResult("disconnect-result", false, `Not disconnected: ${err.message}`);
  }
}

async function showMembers(room) {
  const body = $("members").tBodies[0];
  try {
    const { members } = await api(`/admin/api/presence?room=${encodeURIComponent(room)}`);
    body.replaceChildren(...members.map((member) => {
      const button = el("button", { type: "button", "data-testid": "member-disconnect" }, "Disconnect");
      button.addEventListener("click", () => {
        $("disconnect-session").value = member.session;
        disconnect(member.session);
      });
      return el("tr", { "data-session": member.session },
        el("td", { "data-field": "session" }, el("code", {}, member.session)),
        el("td", { "data-field": "user" }, member.user),
        el("td", {}, button),
      );
    }));
    showResult("presence-result", true, `${members.length} in ${room}`);
  } catch (err) {
    body.replaceChildren();
    showResult("presence-result", false, err.message);
  }
}

// ------------------------------------------------------------------------------ start

async function main() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", onLogout);
  $("publish-form").addEventListener("submit", onPublish);
  $("disconnect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    disconnect($("disconnect-session").value.trim());
  });
  $("presence-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showMembers($("presence-room").value.trim());
  });
  try {
    const { logged_in: loggedIn } = await api("/admin/api/session");
    if (loggedIn) start(null);
    else showLogin("");
  } catch (err) {
    setStatus("error", err.message);
  }
}

main();
