// roomcast chat page: a plain ES module, no dependencies, no build step.
//
// It talks to the server through the browser client /roomcast.js, which picks the
// transport (WebSocket; else Server-Sent Events with POST /send; else long polling),
// reconnects with backoff and resumes every room from its position. `?transport=sse`,
// `?transport=poll` or `?transport=websocket` in the page's URL forces one; the badge next
// to the connection status shows the one in use.
// Every piece of user text reaches the DOM through textContent / text nodes only.
//
// Per room the page keeps a cursor (epoch, last offset shown). A message is appended only
// when it belongs to the room's current epoch and its offset is newer than the last one
// shown, so replays, history loads and live events can overlap without duplicates. The
// cursor lives in memory and in sessionStorage: a reloaded tab hands it to the client,
// which rejoins from it and gets what was missed replayed.

import * as roomcast from "/roomcast.js";

const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;
const NICK_MAX = 64;
const HISTORY_LIMIT = 50;
// Long polling misses the presence events that happen between two polls (they are not
// replayed like messages): reload the member list now and then, and soon after any
// presence change, when its counterpart may have fallen in such a gap.
const PRESENCE_REFRESH_MS = 20000;
const PRESENCE_SETTLE_MS = 1500;
const MAX_SHOWN = 1000; // messages kept in the page per room; older ones are dropped
const NEAR_BOTTOM_PX = 80;
const KEYS = {
  nick: "roomcast:nick",
  rooms: "roomcast:rooms",
  active: "roomcast:active",
  cursors: "roomcast:cursors",
};
// The badge's text and its tooltip, per transport.
const TRANSPORTS = {
  websocket: ["WS", "WebSocket"],
  sse: ["SSE", "Server-Sent Events and POST /send"],
  poll: ["Poll", "long polling and POST /send"],
};
// Errors that say the connection went away, not that the server refused.
const QUIET = new Set(["disconnected", "closed", "left"]);

// ---------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

const ui = {
  app: $("app"),
  status: $("status"),
  statusText: $("status-text"),
  transport: $("transport"),
  reconnectNow: $("reconnect-now"),
  me: $("me"),
  meName: $("me-name"),
  meAvatar: $("me-avatar"),
  roomsToggle: $("rooms-toggle"),
  sidebar: $("sidebar"),
  scrim: $("scrim"),
  joinForm: $("join-form"),
  roomInput: $("room-input"),
  joinError: $("join-error"),
  rooms: $("rooms"),
  noRooms: $("no-rooms"),
  roomTitle: $("room-title"),
  membersToggle: $("members-toggle"),
  memberCount: $("member-count"),
  messages: $("messages"),
  emptyState: $("empty-state"),
  composer: $("composer"),
  input: $("message-input"),
  send: $("send"),
  members: $("members"),
  nickDialog: $("nick-dialog"),
  nickForm: $("nick-form"),
  nick: $("nick"),
  nickError: $("nick-error"),
  nickCancel: $("nick-cancel"),
};

/** Create an element; string children become text nodes (never parsed as HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

function readStore(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

function writeStore(storage, key, value) {
  try {
    if (value === undefined) storage.removeItem(key);
    else storage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or disabled: the page still works, it just forgets on reload
  }
}

function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function initial(text) {
  const first = [...text.trim()][0];
  return first ? first.toUpperCase() : "?";
}

function paintAvatar(node, name) {
  node.textContent = initial(name);
  node.style.setProperty("--hue", String(hue(name)));
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function formatTime(ts) {
  const date = new Date(ts);
  const today = new Date();
  const sameDay = date.toDateString() === today.toDateString();
  return (sameDay ? timeFormat : dateTimeFormat).format(date);
}

function messageText(data) {
  if (data !== null && typeof data === "object" && typeof data.text === "string") {
    return { text: data.text, raw: false };
  }
  if (typeof data === "string") return { text: data, raw: false };
  return { text: JSON.stringify(data), raw: true };
}

function validNick(value) {
  const length = [...value].length;
  return length >= 1 && length <= NICK_MAX;
}

// ---------------------------------------------------------------------------- state

class Room {
  constructor(name) {
    this.name = name;
    this.epoch = null; // the stream the cursor refers to
    this.last = 0; // newest offset shown (or processed) in that epoch
    this.first = null; // oldest offset shown in that epoch on this page
    this.synced = false; // the cursor is trustworthy: recent history was loaded or recovered
    this.backfilled = false; // older context was shown on this page
    this.joined = false; // joined on the current connection
    this.buffer = null; // live messages held back while a history load is in flight
    this.members = new Map(); // session id -> user name
    this.presenceLog = null; // presence events that came while the member list loads
    this.settleTimer = null; // long polling: reload the member list after a change
    this.unread = 0;
    this.log = el("ol", { class: "log", "data-room": name });
    this.item = null;
    this.badge = null;
  }

  get shownCount() {
    return this.log.getElementsByClassName("msg").length;
  }

  /** Keep at most MAX_SHOWN messages in the page: drop the oldest (and notices before them). */
  trim() {
    const shown = this.log.getElementsByClassName("msg");
    let excess = shown.length - MAX_SHOWN;
    while (excess > 0 && this.log.firstChild) {
      if (this.log.firstChild.classList.contains("msg")) excess -= 1;
      this.log.firstChild.remove();
    }
    const oldest = shown[0];
    if (oldest && oldest.dataset.epoch === this.epoch) this.first = Number(oldest.dataset.offset);
  }
}


const state = {
  nick: readStore(localStorage, KEYS.nick, null),
  rc: null, // the roomcast client, once there is a nickname
  connected: false, // the client is open
  everConnected: false,
  session: null,
  transport: null,
  rooms: new Map(),
  active: null,
  cursors: readStore(sessionStorage, KEYS.cursors, {}),
};

/** The transport forced by the page's URL (`?transport=sse`), else "auto". */
function forcedTransport() {
  const value = (new URLSearchParams(location.search).get("transport") || "").toLowerCase();
  return ["websocket", "ws", "sse", "poll"].includes(value) ? value : "auto";
}

// ---------------------------------------------------------------------------- connection

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.statusText.textContent = text;
  ui.reconnectNow.hidden = kind !== "reconnecting";
  ui.app.dataset.connection = kind;
  updateComposer();
}

function showTransport(name) {
  state.transport = name;
  const label = TRANSPORTS[name];
  ui.transport.hidden = !label;
  ui.transport.dataset.transport = name ?? "";
  ui.transport.textContent = label ? label[0] : "";
  ui.transport.title = label ? `Connected over ${label[1]}` : "";
}

/** Start a client for the current nickname and join every room, each from its cursor. */
function connect() {
  if (!state.nick || state.rc) return;
  const rc = roomcast.connect(location.origin, { name: state.nick, transport: forcedTransport() });
  state.rc = rc;
  // Once a client is replaced (a new nickname), its events are ignored.
  const on = (event, handler) => rc.on(event, (value) => {
    if (state.rc === rc) handler(value);
  });
  on("transport", ({ transport }) => showTransport(transport));
  on("connecting", () => setStatus("connecting", state.everConnected ? "Reconnecting…" : "Connecting…"));
  on("reconnecting", ({ delay }) => {
    setStatus("reconnecting", navigator.onLine === false ? "No network, waiting…" : "Reconnecting…");
    ui.status.title = `Next attempt in ${(delay / 1000).toFixed(1)} s`;
  });
  on("open", onOpen);
  on("close", ({ retry }) => connectionLost(retry));
  on("subscribed", onSubscribed);
  on("lost", onLost);
  on("message", onMessage);
  on("joined", (frame) => onPresenceEvent(frame, true));
  on("left", (frame) => onPresenceEvent(frame, false));
  on("error", (err) => console.warn("roomcast:", err));
  setStatus("connecting", state.everConnected ? "Reconnecting…" : "Connecting…");
  for (const room of state.rooms.values()) joinRoom(room);
}

function onOpen({ transport, session, node }) {
  state.connected = true;
  state.everConnected = true;
  state.session = session;
  showTransport(transport);
  const via = `over ${TRANSPORTS[transport]?.[1] ?? transport}`;
  ui.status.title = session ? `Session ${session} on node ${node} ${via}` : `Connected ${via}`;
  setStatus("connected", "Connected");
}

/** The connection is gone: nothing is joined until the client is back. */
function connectionLost(retry) {
  state.connected = false;
  state.session = null;
  for (const room of state.rooms.values()) {
    room.joined = false;
    room.members.clear();
  }
  renderMembers();
  if (retry) setStatus("reconnecting", navigator.onLine === false ? "No network, waiting…" : "Reconnecting…");
  else setStatus("offline", "Offline");
}

/** Retry now instead of waiting for the backoff (the button, the network came back). */
function reconnectNow() {
  if (state.rc) state.rc.reconnect();
  else connect();
}

/** Replace the client (the nickname changed); the new one resumes from the cursors. */
function reconnectFresh() {
  const old = state.rc;
  state.rc = null;
  if (old) {
    old.close();
    connectionLost(false);
  }
  connect();
}

// ---------------------------------------------------------------------------- rooms

function restoreCursor(room) {
  const cursor = state.cursors[room.name];
  if (cursor && typeof cursor.epoch === "string" && Number.isInteger(cursor.offset)) {
    room.epoch = cursor.epoch;
    room.last = cursor.offset;
    room.synced = true;
  }
}

function saveCursor(room) {
  if (room.epoch !== null && room.synced) {
    state.cursors[room.name] = { epoch: room.epoch, offset: room.last };
  } else {
    delete state.cursors[room.name];
  }
  writeStore(sessionStorage, KEYS.cursors, state.cursors);
}

function saveRooms() {
  writeStore(localStorage, KEYS.rooms, [...state.rooms.keys()]);
}


/** Join `room` through the client, from the page's cursor if it has one (a reloaded tab). */
function joinRoom(room) {
  const resume = room.epoch !== null && (room.synced || room.last > 0);
  const since = resume ? { epoch: room.epoch, offset: room.last } : null;
  state.rc.join(room.name, { since }).catch((err) => {
    if (!QUIET.has(err.code) && state.rooms.get(room.name) === room) {
      addNotice(room, `Could not join: ${err.message}`, "error");
    }
  });
}

/** `room` is joined on the current connection (again, after a reconnect). */
function onSubscribed({ room: name, epoch, recovered }) {
  const room = state.rooms.get(name);
  if (!room) return;
  room.joined = true;
  updateComposer();
  loadPresence(room);
  if (room.buffer) return; // a history load is in flight: it settles the cursor
  if (recovered === true) {
    // Resumed from the cursor: what was missed was replayed before this.
    room.synced = true;
    saveCursor(room);
    if (!room.backfilled) backfill(room); // a reloaded tab: show earlier context too
    return;
  }
  if (recovered === false) return; // `lost` came first and reloads the room
  // The first join of this room, without a cursor: show its recent history.
  if (epoch !== room.epoch) {
    if (room.epoch !== null && room.shownCount > 0) {
      addNotice(room, "The server lost this room's history; showing its recent messages.", "warn");
    }
    resetEpoch(room, epoch);
  }
  loadRecent(room);
}

/** Messages of `room` after the cursor could not be recovered: say so, show the newest. */
function onLost({ room: name, epoch, offset }) {
  const room = state.rooms.get(name);
  if (!room) return;
  if (epoch !== room.epoch || offset < room.last) {
    addNotice(room, "The server lost this room's history; showing its recent messages.", "warn");
    resetEpoch(room, epoch);
  } else {
    addNotice(room, "Some messages could not be recovered; showing the most recent ones.", "warn");
  }
  loadRecent(room);
}

function resetEpoch(room, epoch) {
  room.epoch = epoch;
  room.last = 0;
  room.first = null;
  room.synced = false;
  saveCursor(room);
}

/** Show the room's recent history, then whatever arrived live meanwhile (deduplicated).
 *  While disconnected the client keeps the request until it is back. */
async function loadRecent(room) {
  if (room.buffer) return; // one at a time
  room.buffer = [];
  room.backfilled = true;
  let messages = null;
  try {
    messages = await state.rc.history(room.name, { limit: HISTORY_LIMIT });
  } catch (err) {
    if (!QUIET.has(err.code) && state.rooms.get(room.name) === room) {
      addNotice(room, `Could not load history: ${err.message}`, "error");
    }
  }
  const buffered = room.buffer || [];
  room.buffer = null;
  if (state.rooms.get(room.name) !== room) return;
  const stick = isActive(room) && nearBottom();
  for (const message of messages ?? []) appendMessage(room, message);
  for (const message of buffered) appendMessage(room, message);
  if (messages) room.synced = true;
  else room.backfilled = false; // the next join shows the context instead
  saveCursor(room);
  if (stick) scrollToBottom();
}

/** Prepend up to HISTORY_LIMIT messages older than the oldest shown (a reloaded tab). */
async function backfill(room) {
  const pos = state.rc?.position(room.name);
  const newest = pos && pos.epoch === room.epoch ? Math.max(pos.offset, room.last) : room.last;
  const before = room.first ?? newest + 1;
  room.backfilled = true;
  if (before <= 1) return;
  let messages;
  try {
    messages = await state.rc.history(room.name, { limit: HISTORY_LIMIT, before });
  } catch {
    return;
  }
  if (state.rooms.get(room.name) !== room) return;
  const box = ui.messages;
  const fromBottom = box.scrollHeight - box.scrollTop;
  for (let i = messages.length - 1; i >= 0; i--) {
    const message = messages[i];
    if (message.epoch !== room.epoch) continue;
    if (room.first !== null && message.offset >= room.first) continue;
    room.log.prepend(renderMessage(room, message));
    room.first = message.offset;
    if (message.offset > room.last) room.last = message.offset;
  }
  saveCursor(room);
  if (isActive(room)) box.scrollTop = box.scrollHeight - fromBottom;
}

/** Load the member list; presence events that arrive meanwhile are applied after it. */
async function loadPresence(room) {
  if (room.presenceLog) return; // a load is in flight
  room.presenceLog = [];
  let members = null;
  try {
    members = await state.rc.presence(room.name);
  } catch {
    // disconnected or not joined any more: the next join loads it again
  }
  const log = room.presenceLog;
  room.presenceLog = null;
  if (!members || state.rooms.get(room.name) !== room) return;
  room.members = new Map(members.map((m) => [m.session, m.user]));
  for (const [frame, joined] of log) applyPresence(room, frame, joined);
  if (isActive(room)) renderMembers();
}

function onPresenceEvent(frame, joined) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.member) return;
  if (room.presenceLog) room.presenceLog.push([frame, joined]);
  applyPresence(room, frame, joined);
  if (isActive(room)) renderMembers();
  if (state.transport === "poll") {
    clearTimeout(room.settleTimer);
    room.settleTimer = setTimeout(() => {
      if (room.joined && state.rooms.get(room.name) === room) loadPresence(room);
    }, PRESENCE_SETTLE_MS);
  }
}

function applyPresence(room, frame, joined) {
  if (joined) room.members.set(frame.member.session, frame.member.user);
  else room.members.delete(frame.member.session);
}

function onMessage(frame) {
  const room = state.rooms.get(frame.room);
  if (!room) return;
  if (room.buffer) {
    room.buffer.push(frame);
    return;
  }
  const active = isActive(room);
  const stick = active && (nearBottom() || frame.from?.user === state.nick);
  if (appendMessage(room, frame)) {
    if (stick) scrollToBottom();
    if (!active || document.hidden) bumpUnread(room);
  }
}

/** Append `message` unless it is not newer than the last one shown. Returns true if shown. */
function appendMessage(room, message) {
  if (typeof message.offset !== "number" || typeof message.epoch !== "string") return false;
  if (message.epoch !== room.epoch) {
    // A new stream while we are joined: the server lost the room's history.
    if (room.epoch !== null) {
      addNotice(room, "The server lost this room's history.", "warn");
    }
    resetEpoch(room, message.epoch);
    room.synced = true;
  }
  if (message.offset <= room.last) return false;
  room.last = message.offset;
  if (room.first === null) room.first = message.offset;
  room.log.append(renderMessage(room, message));
  if (room.log.childElementCount > MAX_SHOWN) room.trim();
  saveCursor(room);
  return true;
}

function renderMessage(room, message) {
  const user = message.from && typeof message.from.user === "string" ? message.from.user : null;
  const mine = user !== null && user === state.nick;
  const { text, raw } = messageText(message.data);
  const classes = ["msg"];
  if (mine) classes.push("mine");
  if (user === null) classes.push("system");
  const item = el("li", {
    class: classes.join(" "),
    "data-testid": "message",
    "data-room": room.name,
    "data-epoch": message.epoch,
    "data-offset": message.offset,
  });
  const avatar = el("span", { class: "avatar", "aria-hidden": "true" });
  paintAvatar(avatar, user ?? "#");
  const time = el("time", { class: "msg-time", "data-testid": "message-time" });
  if (typeof message.ts === "number") {
    const date = new Date(message.ts);
    time.dateTime = date.toISOString();
    time.title = fullFormat.format(date);
    time.textContent = formatTime(message.ts);
  }
  const meta = el(
    "div",
    { class: "msg-meta" },
    el("span", { class: "msg-from", "data-testid": "message-from" }, user ?? "server"),
    time,
  );
  const body = el(
    "div",
    { class: raw ? "msg-text raw" : "msg-text", "data-testid": "message-text" },
    text,
  );
  item.append(avatar, el("div", { class: "msg-body" }, meta, body));
  return item;
}

function addNotice(room, text, kind = "info") {
  const stick = isActive(room) && nearBottom();
  room.log.append(el("li", { class: `notice ${kind}`, "data-testid": "notice", role: "note" }, text));
  if (stick) scrollToBottom();
}


function addRoom(name, { activate = true } = {}) {
  let room = state.rooms.get(name);
  if (!room) {
    room = new Room(name);
    restoreCursor(room);
    state.rooms.set(name, room);
    renderRoomItem(room);
    saveRooms();
    if (state.rc) joinRoom(room);
  }
  if (activate) setActive(name);
  return room;
}

function leaveRoom(name) {
  const room = state.rooms.get(name);
  if (!room) return;
  state.rooms.delete(name);
  delete state.cursors[name];
  writeStore(sessionStorage, KEYS.cursors, state.cursors);
  saveRooms();
  room.item?.remove();
  if (state.active === name) {
    const next = state.rooms.keys().next();
    setActive(next.done ? null : next.value);
  }
  renderRoomList();
  state.rc?.leave(name).catch(() => {}); // not joined any more anyway
}

function isActive(room) {
  return state.active === room.name;
}

function setActive(name) {
  const room = name === null ? null : state.rooms.get(name) ?? null;
  state.active = room ? room.name : null;
  writeStore(localStorage, KEYS.active, state.active ?? undefined);
  if (room) {
    ui.messages.replaceChildren(room.log);
    ui.roomTitle.textContent = `#${room.name}`;
    document.title = `#${room.name} · roomcast`;
    if (location.hash.slice(1) !== room.name) history.replaceState(null, "", `#${room.name}`);
    room.unread = 0;
    scrollToBottom();
  } else {
    ui.messages.replaceChildren(ui.emptyState);
    ui.roomTitle.textContent = "No room selected";
    document.title = "roomcast";
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }
  ui.app.classList.toggle("no-room", !room);
  renderRoomList();
  renderMembers();
  updateComposer();
  closeDrawers();
}

function bumpUnread(room) {
  if (isActive(room) && !document.hidden) return;
  room.unread += 1;
  renderRoomItem(room);
}

// ---------------------------------------------------------------------------- rendering

function renderRoomItem(room) {
  if (!room.item) {
    const open = el("button", { class: "room-open", type: "button", title: `Open #${room.name}` });
    open.append(
      el("span", { class: "room-hash", "aria-hidden": "true" }, "#"),
      el("span", { class: "room-name" }, room.name),
    );
    room.badge = el("span", { class: "badge", "data-testid": "unread" });
    open.append(room.badge);
    open.addEventListener("click", () => setActive(room.name));
    const close = el("button", {
      class: "room-leave",
      type: "button",
      title: `Leave #${room.name}`,
      "aria-label": `Leave ${room.name}`,
      "data-testid": "leave",
    }, "×");
    close.addEventListener("click", () => leaveRoom(room.name));
    room.item = el("li", { class: "room", "data-testid": "room-item", "data-room": room.name }, open, close);
    ui.rooms.append(room.item);
  }
  room.badge.textContent = room.unread > 99 ? "99+" : String(room.unread);
  room.badge.hidden = room.unread === 0;
  room.item.classList.toggle("active", isActive(room));
  if (isActive(room)) room.item.firstChild.setAttribute("aria-current", "true");
  else room.item.firstChild.removeAttribute("aria-current");
}

function renderRoomList() {
  for (const room of state.rooms.values()) renderRoomItem(room);
  ui.noRooms.hidden = state.rooms.size > 0;
}

function renderMembers() {
  const room = state.active === null ? null : state.rooms.get(state.active);
  const byUser = new Map();
  if (room) for (const user of room.members.values()) byUser.set(user, (byUser.get(user) || 0) + 1);
  const users = [...byUser.keys()].sort((a, b) => {
    if (a === state.nick) return -1;
    if (b === state.nick) return 1;
    return a.localeCompare(b);
  });
  const items = users.map((user) => {
    const avatar = el("span", { class: "avatar small", "aria-hidden": "true" });
    paintAvatar(avatar, user);
    const item = el(
      "li",
      { class: "member", "data-testid": "member", "data-user": user },
      avatar,
      el("span", { class: "member-name" }, user),
    );
    const count = byUser.get(user);
    if (count > 1) item.append(el("span", { class: "member-count", title: `${count} connections` }, `×${count}`));
    if (user === state.nick) item.append(el("span", { class: "you" }, "you"));
    return item;
  });
  if (room && !room.joined) {
    items.push(el("li", { class: "members-empty" }, state.connected ? "Joining…" : "Not connected"));
  }
  ui.members.replaceChildren(...items);
  ui.memberCount.textContent = String(users.length);
}

function updateComposer() {
  const room = state.active === null ? null : state.rooms.get(state.active);
  const usable = Boolean(room && room.joined && state.connected);
  ui.input.disabled = !room;
  ui.send.disabled = !usable;
  ui.input.placeholder = !room
    ? "Join a room to chat"
    : usable
      ? `Message #${room.name}`
      : "Waiting for the connection…";
}

function nearBottom() {
  const box = ui.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
}

function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

function renderMe() {
  ui.meName.textContent = state.nick ?? "Pick a nickname";
  paintAvatar(ui.meAvatar, state.nick ?? "?");
}

function closeDrawers() {
  ui.app.classList.remove("show-rooms", "show-members");
  ui.roomsToggle.setAttribute("aria-expanded", "false");
  ui.membersToggle.setAttribute("aria-expanded", "false");
  ui.scrim.hidden = true;
}

function toggleDrawer(cls, button) {
  const open = !ui.app.classList.contains(cls);
  closeDrawers();
  if (open) {
    ui.app.classList.add(cls);
    button.setAttribute("aria-expanded", "true");
    ui.scrim.hidden = false;
  }
}

// ---------------------------------------------------------------------------- actions

async function sendMessage() {
  const room = state.active === null ? null : state.rooms.get(state.active);
  const text = ui.input.value.trim();
  if (!room || !text) return;
  if (!room.joined || !state.connected) return;
  ui.input.value = "";
  autosize();
  try {
    await state.rc.publish(room.name, { text });
  } catch (err) {
    const why = err.code === "disconnected"
      ? "The connection dropped while sending: the message may not have been delivered."
      : `Not sent (${err.code || "error"}): ${err.message}`;
    addNotice(room, why, "error");
    if (!ui.input.value) {
      ui.input.value = text;
      autosize();
    }
  }
}

/** Long polling hears presence events only while a poll is waiting: refresh now and then. */
function refreshPresence() {
  if (!state.connected || state.transport !== "poll" || document.hidden) return;
  const room = state.active === null ? null : state.rooms.get(state.active);
  if (room && room.joined) loadPresence(room);
}

function joinFromInput() {
  const name = ui.roomInput.value.trim().replace(/^#/, "");
  if (!ROOM_RE.test(name)) {
    ui.joinError.textContent = "Room names are 1-128 characters: letters, digits and _ . : @ -";
    ui.joinError.hidden = false;
    return;
  }
  ui.joinError.hidden = true;
  ui.roomInput.value = "";
  addRoom(name);
  ui.input.focus();
}

function roomFromHash() {
  let name;
  try {
    name = decodeURIComponent(location.hash.slice(1));
  } catch {
    return;
  }
  if (!name) return;
  if (ROOM_RE.test(name)) {
    addRoom(name);
  } else {
    ui.joinError.textContent = `"${name}" is not a valid room name.`;
    ui.joinError.hidden = false;
  }
}

function openNickDialog() {
  ui.nick.value = state.nick ?? "";
  ui.nickError.hidden = true;
  ui.nickCancel.hidden = !state.nick;
  if (!ui.nickDialog.open) ui.nickDialog.showModal();
  ui.nick.focus();
  ui.nick.select();
}

function saveNick() {
  const value = ui.nick.value.trim();
  if (!validNick(value)) {
    ui.nickError.textContent = `A nickname is 1-${NICK_MAX} characters.`;
    ui.nickError.hidden = false;
    return;
  }
  ui.nickDialog.close();
  if (value === state.nick) return;
  state.nick = value;
  writeStore(localStorage, KEYS.nick, value);
  renderMe();
  renderMembers();
  reconnectFresh();
}

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
}

// ---------------------------------------------------------------------------- wiring

function start() {
  ui.joinForm.addEventListener("submit", (event) => {
    event.preventDefault();
    joinFromInput();
  });
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  ui.input.addEventListener("input", autosize);
  ui.nickForm.addEventListener("submit", (event) => {
    event.preventDefault();
    saveNick();
  });
  ui.nickCancel.addEventListener("click", () => ui.nickDialog.close());
  ui.nickDialog.addEventListener("cancel", (event) => {
    if (!state.nick) event.preventDefault(); // a nickname is needed to connect
  });
  ui.me.addEventListener("click", openNickDialog);
  ui.reconnectNow.addEventListener("click", reconnectNow);
  ui.roomsToggle.addEventListener("click", () => toggleDrawer("show-rooms", ui.roomsToggle));
  ui.membersToggle.addEventListener("click", () => toggleDrawer("show-members", ui.membersToggle));
  ui.scrim.addEventListener("click", closeDrawers);
  window.addEventListener("hashchange", roomFromHash);
  window.addEventListener("online", reconnectNow);
  window.addEventListener("offline", () => {
    if (!state.connected) setStatus("reconnecting", "No network, waiting…");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    const room = state.active === null ? null : state.rooms.get(state.active);
    if (room && room.unread) {
      room.unread = 0;
      renderRoomItem(room);
    }
    if (!state.connected) reconnectNow();
  });
  setInterval(refreshPresence, PRESENCE_REFRESH_MS);
  // Leaving the page closes the client (a long-poll client says it left at once); a page
  // restored from the back/forward cache connects again.
  window.addEventListener("pagehide", () => {
    const rc = state.rc;
    state.rc = null;
    rc?.close();
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) reconnectFresh();
  });

  const saved = readStore(localStorage, KEYS.rooms, []);
  for (const name of Array.isArray(saved) ? saved : []) {
    if (typeof name === "string" && ROOM_RE.test(name)) addRoom(name, { activate: false });
  }
  const active = readStore(localStorage, KEYS.active, null);
  if (location.hash.length > 1) roomFromHash();
  else setActive(state.rooms.has(active) ? active : state.rooms.keys().next().value ?? null);
  renderRoomList();
  renderMe();
  showTransport(null);
  if (state.nick) connect();
  else {
    setStatus("offline", "Not connected");
    openNickDialog();
  }
  // For tests and debugging: a read-only view of the page's state.
  window.roomcast = {
    get connected() { return state.connected; },
    get session() { return state.session; },
    get transport() { return state.transport; },
    cursor: (name) => {
      const room = state.rooms.get(name);
      return room ? { epoch: room.epoch, offset: room.last, joined: room.joined } : null;
    },
  };
}

start();
