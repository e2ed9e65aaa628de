// The live-feed demo: the price, a chart, the order book and the trades of one room
// (?room=ticker:BTC), fed by `roomcast demo ticker`. No polling: the messages arrive over
// the client's connection; on load the chart is filled from the room's history.

import * as roomcast from "/roomcast.js";
import { param, roomName, showStatus, Stream } from "./common.js";

const POINTS = 120; // prices on the chart
const TRADES = 14; // trades listed
const W = 600;
const TOP = 10;
const BOTTOM = 230;

const $ = (id) => document.getElementById(id);
const room = roomName(param("room"), "ticker:BTC");
const stream = new Stream();
let shown = null; // the price text on screen
let changes = 0; // how many times it changed

$("symbol").textContent = room;
$("empty-room").textContent = room;
document.title = `${room} · roomcast demo`;

const rc = roomcast.connect(location.origin, { rooms: [room], name: param("name") });
showStatus(rc, $("status"));
rc.on("message", (m) => {
  if (m.room === room && isQuote(m) && stream.add(m)) update();
});
rc.on("subscribed", ({ room: joined, recovered }) => {
  // Resumed with nothing missed: the client replays what came meanwhile. Otherwise (the
  // first join, or messages lost) the chart is filled from history.
  if (joined === room && recovered !== true) loadHistory();
});
rc.on("lost", ({ room: lostRoom }) => {
  if (lostRoom === room) loadHistory();
});

async function loadHistory() {
  try {
    const messages = await rc.history(room, { limit: POINTS });
    const quotes = messages.filter(isQuote);
    for (const m of quotes) stream.add(m);
    document.body.dataset.history = String(quotes.length);
    update();
  } catch (err) {
    console.warn("no history:", err);
  } finally {
    document.body.dataset.state = "live";
  }
}

function isQuote(m) {
  return m && typeof m.offset === "number" && m.data && Number.isFinite(m.data.price);
}

function update() {
  stream.trim(POINTS);
  const messages = stream.sorted();
  if (!messages.length) return;
  const last = messages[messages.length - 1];
  $("empty").hidden = true;
  showPrice(last);
  drawChart(messages.map((m) => m.data.price));
  showBook(last.data);
  showTrades(messages.slice(-TRADES).reverse());
}

function showPrice(last) {
  const price = $("price");
  const text = last.data.price.toFixed(2);
  if (text !== shown) {
    if (shown !== null) {
      changes += 1;
      price.className = `price ${Number(text) > Number(shown) ? "up" : "down"}`;
    }
    shown = text;
    price.textContent = text;
    price.dataset.changes = String(changes);
  }
  price.dataset.offset = String(last.offset);
  const change = Number(last.data.change) || 0;
  const previous = last.data.price - change;
  const percent = previous ? (change / previous) * 100 : 0;
  const el = $("change");
  el.textContent = `${change >= 0 ? "+" : ""}${change.toFixed(2)} (${percent >= 0 ? "+" : ""}${percent.toFixed(2)}%)`;
  el.className = `change ${change >= 0 ? "up" : "down"}`;
  if (typeof last.ts === "number") $("updated").textContent = clock(last.ts);
}

function drawChart(prices) {
  const lo = Math.min(...prices);
  const hi = Math.max(...prices);
  const span = hi - lo || 1;
  const step = W / (POINTS - 1);
  const start = W - (prices.length - 1) * step;
  const coords = prices.map((p, i) => {
    const x = start + i * step;
    const y = BOTTOM - ((p - lo) / span) * (BOTTOM - TOP);
    return `${x.toFixed(1)},${y.toFixed(1)}`;
  });
  const line = $("line");
  line.setAttribute("points", coords.join(" "));
  line.dataset.points = String(prices.length);
  $("area").setAttribute("points", `${start.toFixed(1)},${BOTTOM} ${coords.join(" ")} ${W},${BOTTOM}`);
  $("chart-hi").textContent = hi.toFixed(2);
  $("chart-lo").textContent = lo.toFixed(2);
}

function showBook(data) {
  const bids = levels(data.bids);
  const asks = levels(data.asks);
  const most = Math.max(...bids.map((l) => l[1]), ...asks.map((l) => l[1]), 0) || 1;
  $("asks").replaceChildren(...asks.slice().reverse().map((l) => bookRow("ask", l, most)));
  $("bids").replaceChildren(...bids.map((l) => bookRow("bid", l, most)));
  $("spread").textContent = bids.length && asks.length ? `spread ${(asks[0][0] - bids[0][0]).toFixed(2)}` : "";
}

function levels(side) {
  return Array.isArray(side)
    ? side.filter((l) => Array.isArray(l) && Number.isFinite(l[0]) && Number.isFinite(l[1]))
    : [];
}

function bookRow(kind, [price, size], most) {
  const row = document.createElement("tr");
  row.className = kind;
  row.dataset.testid = kind;
  const priceCell = document.createElement("td");
  priceCell.textContent = price.toFixed(2);
  const sizeCell = document.createElement("td");
  const depth = document.createElement("span");
  depth.className = "depth";
  depth.style.width = `${Math.round((size / most) * 100)}%`;
  sizeCell.append(depth, document.createTextNode(size.toFixed(3)));
  row.append(priceCell, sizeCell);
  return row;
}

function showTrades(messages) {
  const items = messages
    .filter((m) => m.data.trade && Number.isFinite(m.data.trade.price))
    .map((m) => {
      const { price, size, side } = m.data.trade;
      const li = document.createElement("li");
      li.dataset.offset = String(m.offset);
      li.className = side === "sell" ? "sell" : "buy";
      for (const text of [clock(m.ts), price.toFixed(2), Number(size).toFixed(3)]) {
        const span = document.createElement("span");
        span.textContent = text;
        li.append(span);
      }
      return li;
    });
  $("trades").replaceChildren(...items);
}

function clock(ts) {
  return new Date(ts).toLocaleTimeString([], { hour12: false });
}
