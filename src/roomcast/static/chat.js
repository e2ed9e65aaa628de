// roomcast chat page: a plain ES module, no dependencies, no build step.
//
// Speaks protocol v1 (docs/protocol.md) over ws(s)://<this host>/ws?name=<nick>.
// Every piece of user text reaches the DOM through textContent / text nodes only.
//
// Per room the page keeps a cursor (epoch, last offset shown). A message is appended only
// when it belongs to the room's current epoch and its offset is newer than the last one
// shown, so replays, history loads and live events can overlap without duplicates. The
// cursor lives in memory and in sessionStorage: a reconnect (or a reload of the tab)
// rejoins with "since" and the server replays what was missed.

const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;
const NICK_MAX = 64;
const HISTORY_LIMIT = 50;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15000;
const KEEPALIVE_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
const WELCOME_TIMEOUT_MS = 10000;
const MAX_SHOWN = 1000; // messages kept in the page per room; older ones are dropped
const NEAR_BOTTOM_PX = 80;
const KEYS = {
  nick: "roomcast:nick",
  rooms: "roomcast:rooms",
  active: "roomcast:active",
  cursors: "roomcast:cursors",
};

// ---------------------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

const ui = {
  app: $("app"),
  status: $("status"),
  statusText: $("status-text"),
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
  ws: null,
  gen: 0, // bumped on every connect/disconnect; stale callbacks compare and bail out
  connected: false, // the welcome arrived on the current socket
  session: null,
  attempt: 0,
  reconnectTimer: null,
  reconnectAt: 0,
  nextId: 1,
  pending: new Map(), // command id -> {resolve, reject}
  lastFrameAt: 0,
  pongTimer: null,
  rooms: new Map(),
  active: null,
  cursors: readStore(sessionStorage, KEYS.cursors, {}),
};

class ServerError extends Error {
  constructor(frame) {
    super(frame.message || frame.code || "error");
    this.code = frame.code;
  }
}

class Disconnected extends Error {
  constructor() {
    super("disconnected");
    this.code = "disconnected";
  }
}

// ---------------------------------------------------------------------------- connection

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.statusText.textContent = text;
  ui.reconnectNow.hidden = kind !== "reconnecting";
  ui.app.dataset.connection = kind;
  updateComposer();
}

function connect() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  if (!state.nick) return;
  if (state.ws) return;
  const gen = ++state.gen;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/ws?name=${encodeURIComponent(state.nick)}`;
  setStatus("connecting", state.attempt === 0 ? "Connecting…" : "Reconnecting…");
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (err) {
    console.warn("roomcast: cannot open the WebSocket", err);
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  setTimeout(() => {
    if (gen === state.gen && !state.connected) disconnected("no welcome in time");
  }, WELCOME_TIMEOUT_MS);
  ws.addEventListener("message", (event) => {
    if (gen !== state.gen) return;
    state.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      console.warn("roomcast: a frame that is not JSON", event.data);
      return;
    }
    if (frame && typeof frame === "object") handleFrame(frame);
  });
  ws.addEventListener("close", (event) => {
    if (gen !== state.gen) return;
    disconnected(`closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
  });
  // "error" is always followed by "close"; nothing to do here.
}

/** The current connection is gone (closed, failed or declared dead): clean up, retry. */
function disconnected(reason, { retry = true } = {}) {
  const ws = state.ws;
  if (!ws) return;
  console.info("roomcast: disconnected:", reason);
  state.ws = null;
  state.gen++;
  state.connected = false;
  clearTimeout(state.pongTimer);
  state.pongTimer = null;
  try {
    ws.close(1000);
  } catch {
    // already closed
  }
  const pending = [...state.pending.values()];
  state.pending.clear();
  for (const { reject } of pending) reject(new Disconnected());
  for (const room of state.rooms.values()) {
    room.joined = false;
    room.buffer = null;
    room.members.clear();
  }
  renderMembers();
  if (retry) scheduleReconnect();
  else setStatus("offline", "Offline");
}

function scheduleReconnect() {
  clearTimeout(state.reconnectTimer);
  // full-ish jitter: between half and all of the exponential step, capped
  const step = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = Math.round(step / 2 + Math.random() * (step / 2));
  state.attempt += 1;
  state.reconnectAt = Date.now() + delay;
  const offline = navigator.onLine === false;
  setStatus("reconnecting", offline ? "No network, waiting…" : "Reconnecting…");
  ui.status.title = `Next attempt in ${(delay / 1000).toFixed(1)} s`;
  state.reconnectTimer = setTimeout(() => {
    state.reconnectTimer = null;
    connect();
  }, delay);
}

function reconnectNow() {
  if (state.ws || !state.nick) return;
  state.attempt = 0;
  connect();
}

/** Replace the connection (the nickname changed): no backoff. */
function reconnectFresh() {
  if (state.ws) disconnected("nickname changed", { retry: false });
  state.attempt = 0;
  connect();
}

function send(frame) {
  if (!state.ws || !state.connected) return false;
  state.ws.send(JSON.stringify(frame));
  return true;
}

/** Send a command with an id; resolves with its ok, rejects with its error. */
function request(command) {
  return new Promise((resolve, reject) => {
    if (!state.ws || !state.connected) {
      reject(new Disconnected());
      return;
    }
    const id = state.nextId++;
    state.pending.set(id, { resolve, reject });
    send({ ...command, id });
  });
}

function handleFrame(frame) {
  switch (frame.type) {
    case "welcome":
      onWelcome(frame);
      break;
    case "message":
      onMessage(frame);
      break;
    case "joined":
      onPresenceEvent(frame, true);
      break;
    case "left":
      onPresenceEvent(frame, false);
      break;
    case "ok":
    case "error":
    case "pong":
      onReply(frame);
      break;
    default:
      break; // the protocol grows compatibly: ignore what we do not know
  }
}

function onReply(frame) {
  const waiter = frame.id === undefined || frame.id === null ? null : state.pending.get(frame.id);
  if (frame.type === "pong" && state.pongTimer !== null) {
    clearTimeout(state.pongTimer);
    state.pongTimer = null;
  }
  if (!waiter) {
    if (frame.type === "error") console.warn("roomcast: server error", frame);
    return;
  }
  state.pending.delete(frame.id);
  if (frame.type === "error") waiter.reject(new ServerError(frame));
  else waiter.resolve(frame);
}

function onWelcome(frame) {
  state.connected = true;
  state.session = frame.session;
  state.attempt = 0;
  ui.status.title = `Session ${frame.session} on node ${frame.node}`;
  setStatus("connected", "Connected");
  for (const room of state.rooms.values()) syncRoom(room);
}

/** The server pings us and the browser answers by itself; this also notices a dead
 * connection from our side (a laptop waking up, a proxy that dropped the socket). */
function keepalive() {
  if (!state.connected || state.pongTimer !== null) return;
  if (Date.now() - state.lastFrameAt < KEEPALIVE_MS) return;
  if (!send({ type: "ping" })) return;
  const gen = state.gen;
  state.pongTimer = setTimeout(() => {
    state.pongTimer = null;
    if (gen === state.gen) disconnected("no pong");
  }, PONG_TIMEOUT_MS);
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

/** Join room `room` on the current connection, resuming from its cursor if it has one. */
async function syncRoom(room) {
  const gen = state.gen;
  const resume = room.epoch !== null && (room.synced || room.last > 0);
  const command = { type: "join", room: room.name };
  if (resume) command.since = { epoch: room.epoch, offset: room.last };
  let ok;
  try {
    ok = await request(command); // replayed messages arrive (and render) before this ok
  } catch (err) {
    if (gen === state.gen && state.rooms.get(room.name) === room) {
      addNotice(room, `Could not join: ${err.message}`, "error");
    }
    return;
  }
  if (gen !== state.gen || state.rooms.get(room.name) !== room) return;
  room.joined = true;
  updateComposer();
  loadPresence(room, gen);

  if (resume && ok.recovered === true) {
    room.synced = true;
    saveCursor(room);
    if (!room.backfilled) await backfill(room, gen); // a reloaded tab: show earlier context too
    return;
  }
  if (resume) {
    if (ok.epoch !== room.epoch || ok.offset < room.last) {
      addNotice(room, "The server lost this room's history; showing its recent messages.", "warn");
      resetEpoch(room, ok.epoch);
    } else {
      addNotice(room, "Some messages could not be recovered; showing the most recent ones.", "warn");
    }
  } else if (ok.epoch !== room.epoch) {
    if (room.epoch !== null && room.shownCount > 0) {
      addNotice(room, "The server lost this room's history; showing its recent messages.", "warn");
    }
    resetEpoch(room, ok.epoch);
  }
  await loadRecent(room, gen);
}

function resetEpoch(room, epoch) {
  room.epoch = epoch;
  room.last = 0;
  room.first = null;
  room.synced = false;
  saveCursor(room);
}

/** Show the room's recent history, then whatever arrived live meanwhile (deduplicated). */
async function loadRecent(room, gen) {
  room.buffer = [];
  let reply = null;
  try {
    reply = await request({ type: "history", room: room.name, limit: HISTORY_LIMIT });
  } catch (err) {
    if (gen !== state.gen) return;
    addNotice(room, `Could not load history: ${err.message}`, "error");
  }
  if (gen !== state.gen || state.rooms.get(room.name) !== room) return;
  const buffered = room.buffer || [];
  room.buffer = null;
  const stick = isActive(room) && nearBottom();
  for (const message of reply ? reply.messages : []) appendMessage(room, message);
  for (const message of buffered) appendMessage(room, message);
  room.synced = true;
  room.backfilled = true;
  saveCursor(room);
  if (stick) scrollToBottom();
}

/** Prepend up to HISTORY_LIMIT messages older than the oldest shown (a reloaded tab). */
async function backfill(room, gen) {
  const before = room.first ?? room.last + 1;
  room.backfilled = true;
  if (before <= 1) return;
  let reply;
  try {
    reply = await request({ type: "history", room: room.name, limit: HISTORY_LIMIT, before });
  } catch {
    return;
  }
  if (gen !== state.gen || state.rooms.get(room.name) !== room) return;
  const box = ui.messages;
  const fromBottom = box.scrollHeight - box.scrollTop;
  for (let i = reply.messages.length - 1; i >= 0; i--) {
    const message = reply.messages[i];
    if (message.epoch !== room.epoch) continue;
    if (room.first !== null && message.offset >= room.first) continue;
    room.log.prepend(renderMessage(room, message));
    room.first = message.offset;
  }
  if (isActive(room)) box.scrollTop = box.scrollHeight - fromBottom;
}

async function loadPresence(room, gen) {
  let reply;
  try {
    reply = await request({ type: "presence", room: room.name });
  } catch {
    return;
  }
  if (gen !== state.gen || state.rooms.get(room.name) !== room) return;
  room.members = new Map(reply.members.map((m) => [m.session, m.user]));
  if (isActive(room)) renderMembers();
}

function onPresenceEvent(frame, joined) {
  const room = state.rooms.get(frame.room);
  if (!room || !frame.member) return;
  if (joined) room.members.set(frame.member.session, frame.member.user);
  else room.members.delete(frame.member.session);
  if (isActive(room)) renderMembers();
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
    if (state.connected) syncRoom(room);
  }
  if (activate) setActive(name);
  return room;
}

async function leaveRoom(name) {
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
  if (room.joined) {
    try {
      await request({ type: "leave", room: name });
    } catch {
      // not joined any more anyway
    }
  }
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
    await request({ type: "publish", room: room.name, data: { text } });
  } catch (err) {
    const why = err instanceof Disconnected
      ? "The connection dropped while sending: the message may not have been delivered."
      : `Not sent (${err.code || "error"}): ${err.message}`;
    addNotice(room, why, "error");
    if (!ui.input.value) {
      ui.input.value = text;
      autosize();
    }
  }
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
    if (!state.ws) setStatus("reconnecting", "No network, waiting…");
  });
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    const room = state.active === null ? null : state.rooms.get(state.active);
    if (room && room.unread) {
      room.unread = 0;
      renderRoomItem(room);
    }
    if (!state.ws) reconnectNow();
  });
  setInterval(keepalive, 5000);

  const saved = readStore(localStorage, KEYS.rooms, []);
  for (const name of Array.isArray(saved) ? saved : []) {
    if (typeof name === "string" && ROOM_RE.test(name)) addRoom(name, { activate: false });
  }
  const active = readStore(localStorage, KEYS.active, null);
  if (location.hash.length > 1) roomFromHash();
  else setActive(state.rooms.has(active) ? active : state.rooms.keys().next().value ?? null);
  renderRoomList();
  renderMe();
  if (state.nick) connect();
  else {
    setStatus("offline", "Not connected");
    openNickDialog();
  }
  // For tests and debugging: a read-only view of the page's state.
  window.roomcast = {
    get connected() { return state.connected; },
    get session() { return state.session; },
    cursor: (name) => {
      const room = state.rooms.get(name);
      return room ? { epoch: room.epoch, offset: room.last, joined: room.joined } : null;
    },
  };
}

start();
