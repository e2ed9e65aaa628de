// roomcast.js: the browser client of a roomcast server. One ES module, no dependencies,
// no build step; the server serves it at GET /roomcast.js.
//
//   import * as roomcast from "/roomcast.js";
//   const rc = roomcast.connect(location.origin, { rooms: ["lobby"], name: "alice" });
//   rc.on("message", (m) => console.log(m.room, m.offset, m.data));
//   rc.on("open", ({ transport }) => console.log("connected over", transport));
//   const ok = await rc.publish("lobby", { text: "hi" });   // ok.offset
//
// Transports (docs/transports.md): WebSocket first (/ws); if it is blocked, Server-Sent
// Events (GET /sse) with commands over POST /send; if that is blocked too, long polling
// (GET /poll) with POST /send. A transport counts as blocked when it fails before its
// first event (a WebSocket that never opens, or closes before `welcome`, within
// `connectTimeout`; an event stream or a first poll that does not answer in time). Once a
// transport has delivered a first event it is kept: later failures (a restarting server)
// are retried on it, with jittered exponential backoff.
//
// Exactly once, in order: the client keeps a position {epoch, offset} per room, drops any
// message at or before it, and resumes from it on every reconnect: a WebSocket `join`
// with `since`, or the `cursor` of a stream or a poll. When the server cannot replay what
// was missed (its history was reset or no longer reaches back), the room is reported with
// a `lost` event and the client goes on from the server's position.
//
// Connection tokens (docs/security.md): `token` is a JWT of the application's backend, or
// a function (it may be async) that fetches a new one:
//
//   const rc = roomcast.connect(url, { token: () => fetch("/my-token").then((r) => r.text()) });
//
// A WebSocket carries it as `?token=`, SSE and long polling in `Authorization: Bearer`
// (their session token carries it from then on). With a function, the client asks it for
// a token on every connection and reconnection, and renews the token shortly before it
// expires (a tenth of its remaining life, at least 5 s before its `exp`, read from the
// JWT without checking it): a `refresh` command on WebSocket, a `refresh` over POST /send
// on SSE and long polling (whose new session token the next request uses; an event stream
// is reopened with it, from its cursor). `rc.refresh(token?)` does the same at any time.
// A refused token (HTTP 401 `unauthorized` or `token_expired`, an `error` event
// `token_expired`, a WebSocket closed with 4003) is an `error` event with that code; the
// client then reconnects with backoff on the same transport (a refused token is not a
// blocked transport), with a new token from the function if there is one. A WebSocket
// refused before it opens does not tell the page why: the client asks the same URL over
// plain HTTP to see whether the answer is a 401.
//
// Events (rc.on(name, fn) / rc.off(name, fn)):
//   open         {transport, session, node}   connected (again)
//   close        {transport, reason, retry}   the connection dropped (retry: it reconnects)
//   connecting   {transport, attempt}         a connection attempt starts
//   reconnecting {transport, delay, attempt}  the next attempt comes in `delay` ms
//   transport    {transport, previous}        the transport in use changed
//   subscribed   {room, epoch, offset, recovered}  a room is joined on the current connection
//                (recovered: true = resumed with nothing missed; false = see `lost`;
//                undefined = the first join of the room, without a position)
//   message      the `message` event of the protocol (docs/protocol.md), never twice
//   joined, left the presence events of the protocol
//   lost         {room, epoch, offset, since, reason}  messages of `room` after `since` could not be
//                recovered; the client goes on from {epoch, offset}
//   error        a RoomcastError the client could not hand to anybody: a refused join, a
//                refused token (`unauthorized`, `token_expired`), a token function that
//                failed (`token_error`), a refresh that failed

const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

/** The transports, in the order they are tried. */
export const TRANSPORTS = Object.freeze(["websocket", "sse", "poll"]);

const ALIASES = { auto: "auto", websocket: "websocket", ws: "websocket", sse: "sse", poll: "poll", longpoll: "poll" };

const DEFAULTS = Object.freeze({
  connectTimeout: 6000, // ms a transport gets to deliver its first event
  backoffBase: 500, // ms, the first reconnect delay step
  backoffMax: 5000, // ms, the largest step
  keepalive: 20000, // WebSocket: send a ping after this long without a frame...
  pongTimeout: 10000, // ...and give up on the connection if nothing answers it
  pollDeadline: 45000, // abort a long poll after this (the server answers within --poll-timeout)
});

/** An error of the server (its `code` and `message`) or of the client (`disconnected`,
 *  `closed`, `left`, `not_joined`, `invalid_room`, `token_error`). */
export class RoomcastError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = "RoomcastError";
    this.code = code;
    this.frame = frame;
  }
}

const disconnected = () =>
  new RoomcastError("disconnected", "the connection dropped before the reply came");

// ---------------------------------------------------------------------------- tokens

/** The codes of a refused token: reconnect with a new one, on the same transport. */
const AUTH_CODES = new Set(["unauthorized", "token_expired", "token_error"]);
const MIN_AHEAD = 5; // seconds: refresh at least this long before the token expires
const MIN_REFRESH_DELAY = 1000; // ms: a token about to expire is not renewed in a loop

function isAuthError(err) {
  return err instanceof RoomcastError && AUTH_CODES.has(err.code);
}

/** The `exp` of a JWT (unix seconds; 0 if it has none or cannot be read). The client does
 *  not verify the token: the server does. */
function tokenExpires(token) {
  try {
    const part = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
    const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes))?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp : 0;
  } catch {
    return 0;
  }
}

/** Milliseconds to wait before renewing `token`: a tenth of its remaining life before it
 *  expires, at least MIN_AHEAD seconds before; null if it never expires. */
function refreshDelay(token) {
  const expires = tokenExpires(token);
  if (!expires) return null;
  const left = expires - Date.now() / 1000;
  return Math.max(MIN_REFRESH_DELAY, (left - Math.max(MIN_AHEAD, left / 10)) * 1000);
}

// ---------------------------------------------------------------------------- helpers

function checkRoom(room) {
  if (typeof room !== "string" || !ROOM_RE.test(room)) {
    throw new RoomcastError("invalid_room", "room names are 1-128 characters of A-Za-z0-9_.:@-");
  }
}

function isPosition(value) {
  return Boolean(value) && typeof value.epoch === "string" && Number.isInteger(value.offset) && value.offset >= 0;
}

/** Where the endpoints are, from a base URL: `https://host[/prefix]` or `wss://host/ws`. */
function endpoints(url) {
  const base = new URL(url ?? globalThis.location.origin, globalThis.location?.href);
  if (base.protocol === "ws:") base.protocol = "http:";
  if (base.protocol === "wss:") base.protocol = "https:";
  const path = base.pathname.replace(/\/+$/, "").replace(/\/(ws|sse|poll|send)$/, "");
  const http = base.origin + path;
  return {
    ws: http.replace(/^http/, "ws") + "/ws",
    probe: http + "/ws", // the same over plain HTTP: why a WebSocket was refused
    sse: http + "/sse",
    poll: http + "/poll",
    send: http + "/send",
  };
}

function withQuery(url, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${url}?${text}` : url;
}

/** A cursor (`room~epoch~offset,...`, docs/transports.md) from positions, and back. */
function encodeCursor(positions) {
  return Object.entries(positions).map(([room, p]) => `${room}~${p.epoch}~${p.offset}`).join(",");
}

function decodeCursor(text) {
  const positions = {};
  for (const part of (text || "").split(",")) {
    const [room, epoch, offset] = part.split("~");
    if (room && epoch && /^\d+$/.test(offset ?? "")) positions[room] = { epoch, offset: Number(offset) };
  }
  return positions;
}

/** The rooms a 409 cursor_expired names: its `rooms` if the server sends them, else the
 *  ones its message lists ("the messages missed in a, b are no longer in history"). */
function expiredRooms(body) {
  if (Array.isArray(body.rooms)) return body.rooms;
  const match = /missed in (.+?) are no longer/.exec(body.message || "");
  return match ? match[1].split(", ") : null;
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function httpError(response, body) {
  const code = body && typeof body.code === "string" ? body.code : `http_${response.status}`;
  const message = body && typeof body.message === "string" ? body.message : `HTTP ${response.status}`;
  return new RoomcastError(code, message, body);
}

/** A small event emitter; a throwing handler does not break the client (its error is
 *  rethrown on its own, so it still shows in the console). */
class Emitter {
  constructor() {
    this._handlers = new Map();
  }

  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    this._handlers.get(event)?.delete(fn);
    return this;
  }

  _emit(event, value) {
    for (const fn of [...(this._handlers.get(event) ?? [])]) {
      try {
        fn(value);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

// ---------------------------------------------------------------------------- the client

export class Client extends Emitter {
  /**
   * @param {string} [url] the server: `https://host:port` (default: this page's origin)
   * @param {object} [options]
   *   rooms: rooms to join; name: the user name; transport: "auto" (default),
   *   "websocket", "sse" or "poll"; positions: {room: {epoch, offset}} to resume from
   *   (a reloaded page); token: a connection token, or a function (maybe async)
   *   returning a new one (see the top of this file); connectTimeout, backoffBase,
   *   backoffMax, keepalive, pongTimeout, pollDeadline: milliseconds (see DEFAULTS).
   */
  constructor(url, options = {}) {
    super();
    const { rooms = [], name = null, transport = "auto", positions = {}, token = null, ...timing } =
      options;
    this.options = { ...DEFAULTS, ...timing };
    this.name = name;
    this._mode = ALIASES[String(transport).toLowerCase()];
    if (!this._mode) throw new RoomcastError("bad_request", `unknown transport ${transport}`);
    if (token !== null && typeof token !== "string" && typeof token !== "function") {
      throw new RoomcastError("bad_request", "token must be a string or a function returning one");
    }
    this._tokenFn = typeof token === "function" ? token : null; // asked on every connection
    this._connToken = typeof token === "string" && token ? token : null; // the token in use
    this._tokenPending = false; // a one-way session has not been given _connToken yet
    this._refreshTimer = null;
    this._urls = endpoints(url);
    // room -> {pos: {epoch, offset} | null, subscribed, fresh, waiters: [{resolve, reject}]}
    this._rooms = new Map();
    for (const room of rooms) this._addRoom(room, positions[room]);
    this._queue = []; // commands waiting for a connection: {command, resolve, reject}
    this._conn = null; // the current transport driver
    this._open = false; // an `open` was emitted and no `close` since
    this._closed = false; // close() was called
    this._transport = null;
    this._worked = null; // auto: the transport that delivered a first event; kept from then on
    this._rung = 0; // auto: the transport to try while none has worked yet
    this._attempt = 0; // reconnect attempts since the last success (the backoff step)
    this._timer = null;
    this._session = null;
    this._node = null;
    this._sessionToken = null; // SSE and long polling: the session token...
    this._tokenRooms = []; // ...and the rooms it names
    queueMicrotask(() => this._connect()); // once the caller has attached its handlers
  }

  /** The transport in use (or being tried): "websocket", "sse" or "poll". */
  get transport() {
    return this._transport;
  }

  get connected() {
    return this._open;
  }

  /** The session id of the current connection (from its `welcome`). */
  get session() {
    return this._session;
  }

  get rooms() {
    return [...this._rooms.keys()];
  }

  /** The position of `room`: the newest {epoch, offset} seen (or null). */
  position(room) {
    const pos = this._rooms.get(room)?.pos;
    return pos ? { ...pos } : null;
  }

  positions() {
    const all = {};
    for (const [room, entry] of this._rooms) if (entry.pos) all[room] = { ...entry.pos };
    return all;
  }

  /** Join `room` (resuming from `since`, or from the position the client has). Resolves
   *  with {room, epoch, offset, recovered} once joined; waits while disconnected. */
  join(room, { since = null } = {}) {
    try {
      checkRoom(room);
      if (this._closed) throw new RoomcastError("closed", "the client is closed");
    } catch (err) {
      return Promise.reject(err);
    }
    const known = this._rooms.get(room);
    if (known?.subscribed) return Promise.resolve({ room, ...known.pos, recovered: true });
    const entry = this._addRoom(room, since);
    const joined = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (!known) this._conn?.roomsChanged();
    return joined;
  }

  /** Leave `room`: no more events from it. */
  leave(room) {
    const entry = this._rooms.get(room);
    if (!entry) return Promise.resolve();
    this._rooms.delete(room);
    for (const waiter of entry.waiters.splice(0)) {
      waiter.reject(new RoomcastError("left", `left ${room} before it was joined`));
    }
    return this._conn ? this._conn.roomsChanged(room) : Promise.resolve();
  }

  /** Publish `data` (any JSON value) to a joined room; resolves with the `ok` (its
   *  `offset` is the message's) once the message is stored. */
  publish(room, data) {
    return this._command({ type: "publish", room, data }, room);
  }

  /** The members of a joined room: [{session, user}]. */
  async presence(room) {
    return (await this._command({ type: "presence", room }, room)).members;
  }

  /** The newest `limit` messages of a joined room (older than offset `before`), oldest first. */
  async history(room, { limit, before } = {}) {
    const command = { type: "history", room };
    if (limit !== undefined) command.limit = limit;
    if (before !== undefined) command.before = before;
    return (await this._command(command, room)).messages;
  }

  /** Give the connection a new connection token: `token`, or by default a new one from
   *  the `token` function. Resolves with when it expires (unix seconds, 0: never). While
   *  the client is not connected the token is kept for the next connection. */
  async refresh(token) {
    if (this._closed) throw new RoomcastError("closed", "the client is closed");
    if (token === undefined || token === null) {
      if (!this._tokenFn) {
        throw new RoomcastError("bad_request", "no token to refresh with: give one, or a token function");
      }
      token = await this._freshToken();
    } else if (typeof token !== "string" || !token) {
      throw new RoomcastError("bad_request", "a token is a non-empty string");
    } else {
      this._connToken = token;
    }
    const conn = this._conn;
    if (conn?.canRefresh()) {
      const ok = await conn.refresh(token);
      if (conn === this._conn) this._scheduleRefresh();
      return Number(ok.expires) || 0;
    }
    this._tokenPending = true; // the next connection uses it
    this.reconnect();
    return tokenExpires(token);
  }

  /** Reconnect at once if the client is waiting to reconnect (skipping the backoff). */
  reconnect() {
    if (this._closed || this._conn) return;
    clearTimeout(this._timer);
    this._attempt = 0;
    this._connect();
  }

  /** Close for good: pending commands fail with `closed`. */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    const conn = this._conn;
    this._conn = null;
    conn?.stop();
    if (conn?.kind === "poll") conn.leaveAll(); // else members see us leave only when we expire
    const closed = () => new RoomcastError("closed", "the client is closed");
    for (const item of this._queue.splice(0)) item.reject(closed());
    for (const entry of this._rooms.values()) {
      entry.subscribed = false;
      for (const waiter of entry.waiters.splice(0)) waiter.reject(closed());
    }
    this._open = false;
    this._emit("close", { transport: this._transport, reason: "closed", retry: false });
  }

  // -------------------------------------------------------------------------- internals

  _addRoom(room, since) {
    checkRoom(room);
    let entry = this._rooms.get(room);
    if (!entry) {
      const pos = isPosition(since) ? { epoch: since.epoch, offset: since.offset } : null;
      entry = { pos, subscribed: false, fresh: pos === null, waiters: [] };
      this._rooms.set(room, entry);
    }
    return entry;
  }

  _command(command, room) {
    if (this._closed) return Promise.reject(new RoomcastError("closed", "the client is closed"));
    if (!this._rooms.has(room)) {
      return Promise.reject(new RoomcastError("not_joined", `join room '${room}' first`));
    }
    return new Promise((resolve, reject) => {
      const item = { command, resolve, reject };
      if (this._conn?.ready) this._conn.send(item);
      else this._queue.push(item); // sent once connected
    });
  }

  /** The transport to use next: the forced one, the one that worked, or the next to try. */
  _nextKind() {
    return this._mode !== "auto" ? this._mode : (this._worked ?? TRANSPORTS[this._rung]);
  }

  _connect() {
    this._timer = null;
    if (this._closed || this._conn) return;
    const kind = this._nextKind();
    if (kind !== this._transport) {
      const previous = this._transport;
      this._transport = kind;
      this._emit("transport", { transport: kind, previous });
    }
    this._emit("connecting", { transport: kind, attempt: this._attempt });
    const Driver = DRIVERS[kind];
    this._conn = new Driver(this);
    this._conn.start();
  }

  /** The token of a new connection: a new one from the token function, if there is one. */
  async _freshToken() {
    if (!this._tokenFn) return this._connToken;
    let token;
    try {
      token = await this._tokenFn();
    } catch (err) {
      throw new RoomcastError("token_error", `the token function failed: ${err?.message ?? err}`);
    }
    if (typeof token !== "string" || !token) {
      throw new RoomcastError("token_error", "the token function returned no token");
    }
    this._connToken = token;
    return token;
  }

  /** With a token function: renew the token shortly before it expires. */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const delay = this._tokenFn && !this._closed ? refreshDelay(this._connToken) : null;
    if (delay !== null) this._refreshTimer = setTimeout(() => this._autoRefresh(), delay);
  }

  async _autoRefresh() {
    this._refreshTimer = null;
    const conn = this._conn;
    if (this._closed || !conn) return; // the next connection gets a new token
    try {
      if (conn.canRefresh()) {
        await this.refresh();
      } else {
        // No session to refresh yet (a one-way client without rooms): a fresh token
        // for its first request.
        await this._freshToken();
        this._scheduleRefresh();
      }
    } catch (err) {
      if (this._closed || conn !== this._conn) return; // the new connection takes over
      if (err.code !== "disconnected") this._emit("error", err);
      const { backoffBase, backoffMax } = this.options;
      this._refreshTimer = setTimeout(() => this._autoRefresh(), Math.min(backoffMax, backoffBase * 2));
    }
  }

  /** The next backoff delay: between half and all of the exponential step (capped). */
  _backoff() {
    const { backoffBase, backoffMax } = this.options;
    const step = Math.min(backoffMax, backoffBase * 2 ** this._attempt);
    this._attempt += 1;
    return Math.round(step / 2 + Math.random() * (step / 2));
  }

  // Called by the drivers; a driver that is no longer the current one is ignored.

  /** The driver got its first event: the transport works here. */
  _proven(conn) {
    if (conn !== this._conn) return;
    conn.proven = true;
    this._attempt = 0;
    if (this._mode === "auto") this._worked = conn.kind;
  }

  _opened(conn, { session, node }) {
    if (conn !== this._conn) return;
    this._session = session ?? this._session;
    this._node = node ?? this._node;
    if (this._open) return;
    this._open = true;
    this._scheduleRefresh();
    this._emit("open", { transport: conn.kind, session: this._session, node: this._node });
  }

  /** Every room is (re)joined: send the commands that waited. */
  _ready(conn) {
    if (conn !== this._conn) return;
    conn.ready = true;
    for (const item of this._queue.splice(0)) conn.send(item);
  }

  /** The connection failed; `error` is set when the server refused its token (or the
   *  token function failed): not a blocked transport, so it is retried as it is. */
  _failed(conn, reason, error = null) {
    if (conn !== this._conn) return;
    conn.stop();
    this._conn = null;
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    const wasOpen = this._open;
    this._open = false;
    for (const entry of this._rooms.values()) entry.subscribed = false;
    if (wasOpen) this._emit("close", { transport: conn.kind, reason, retry: true });
    if (error) this._emit("error", error);
    let delay;
    if (this._mode === "auto" && !this._worked && !conn.proven && !error) {
      // Nothing has worked yet: this one may be blocked, try the next one now (and
      // start over from WebSocket, after a backoff delay, when all of them failed).
      this._rung = (this._rung + 1) % TRANSPORTS.length;
      delay = this._rung === 0 ? this._backoff() : 0;
    } else {
      delay = this._backoff();
    }
    if (delay > 0) {
      this._emit("reconnecting", { transport: this._nextKind(), delay, attempt: this._attempt });
    }
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /** `room` is joined on the connection: `ok` is its {epoch, offset, recovered}, `since`
   *  the position it was joined from (null: none). */
  _subscribed(conn, room, ok, since) {
    const entry = this._rooms.get(room);
    if (conn !== this._conn || !entry) return;
    let recovered = ok.recovered;
    const at = { epoch: ok.epoch, offset: ok.offset };
    if (since && recovered === false) {
      entry.pos = at;
      this._emit("lost", { room, ...at, since, reason: "not_recovered" });
    } else if (!entry.pos || entry.pos.epoch !== at.epoch || entry.pos.offset < at.offset) {
      entry.pos = at;
    }
    if (entry.fresh) {
      recovered = undefined; // the first join of this room: nothing to recover
      entry.fresh = false;
    }
    entry.subscribed = true;
    const info = { room, ...entry.pos, recovered };
    this._emit("subscribed", info);
    for (const waiter of entry.waiters.splice(0)) waiter.resolve(info);
  }

  /** The server refused to join `room` (too many rooms, for instance). */
  _joinFailed(room, error) {
    const entry = this._rooms.get(room);
    if (!entry) return;
    this._rooms.delete(room);
    const waiters = entry.waiters.splice(0);
    for (const waiter of waiters) waiter.reject(error);
    if (!waiters.length) this._emit("error", error);
  }

  /** A protocol event from the server. */
  _event(conn, frame) {
    if (conn !== this._conn || !frame || typeof frame !== "object") return;
    const entry = this._rooms.get(frame.room);
    if (!entry) return; // a room we left: nothing from it any more
    if (frame.type === "message") {
      if (typeof frame.epoch === "string" && typeof frame.offset === "number") {
        const pos = entry.pos;
        if (pos && pos.epoch === frame.epoch && frame.offset <= pos.offset) return; // seen already
        entry.pos = { epoch: frame.epoch, offset: frame.offset };
      }
      this._emit("message", frame);
    } else if (frame.type === "joined" || frame.type === "left") {
      this._emit(frame.type, frame);
    }
    // the protocol grows compatibly: other event types are ignored
  }

  /** A 409 cursor_expired: the rooms it names lost messages; go on from its cursor. */
  _expired(conn, body) {
    if (conn !== this._conn) return;
    const given = decodeCursor(body.cursor);
    const rooms = expiredRooms(body) ??
      // cannot tell which: every room whose position the server moved
      Object.keys(given).filter((room) => {
        const pos = this._rooms.get(room)?.pos;
        return pos && (pos.epoch !== given[room].epoch || pos.offset !== given[room].offset);
      });
    for (const [room, at] of Object.entries(given)) {
      const entry = this._rooms.get(room);
      if (!entry) continue;
      if (rooms.includes(room)) {
        const since = entry.pos;
        entry.pos = at;
        if (since) this._emit("lost", { room, ...at, since, reason: "cursor_expired" });
      } else if (!entry.pos) {
        entry.pos = at; // started at its newest message: go on from there
      }
      // Other rooms keep their own position: they were replayable, and the cursor of
      // the 409 may already have moved them past what was missed.
    }
  }
}

// ---------------------------------------------------------------------------- WebSocket

class WebSocketDriver {
  constructor(client) {
    this.kind = "websocket";
    this.client = client;
    this.ws = null;
    this.ready = false; // every room rejoined: commands go straight out
    this.proven = false;
    this.welcomed = false;
    this.stopped = false;
    this.pending = new Map(); // command id -> {resolve, reject}
    this.nextId = 1;
    this.lastFrameAt = Date.now();
    this.openTimer = null;
    this.pongTimer = null;
    this.keepaliveTimer = null;
    this.opened = false; // the handshake succeeded
    this.authError = null; // the server's `error` frame of an expired token, before its 4003
  }

  async start() {
    const client = this.client;
    let token;
    try {
      token = await client._freshToken();
    } catch (err) {
      this.fail(err.message, err);
      return;
    }
    if (this.stopped) return;
    const url = withQuery(client._urls.ws, { name: client.name, token });
    try {
      this.ws = new WebSocket(url);
    } catch (err) {
      setTimeout(() => this.fail(`cannot open a WebSocket: ${err.message}`));
      return;
    }
    // Blocked by a proxy, or half-open: no welcome within connectTimeout.
    this.openTimer = setTimeout(() => this.fail("no welcome in time"), client.options.connectTimeout);
    this.ws.onopen = () => {
      this.opened = true;
    };
    this.ws.onmessage = (event) => this.onFrame(event.data);
    this.ws.onclose = (event) => this.onClose(event, token);
    this.ws.onerror = () => {}; // always followed by close
  }

  fail(reason, error = null) {
    if (!this.stopped) this.client._failed(this, reason, error);
  }

  async onClose(event, token) {
    const reason = `closed (${event.code}${event.reason ? ": " + event.reason : ""})`;
    if (event.code === 4003) {
      this.fail(reason, this.authError ?? new RoomcastError("token_expired", "the connection token expired"));
    } else if (this.opened) {
      this.fail(reason, this.authError);
    } else {
      clearTimeout(this.openTimer); // the probe may take a moment
      this.fail(reason, await this.probe(token));
    }
  }

  /** Why the WebSocket was refused before it opened, which a page is not told: the error
   *  of the same request over plain HTTP if it is a refused token (401), else null. */
  async probe(token) {
    const client = this.client;
    try {
      const url = withQuery(client._urls.probe, { name: client.name, token });
      const response = await fetch(url, { cache: "no-store" });
      if (response.status !== 401) return null;
      const error = httpError(response, await readJson(response));
      return isAuthError(error) ? error : new RoomcastError("unauthorized", error.message, error.frame);
    } catch {
      return null; // unreachable, or another origin that does not let us read the answer
    }
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.openTimer);
    clearTimeout(this.pongTimer);
    clearInterval(this.keepaliveTimer);
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
      try {
        this.ws.close(1000);
      } catch {
        // closed already
      }
    }
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const { reject } of pending) reject(disconnected());
  }

  onFrame(data) {
    this.lastFrameAt = Date.now();
    clearTimeout(this.pongTimer); // any frame shows the connection is alive
    this.pongTimer = null;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "welcome":
        this.onWelcome(frame);
        break;
      case "ok":
      case "error":
      case "pong":
        this.onReply(frame);
        break;
      default:
        this.client._event(this, frame);
    }
  }

  onWelcome(frame) {
    const client = this.client;
    clearTimeout(this.openTimer);
    this.welcomed = true;
    client._proven(this);
    client._opened(this, { session: frame.session, node: frame.node });
    this.keepaliveTimer = setInterval(() => this.keepalive(), 5000);
    // Rejoin every room from its position; queued commands go out once all are done.
    const joins = [...client._rooms.keys()].map((room) => this.join(room));
    Promise.allSettled(joins).then(() => {
      if (!this.stopped) client._ready(this);
    });
  }

  join(room) {
    const client = this.client;
    const entry = client._rooms.get(room);
    if (!entry) return Promise.resolve();
    const since = entry.pos ? { ...entry.pos } : null;
    const command = { type: "join", room };
    if (since) command.since = since; // the server replays what came after, then says ok
    entry.joining = this;
    return this.request(command).then(
      (ok) => {
        entry.joining = null;
        client._subscribed(this, room, ok, since);
      },
      (err) => {
        entry.joining = null;
        if (err.code !== "disconnected" && !this.stopped) client._joinFailed(room, err);
      },
    );
  }

  /** The client's rooms changed: join the new ones (or leave `left`). */
  roomsChanged(left) {
    if (!this.welcomed) return Promise.resolve(); // the welcome joins every room
    if (left === undefined) {
      for (const [room, entry] of this.client._rooms) {
        if (!entry.subscribed && entry.joining !== this) this.join(room);
      }
      return Promise.resolve();
    }
    return this.request({ type: "leave", room: left }).then(() => undefined, () => undefined);
  }

  request(command) {
    return new Promise((resolve, reject) => {
      if (this.stopped || !this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(disconnected());
        return;
      }
      const id = this.nextId++;
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...command, id }));
    });
  }

  send(item) {
    this.request(item.command).then(item.resolve, item.reject);
  }

  canRefresh() {
    return this.welcomed && !this.stopped && this.ws?.readyState === WebSocket.OPEN;
  }

  /** A new token for the connection; resolves with the `ok` (its `expires`). */
  refresh(token) {
    return this.request({ type: "refresh", token });
  }

  onReply(frame) {
    const waiter = frame.id === undefined ? null : this.pending.get(frame.id);
    if (!waiter) {
      // An error of no command: the token expired, a 4003 close comes next.
      if (frame.type === "error" && AUTH_CODES.has(frame.code)) {
        this.authError = new RoomcastError(frame.code, frame.message, frame);
      }
      return;
    }
    this.pending.delete(frame.id);
    if (frame.type === "error") waiter.reject(new RoomcastError(frame.code, frame.message, frame));
    else waiter.resolve(frame);
  }

  /** The server pings us (the browser answers by itself); this notices a dead
   *  connection from our side (a laptop waking up, a proxy that dropped the socket). */
  keepalive() {
    const { keepalive, pongTimeout } = this.client.options;
    if (this.pongTimer !== null || Date.now() - this.lastFrameAt < keepalive) return;
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(JSON.stringify({ type: "ping" }));
    this.pongTimer = setTimeout(() => this.fail("no pong"), pongTimeout);
  }
}

// ---------------------------------------------------------------------------- SSE and long polling

/** What SSE and long polling share: commands over POST /send with the session token,
 *  joins and leaves that change the token's rooms, and a loop of requests (a stream or
 *  a poll after another) that reopens whenever the rooms change. */
class OneWayDriver {
  constructor(client, kind) {
    this.kind = kind;
    this.client = client;
    this.ready = false;
    this.proven = false;
    this.stopped = false;
    this.controller = null; // aborts the request in flight
    this.restartWanted = false; // the rooms changed: reopen with the new token
    this.changed = []; // resolves of roomsChanged(), settled after the next reconcile
    this.refreshes = []; // rc.refresh() calls waiting for the loop: {token, resolve, reject}
    this.wake = null; // resolves the wait of an idle driver (no rooms)
  }

  start() {
    this.run().catch((err) => {
      if (!isAuthError(err)) {
        this.fail(err.message || String(err));
        return;
      }
      // An expired session is renewed by a refresh with a new token, at the next
      // connection; without a token function there is none: start afresh then.
      if (err.code === "token_expired" && !this.client._tokenFn) this.client._sessionToken = null;
      this.fail(err.message, err);
    });
  }

  fail(reason, error = null) {
    if (!this.stopped) this.client._failed(this, reason, error);
  }

  stop() {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
    for (const resolve of this.changed.splice(0)) resolve();
    for (const item of this.refreshes.splice(0)) item.reject(disconnected());
  }

  /** The stream or poll in flight ends, and the loop does what changed before the next. */
  interrupt() {
    this.restartWanted = true;
    this.controller?.abort();
    this.wake?.();
  }

  roomsChanged() {
    return new Promise((resolve) => {
      this.changed.push(resolve);
      this.interrupt();
    });
  }

  canRefresh() {
    return !this.stopped && Boolean(this.client._sessionToken);
  }

  /** A new token for the session: a POST /send refresh between two requests, so that the
   *  next stream or poll uses the new session token (a stream ends with its token). */
  refresh(token) {
    return new Promise((resolve, reject) => {
      this.refreshes.push({ token, resolve, reject });
      this.interrupt();
    });
  }

  async renew() {
    const client = this.client;
    for (const item of this.refreshes.splice(0)) {
      if (!client._sessionToken || this.stopped) {
        item.reject(disconnected());
        continue;
      }
      try {
        const ok = await this.post({ type: "refresh", token: item.token });
        if (typeof ok.session === "string") client._sessionToken = ok.session;
        item.resolve(ok);
      } catch (err) {
        item.reject(err); // the session goes on with its token until it expires
      }
    }
  }

  /** A new connection: with a token function a new token, which a session that exists
   *  gets with `refresh` (an expired one too); if it cannot, the session starts afresh
   *  and its first request shows whether the server takes the token. */
  async prepare() {
    const client = this.client;
    const changed = client._tokenPending || Boolean(client._tokenFn);
    const token = await client._freshToken();
    if (!token || !changed || !client._sessionToken) {
      client._tokenPending = false;
      return;
    }
    try {
      const ok = await this.post({ type: "refresh", token });
      if (typeof ok.session === "string") client._sessionToken = ok.session;
    } catch (err) {
      if (err.code === "disconnected") throw err;
      client._sessionToken = null;
    }
    if (client._connToken === token) client._tokenPending = false; // else rc.refresh() came since
  }

  async post(command, { keepalive = false } = {}) {
    const client = this.client;
    let response;
    try {
      response = await fetch(client._urls.send, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Roomcast-Session": client._sessionToken },
        body: JSON.stringify(command),
        cache: "no-store",
        keepalive, // outlives the page (a leave sent as the tab closes)
      });
    } catch {
      throw disconnected();
    }
    const body = await readJson(response);
    if (response.ok && body) return body;
    throw httpError(response, body);
  }

  send(item) {
    const client = this.client;
    if (!client._sessionToken) {
      client._queue.push(item); // the next stream or poll brings a token
      return;
    }
    this.post(item.command).then(item.resolve, (err) => {
      if (AUTH_CODES.has(err.code) && this === client._conn && !this.stopped) {
        // unauthorized: the server forgot its secret (a restart), start afresh;
        // token_expired: the next request is refused too, and the client reconnects.
        if (err.code === "unauthorized") client._sessionToken = null;
        this.ready = false;
        this.interrupt();
      }
      item.reject(err);
    });
  }

  /** Make the token name the client's rooms, with POST /send join and leave. */
  async reconcile() {
    const client = this.client;
    while (client._sessionToken && !this.stopped) {
      const add = [...client._rooms.keys()].find((room) => !client._tokenRooms.includes(room));
      const drop = client._tokenRooms.find((room) => !client._rooms.has(room));
      const room = add ?? drop;
      if (room === undefined) return;
      let ok;
      try {
        ok = await this.post({ type: add !== undefined ? "join" : "leave", room });
      } catch (err) {
        if (this.stopped) return;
        if (err.code === "unauthorized") {
          client._sessionToken = null; // start afresh with ?rooms=...
          this.ready = false;
          return;
        }
        if (err.code === "disconnected" || err.code === "token_expired") throw err;
        if (add === undefined) {
          client._tokenRooms = client._tokenRooms.filter((name) => name !== room);
        } else {
          client._joinFailed(room, err); // refused (too many rooms...)
        }
        continue;
      }
      client._sessionToken = ok.session;
      if (add !== undefined) {
        client._tokenRooms = [...client._tokenRooms, room];
        // Start the room where the join found it, so that nothing published between
        // this ok and the next stream or poll is missed.
        const entry = client._rooms.get(room);
        if (entry && !entry.pos && isPosition(ok)) entry.pos = { epoch: ok.epoch, offset: ok.offset };
      } else {
        client._tokenRooms = client._tokenRooms.filter((name) => name !== room);
      }
    }
  }

  /** The positions to resume `rooms` from, and the query and headers naming who we are. */
  request(rooms) {
    const client = this.client;
    const since = {};
    for (const room of rooms) {
      const pos = client._rooms.get(room)?.pos;
      if (pos) since[room] = { ...pos };
    }
    const who = client._sessionToken
      ? { session: client._sessionToken }
      : { rooms: rooms.join(","), name: client.name };
    const headers = {};
    if (!client._sessionToken && client._connToken) headers.Authorization = `Bearer ${client._connToken}`;
    return { since, params: { ...who, cursor: encodeCursor(since) }, headers };
  }

  /** A refused request. Retried at once (a few times): 409 (see _expired), 401
   *  `unauthorized` of a session token (the server forgot its secret, a restart: start
   *  afresh), 403 naming a room (that join fails, the others go on). Another 401 is a
   *  refused token (an auth failure), anything else a failure. */
  async refused(response) {
    const client = this.client;
    const body = await readJson(response);
    const error = httpError(response, body);
    this.refusals = (this.refusals ?? 0) + 1;
    if (this.refusals <= 5) {
      if (response.status === 409 && body?.code === "cursor_expired") {
        client._expired(this, body);
        return;
      }
      if (response.status === 401 && error.code === "unauthorized" && client._sessionToken) {
        client._sessionToken = null;
        this.ready = false;
        return;
      }
      if (response.status === 403 && this.forbidden(error)) return;
    }
    if (response.status === 401) {
      this.ready = false;
      throw isAuthError(error) ? error : new RoomcastError("unauthorized", error.message, body);
    }
    throw new Error(`${error.code}: ${error.message}`);
  }

  /** A 403 of a stream or poll: the room its message names may not be joined. */
  forbidden(error) {
    const client = this.client;
    const room = error.frame?.room ?? /may not join room '([^']+)'/.exec(error.message)?.[1];
    if (error.code !== "forbidden" || !room || !client._rooms.has(room)) return false;
    client._joinFailed(room, error);
    return true;
  }

  /** Nothing to read (no rooms): wait for a join. */
  async idle() {
    this.client._opened(this, {});
    await new Promise((resolve) => {
      this.wake = resolve;
      if (this.restartWanted || this.stopped) resolve();
    });
    this.wake = null;
  }

  settleChanges() {
    for (const resolve of this.changed.splice(0)) resolve();
  }
}

/** Reads `text/event-stream` chunks; calls onEvent(type, data) per event. */
class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.type = "";
    this.data = [];
  }

  push(text) {
    let buffer = this.buffer + text;
    let keep = "";
    if (buffer.endsWith("\r")) {
      keep = "\r"; // maybe the first half of \r\n
      buffer = buffer.slice(0, -1);
    }
    const lines = buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + keep;
    for (const line of lines) this.line(line);
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent(this.type || "message", this.data.join("\n"));
      this.type = "";
      this.data = [];
      return;
    }
    if (line.startsWith(":")) return; // a comment: the server's keep-alive ping
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    // `id` is the cursor: the client keeps its own positions instead
  }
}

class SSEDriver extends OneWayDriver {
  constructor(client) {
    super(client, "sse");
  }

  async run() {
    const client = this.client;
    await this.prepare();
    while (!this.stopped) {
      this.restartWanted = false;
      await this.renew();
      try {
        await this.reconcile();
      } finally {
        this.settleChanges();
      }
      const rooms = [...client._rooms.keys()];
      if (this.stopped) return;
      if (!rooms.length) {
        await this.idle();
        continue;
      }
      await this.stream(rooms);
    }
  }

  /** One stream: returns when it should be reopened, throws when it failed. */
  async stream(rooms) {
    const client = this.client;
    const { since, params, headers } = this.request(rooms);
    if (this.restartWanted) return;
    const controller = new AbortController();
    this.controller = controller;
    let timedOut = false;
    let timer = null;
    const arm = (ms) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, ms);
    };
    arm(client.options.connectTimeout); // until the welcome
    let silence = client.options.connectTimeout;
    const waiting = new Set(rooms); // rooms whose ok has not come yet
    let welcomed = false;
    let authError = null; // the stream ends because its token expired
    const parser = new EventStreamParser((type, data) => {
      let frame;
      try {
        frame = JSON.parse(data);
      } catch {
        return;
      }
      if (type === "welcome") {
        welcomed = true;
        client._sessionToken = frame.token ?? client._sessionToken;
        client._tokenRooms = rooms;
        this.refusals = 0;
        client._proven(this);
        client._opened(this, { session: frame.session, node: frame.node });
        // The server sends `: ping` every heartbeat: allow two to go missing.
        silence = (Number(frame.heartbeat) || 25) * 2000 + 5000;
        arm(silence);
      } else if (type === "ok") {
        client._subscribed(this, frame.room, frame, since[frame.room] ?? null);
        waiting.delete(frame.room);
        if (!waiting.size) client._ready(this);
      } else if (type === "error" && AUTH_CODES.has(frame.code)) {
        authError = new RoomcastError(frame.code, frame.message, frame);
      } else {
        client._event(this, frame);
      }
    });
    try {
      const url = withQuery(client._urls.sse, params);
      const response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers },
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        clearTimeout(timer);
        await this.refused(response);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (welcomed) arm(silence);
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      if (this.stopped || (this.restartWanted && !timedOut)) return;
      if (timedOut) throw new Error(welcomed ? "the stream went silent" : "no welcome in time");
      throw err;
    } finally {
      clearTimeout(timer);
      this.controller = null;
    }
    if (!this.stopped && !this.restartWanted) throw authError ?? new Error("the stream ended");
  }
}

class PollDriver extends OneWayDriver {
  constructor(client) {
    super(client, "poll");
  }

  async run() {
    const client = this.client;
    let quick = true; // answer at once: the first poll of a connection, and after a change
    await this.prepare();
    while (!this.stopped) {
      if (this.restartWanted) quick = true;
      this.restartWanted = false;
      await this.renew();
      try {
        await this.reconcile();
      } finally {
        this.settleChanges();
      }
      const rooms = [...client._rooms.keys()];
      if (this.stopped) return;
      if (!rooms.length) {
        await this.idle();
        continue;
      }
      const { since, params, headers } = this.request(rooms);
      if (client._sessionToken && quick) params.timeout = 0;
      const deadline = quick ? client.options.connectTimeout : client.options.pollDeadline;
      quick = false;
      const controller = new AbortController();
      this.controller = controller;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, deadline);
      let response;
      let body;
      try {
        response = await fetch(withQuery(client._urls.poll, params), {
          headers,
          cache: "no-store",
          signal: controller.signal,
        });
        if (response.ok) body = await response.json();
      } catch (err) {
        if (this.stopped) return;
        if (this.restartWanted && !timedOut) continue;
        throw timedOut ? new Error("no answer in time") : err;
      } finally {
        clearTimeout(timer);
        this.controller = null;
      }
      if (!response.ok) {
        await this.refused(response);
        quick = true;
        continue;
      }
      this.answer(rooms, since, body);
    }
  }

  /** Leave every room of the token at once: a long-poll client is a member until no
   *  poll has come for a while, unless it says it left. */
  leaveAll() {
    if (!this.client._sessionToken) return;
    for (const room of this.client._tokenRooms) {
      this.post({ type: "leave", room }, { keepalive: true }).catch(() => {});
    }
  }

  answer(rooms, since, body) {
    const client = this.client;
    this.refusals = 0;
    client._sessionToken = body.session;
    client._tokenRooms = rooms;
    const events = Array.isArray(body.events) ? body.events : [];
    const welcome = events.find((frame) => frame && frame.type === "welcome");
    client._proven(this);
    client._opened(this, { session: welcome?.session, node: body.node });
    for (const frame of events) if (frame !== welcome) client._event(this, frame);
    // The answer's cursor: where each room starts (a new one) or where the events end.
    const cursor = decodeCursor(body.cursor);
    for (const room of rooms) {
      const entry = client._rooms.get(room);
      const at = cursor[room];
      if (!entry || !at) continue;
      if (entry.subscribed) {
        if (entry.pos && entry.pos.epoch === at.epoch && entry.pos.offset < at.offset) entry.pos = at;
        continue;
      }
      const from = since[room] ?? null;
      client._subscribed(this, room, { ...at, recovered: from ? true : undefined }, from);
    }
    client._ready(this);
  }
}

const DRIVERS = { websocket: WebSocketDriver, sse: SSEDriver, poll: PollDriver };

/** Connect to the roomcast server at `url` (see Client). */
export function connect(url, options = {}) {
  return new Client(url, options);
}

export default { connect, Client, RoomcastError, TRANSPORTS };
