// The multiplayer-cursors demo: every page publishes its pointer position into one room
// (?room=cursors:lobby), at most every THROTTLE ms and only when it moved, and draws the
// other members' cursors. Presence (the member list, then `joined`/`left`) shows who is
// there; a cursor goes away with its owner.

import * as roomcast from "/roomcast.js";
import { colorOf, guestName, param, roomName, showStatus } from "./common.js";

const THROTTLE = 50; // ms between two publishes: at most 20 a second, far below --publish-rate
const SVG = "http://www.w3.org/2000/svg";
const ARROW = "M1 1 L1 16 L5 12 L8 18 L10.5 17 L7.5 11 L13 11 Z";

const $ = (id) => document.getElementById(id);
const board = $("board");
const room = roomName(param("room"), "cursors:lobby");
const me = param("name") || guestName();
const members = new Map(); // session -> {user, item}
const cursors = new Map(); // session -> the cursor element

$("room").textContent = room;
const rc = roomcast.connect(location.origin, { rooms: [room], name: me });
showStatus(rc, $("status"));
rc.on("subscribed", ({ room: joined }) => {
  if (joined === room) loadPresence();
});
rc.on("joined", ({ room: r, member }) => {
  if (r === room) addMember(member);
});
rc.on("left", ({ room: r, member }) => {
  if (r === room) removeMember(member.session);
});
rc.on("message", (m) => {
  if (m.room === room && m.from && m.from.session !== rc.session) moveCursor(m.from, m.data);
});

async function loadPresence() {
  try {
    const list = await rc.presence(room);
    const present = new Set(list.map((m) => m.session));
    for (const session of [...members.keys()]) if (!present.has(session)) removeMember(session);
    for (const member of list) addMember(member);
    $("notice").textContent = "";
  } catch (err) {
    $("notice").textContent = `No presence: ${err.message}`;
  }
  document.body.dataset.session = rc.session ?? "";
  document.body.dataset.state = "live";
}

function addMember({ session, user }) {
  if (!session || members.has(session)) return;
  const item = document.createElement("li");
  item.dataset.session = session;
  item.dataset.testid = "member";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.style.background = colorOf(session);
  const name = document.createElement("span");
  name.className = "member-name";
  name.textContent = session === rc.session ? `${user ?? "anonymous"} (you)` : user ?? "anonymous";
  item.append(dot, name);
  members.set(session, { user, item });
  showMembers();
}

function removeMember(session) {
  members.delete(session);
  cursors.get(session)?.remove();
  cursors.delete(session);
  showMembers();
}

function showMembers() {
  const items = [...members.entries()]
    .sort(([a, x], [b, y]) => (b === rc.session) - (a === rc.session) || String(x.user).localeCompare(String(y.user)))
    .map(([, member]) => member.item);
  $("members").replaceChildren(...items);
  $("count").textContent = String(members.size);
}

function moveCursor(from, data) {
  if (!data || typeof data !== "object") return;
  if (!members.has(from.session)) addMember(from); // its `joined` may come later
  const cursor = cursors.get(from.session) ?? newCursor(from);
  if (data.out === true) {
    cursor.hidden = true;
    return;
  }
  const { x, y } = data;
  if (!inUnit(x) || !inUnit(y)) return;
  cursor.hidden = false;
  cursor.dataset.x = String(x);
  cursor.dataset.y = String(y);
  place(cursor);
}

function inUnit(value) {
  return Number.isFinite(value) && value >= 0 && value <= 1;
}

function place(cursor) {
  const x = Number(cursor.dataset.x) * board.clientWidth;
  const y = Number(cursor.dataset.y) * board.clientHeight;
  cursor.style.transform = `translate(${x}px, ${y}px)`;
}

function newCursor({ session, user }) {
  const color = colorOf(session);
  const cursor = document.createElement("div");
  cursor.className = "cursor";
  cursor.dataset.session = session;
  cursor.dataset.testid = "cursor";
  cursor.hidden = true;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 18 18");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ARROW);
  path.setAttribute("fill", color);
  path.setAttribute("stroke", "white");
  svg.append(path);
  const label = document.createElement("span");
  label.className = "label";
  label.style.background = color;
  label.textContent = user ?? "anonymous";
  cursor.append(svg, label);
  board.append(cursor);
  cursors.set(session, cursor);
  return cursor;
}

window.addEventListener("resize", () => cursors.forEach(place));

// ------------------------------------------------------------- our own pointer, throttled

let pending = null; // the newest position not sent yet
let timer = null;
let lastSent = -Infinity; // performance.now() of the last publish
let lastKey = null; // what was last published: nothing is sent twice in a row
let sent = 0;

board.addEventListener("pointermove", (event) => {
  const rect = board.getBoundingClientRect();
  const x = (event.clientX - rect.left - board.clientLeft) / board.clientWidth;
  const y = (event.clientY - rect.top - board.clientTop) / board.clientHeight;
  queue({ x: unit(x), y: unit(y) });
});
board.addEventListener("pointerleave", () => queue({ out: true }));

function unit(value) {
  return Math.round(Math.min(1, Math.max(0, value)) * 10000) / 10000;
}

function queue(position) {
  pending = position;
  if (timer === null) timer = setTimeout(flush, Math.max(0, lastSent + THROTTLE - performance.now()));
}

function flush() {
  timer = null;
  const position = pending;
  pending = null;
  const key = JSON.stringify(position);
  if (!position || key === lastKey || !rc.connected) return;
  lastKey = key;
  lastSent = performance.now();
  sent += 1;
  board.dataset.sent = String(sent);
  rc.publish(room, position).catch(() => {
    lastKey = null; // not sent (rate limited, disconnected): the next move sends again
  });
}
