// What the demo pages share: the connection badge and reading parameters of the URL.

const ROOM_RE = /^[A-Za-z0-9_.:@-]{1,128}$/;

/** A parameter of the query or the hash (`?room=x` or `#room=x`), or `fallback`. */
export function param(name, fallback = null) {
  const query = new URLSearchParams(location.search).get(name);
  if (query !== null && query !== "") return query;
  const hash = new URLSearchParams(location.hash.slice(1)).get(name);
  return hash !== null && hash !== "" ? hash : fallback;
}

/** `value` if it is a valid room name, else `fallback`. */
export function roomName(value, fallback) {
  return typeof value === "string" && ROOM_RE.test(value) ? value : fallback;
}

/** A name for an anonymous visitor. */
export function guestName() {
  return `guest-${Math.floor(1000 + Math.random() * 9000)}`;
}

/** Show the client's connection state in `element` (`data-state`, `data-transport`). */
export function showStatus(rc, element) {
  const set = (state, text) => {
    element.dataset.state = state;
    element.textContent = text;
  };
  set("connecting", "Connecting…");
  rc.on("open", ({ transport }) => {
    element.dataset.transport = transport;
    set("connected", `Live (${transport})`);
  });
  rc.on("close", ({ retry }) => set(retry ? "reconnecting" : "offline", retry ? "Reconnecting…" : "Offline"));
  rc.on("error", (err) => {
    element.title = `${err.code}: ${err.message}`;
  });
}

/** A stable color for `key` (a session id). */
export function colorOf(key) {
  let hash = 0;
  for (const char of String(key)) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 70% 45%)`;
}

/** Messages of one room by offset, each once, whichever way they came (a live event or a
 *  history reply): `add` is false for one seen before. A new epoch starts over. */
export class Stream {
  constructor() {
    this.epoch = null;
    this.byOffset = new Map();
  }

  add(message) {
    if (this.epoch !== message.epoch) {
      this.epoch = message.epoch;
      this.byOffset.clear();
    }
    if (this.byOffset.has(message.offset)) return false;
    this.byOffset.set(message.offset, message);
    return true;
  }

  /** The messages, oldest first. */
  sorted() {
    return [...this.byOffset.values()].sort((a, b) => a.offset - b.offset);
  }

  /** Keep only the newest `count`. */
  trim(count) {
    if (this.byOffset.size <= count) return;
    for (const message of this.sorted().slice(0, this.byOffset.size - count)) {
      this.byOffset.delete(message.offset);
    }
  }
}
