// Peer server 2: Node `ws` + `ioredis`, ONE PSUBSCRIBE order:tracking:* per process and an
// order_id -> sockets map; each message is shaped once and the same string sent to every watcher.
// Auth is a shared secret: the client offers `vantage-tracking-v1, bearer.<secret>`.
// node server.js --redis-url URL --port N [--host H] [--ping-interval S]
'use strict';

const crypto = require('crypto');
const http = require('http');
const { WebSocketServer } = require('ws');
const Redis = require('ioredis');

const SUBPROTOCOL = 'vantage-tracking-v1';
const CHANNEL_PREFIX = 'order:tracking:';
const STATE_PREFIX = 'order:tracking:state:';
const PATH = /^\/ws\/orders\/([^/]{1,128})\/track$/;
const UPDATE_FIELDS = ['status', 'location', 'timestamp', 'estimated_delivery', 'carrier', 'seq'];
const HEARTBEAT_ACK = JSON.stringify({ event: 'heartbeat_ack', data: {} });

function parseArgs(argv) {
  const args = { host: '127.0.0.1', pingInterval: 30,
    secret: process.env.BENCH_PEER_SECRET || 'bench-secret' };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-(\w)/g, (_, c) => c.toUpperCase());
    args[key] = argv[i + 1];
  }
  if (!args.redisUrl || !args.port) {
    console.error(JSON.stringify({ event: 'usage', message: 'need --redis-url URL --port N' }));
    process.exit(2);
  }
  return args;
}

function refuse(socket, status, reason, code, message) {
  const body = JSON.stringify({ error: code, message });
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

function offered(req) {
  return (req.headers['sec-websocket-protocol'] || '').split(',').map((s) => s.trim()).filter(Boolean);
}

function trackingUpdate(message) {
  const data = {};
  for (const field of UPDATE_FIELDS) data[field] = message[field] === undefined ? null : message[field];
  return JSON.stringify({ event: 'tracking_update', data });
}

function connectionAck(connectionId, orderId, state) {
  return JSON.stringify({ event: 'connection_ack', data: {
    connection_id: connectionId, order_id: orderId, carrier: state.carrier || null,
    current_status: state.status || null, seq: parseInt(state.seq || '0', 10) } });
}

function answer(data, isBinary) {
  if (isBinary) return JSON.stringify({ event: 'error', data: { code: 'UNSUPPORTED_DATA', message: 'text frames only' } });
  let message;
  try { message = JSON.parse(data.toString()); } catch (e) {
    return JSON.stringify({ event: 'error', data: { code: 'INVALID_JSON', message: 'messages must be JSON objects' } });
  }
  if (message && message.event === 'heartbeat') return HEARTBEAT_ACK;
  if (message && message.event === 'resume') {
    return JSON.stringify({ event: 'error', data: { code: 'RESUME_UNAVAILABLE', message: 'this peer keeps no history' } });
  }
  return JSON.stringify({ event: 'error', data: { code: 'UNKNOWN_EVENT', message: 'unknown event' } });
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const watchers = new Map(); // order_id -> Set of sockets
  const subscriber = new Redis(args.redisUrl);
  const commands = new Redis(args.redisUrl);

  subscriber.psubscribe(`${CHANNEL_PREFIX}*`);
  subscriber.on('pmessage', (_pattern, channel, payload) => {
    const sockets = watchers.get(channel.slice(CHANNEL_PREFIX.length));
    if (!sockets) return;
    let frame;
    try { frame = trackingUpdate(JSON.parse(payload)); } catch (e) { return; }
    for (const ws of sockets) {
      if (ws.pending) ws.pending.push(frame); else ws.send(frame);
    }
  });

  const wss = new WebSocketServer({
    noServer: true, clientTracking: true, perMessageDeflate: false, maxPayload: 4096,
    handleProtocols: (protocols) => (protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });

  const server = http.createServer((req, res) => {
    if (req.url === '/healthz') { res.writeHead(200, { 'Content-Type': 'text/plain' }); res.end('ok\n'); return; }
    res.writeHead(404, { 'Content-Type': 'application/json; charset=utf-8' });
    res.end(JSON.stringify({ error: 'NOT_FOUND', message: 'no such path' }));
  });

  server.on('upgrade', (req, socket, head) => {
    const match = PATH.exec(req.url.split('?')[0]);
    if (!match) return refuse(socket, 404, 'Not Found', 'NOT_FOUND', 'no such path');
    const protocols = offered(req);
    if (!protocols.includes(SUBPROTOCOL)) return refuse(socket, 400, 'Bad Request', 'BAD_REQUEST', `offer the ${SUBPROTOCOL} subprotocol`);
    if (!protocols.includes(`bearer.${args.secret}`)) return refuse(socket, 401, 'Unauthorized', 'UNAUTHORIZED', 'missing or wrong bearer.<token> subprotocol');
    wss.handleUpgrade(req, socket, head, (ws) => onOpen(ws, match[1]));
  });

  function onOpen(ws, orderId) {
    let sockets = watchers.get(orderId);
    if (!sockets) watchers.set(orderId, (sockets = new Set()));
    sockets.add(ws);
    ws.isAlive = true;
    ws.pending = []; // updates that arrive before the ack are held, then sent after it
    ws.on('pong', () => { ws.isAlive = true; });
    ws.on('message', (data, isBinary) => ws.send(answer(data, isBinary)));
    ws.on('close', () => {
      sockets.delete(ws);
      if (sockets.size === 0 && watchers.get(orderId) === sockets) watchers.delete(orderId);
    });
    ws.on('error', () => {});
    const connectionId = `ws_conn_${crypto.randomBytes(4).toString('hex')}`;
    commands.hgetall(STATE_PREFIX + orderId).then((state) => {
      ws.send(connectionAck(connectionId, orderId, state || {}));
      const held = ws.pending;
      ws.pending = null;
      for (const frame of held) ws.send(frame);
    }, () => ws.close(1011, 'internal_error'));
  }

  // One interval for every socket (the ws README's pattern): ping, terminate if no pong came.
  setInterval(() => {
    for (const ws of wss.clients) {
      if (!ws.isAlive) { ws.terminate(); continue; }
      ws.isAlive = false;
      ws.ping();
    }
  }, Number(args.pingInterval) * 1000);

  server.listen({ host: args.host, port: Number(args.port), backlog: 4096 }, () => {
    console.log(JSON.stringify({ event: 'listening', peer: 'node-ws', host: args.host, port: Number(args.port) }));
  });
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
}

main();
