#!/usr/bin/env node
// The baseline of the roomcast benchmarks: the classic tutorial broadcast server on `ws`
// (a Set of sockets per room; on each publish, loop over the set and send), speaking
// just enough of roomcast's protocol v1 (docs/protocol.md) for the same load generator
// to drive it: welcome on connect, join/leave/ping answered, publish fanned out with
// offsets increasing by one per room, the `message` JSON built once per publish.
//
//   node benchmarks/node_ws_server.js --port 8100 [--host 127.0.0.1]
//
// GET /ready answers 200 once listening. No compression (perMessageDeflate: false),
// no history, no heartbeats: it is a baseline, not a server.
'use strict';

const crypto = require('crypto');
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

function option(name, fallback) {
  const index = process.argv.indexOf(name);
  return index > 0 && index + 1 < process.argv.length ? process.argv[index + 1] : fallback;
}

const host = option('--host', '127.0.0.1');
const port = Number(option('--port', '8100'));
const epoch = crypto.randomBytes(4).toString('hex');
const nodeId = `node-baseline-${port}`;
const rooms = new Map(); // name -> { offset, members: Set<WebSocket> }

const server = http.createServer((request, response) => {
  const ok = request.url === '/ready';
  response.writeHead(ok ? 200 : 404, { 'content-type': 'text/plain' });
  response.end(ok ? 'ready\n' : 'not found\n');
});
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 * 1024 });

function reply(ws, fields) {
  ws.send(JSON.stringify(fields));
}

function room(name) {
  let entry = rooms.get(name);
  if (entry === undefined) {
    entry = { offset: 0, members: new Set() };
    rooms.set(name, entry);
  }
  return entry;
}

function publish(ws, command) {
  const target = rooms.get(command.room);
  if (target === undefined || !target.members.has(ws)) {
    reply(ws, { type: 'error', id: command.id, code: 'not_joined', message: 'join first' });
    return;
  }
  target.offset += 1;
  const message = JSON.stringify({
    type: 'message',
    room: command.room,
    epoch,
    offset: target.offset,
    data: command.data,
    from: ws.member,
    ts: Date.now(),
  });
  for (const client of target.members) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(message);
    }
  }
  reply(ws, { type: 'ok', id: command.id, room: command.room, epoch, offset: target.offset });
}

function handle(ws, command) {
  switch (command.type) {
    case 'publish':
      publish(ws, command);
      break;
    case 'join': {
      const target = room(command.room);
      target.members.add(ws);
      ws.rooms.add(command.room);
      reply(ws, { type: 'ok', id: command.id, room: command.room, epoch, offset: target.offset });
      break;
    }
    case 'leave': {
      const target = rooms.get(command.room);
      if (target !== undefined) target.members.delete(ws);
      ws.rooms.delete(command.room);
      reply(ws, { type: 'ok', id: command.id, room: command.room });
      break;
    }
    case 'ping':
      reply(ws, { type: 'pong', id: command.id });
      break;
    default:
      reply(ws, { type: 'error', id: command.id, code: 'unknown_type', message: 'unknown' });
  }
}

wss.on('connection', (ws, request) => {
  const url = new URL(request.url, 'http://localhost');
  const session = crypto.randomBytes(9).toString('base64url');
  ws.member = { session, user: url.searchParams.get('name') || `anon-${session.slice(0, 8)}` };
  ws.rooms = new Set();
  reply(ws, { type: 'welcome', session, node: nodeId, heartbeat: 25 });
  ws.on('message', (data, isBinary) => {
    let command;
    try {
      command = JSON.parse(isBinary ? '' : data.toString());
    } catch {
      reply(ws, { type: 'error', code: 'bad_request', message: 'not JSON' });
      return;
    }
    handle(ws, command);
  });
  ws.on('close', () => {
    for (const name of ws.rooms) {
      const target = rooms.get(name);
      if (target !== undefined) target.members.delete(ws);
    }
  });
});

server.listen({ host, port, backlog: 4096 }, () => {
  console.log(`node baseline listening on ws://${host}:${port}/ws`);
});

function stop() {
  for (const client of wss.clients) client.terminate();
  server.close(() => process.exit(0));
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
