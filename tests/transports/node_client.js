// An independent client on Node's `ws`: joins a room, publishes the given messages,
// waits until it has received them all, and prints every frame it got, one per line.
// Usage: node node_client.js WS_URL ROOM COUNT
const WebSocket = require("ws");

const [url, room, count] = process.argv.slice(2);
const total = Number(count);
const ws = new WebSocket(url, { perMessageDeflate: false });
let received = 0;

ws.on("message", (raw, isBinary) => {
  const frame = JSON.parse(raw.toString());
  process.stdout.write(JSON.stringify({ binary: isBinary, frame }) + "\n");
  if (frame.type === "welcome") {
    ws.send(JSON.stringify({ type: "join", room, id: "join" }));
  } else if (frame.type === "ok" && frame.id === "join") {
    for (let n = 1; n <= total; n++) {
      ws.send(JSON.stringify({ type: "publish", room, data: { n, from: "node" }, id: n }));
    }
  } else if (frame.type === "message" && ++received === total) {
    ws.close(1000);
  }
});
ws.on("close", (code) => process.exit(code === 1000 || code === 1005 ? 0 : 1));
ws.on("error", (err) => { console.error(err.message); process.exit(2); });
