// Artillery processor for scenario.yml: one virtual user = one watcher of one order.
// connect: the path and subprotocols from the payload row (order_id, token);
// listen: our own message listener, attached before any frame can arrive, that records
//   establishment (TCP connect -> connection_ack), delivery (publish -> receive, from the
//   `bench:<epoch seconds>` location our harness publishes) and heartbeat round trips;
// heartbeat: {"event":"heartbeat"}, timed until its heartbeat_ack.
'use strict';

const WebSocket = require('ws'); // the copy Artillery's engine uses (ws 7, hoisted)

const SUBPROTOCOL = 'vantage-tracking-v1';
const LOCATION_PREFIX = 'bench:';

// Artillery's flow reaches `listen` one tick after 'open', and a pod may send its ack in the
// same TCP read as the 101: such a frame is emitted with no listener and lost. Keep frames
// that arrive before any listener, and `listen` replays them.
const emit = WebSocket.prototype.emit;
WebSocket.prototype.emit = function (event, ...args) {
  if (event === 'message' && this.listenerCount('message') === 0) {
    (this.earlyMessages || (this.earlyMessages = [])).push(args[0]);
    return false;
  }
  return emit.call(this, event, ...args);
};

function connect(wsArgs, context, done) {
  const base = wsArgs.target.replace(/\/+$/, '');
  wsArgs.target = `${base}/ws/orders/${encodeURIComponent(context.vars.order_id)}/track`;
  wsArgs.subprotocols = [SUBPROTOCOL, `bearer.${context.vars.token}`];
  context.vars.connectStartedAt = performance.now();
  done();
}

function listen(context, events, done) {
  const ws = context.ws;
  if (ws.protocol !== SUBPROTOCOL) events.emit('counter', 'ordertrack.wrong_subprotocol', 1);
  const onMessage = (data) => {
    let frame;
    try { frame = JSON.parse(data.toString()); } catch (e) {
      events.emit('counter', 'ordertrack.invalid_frames', 1);
      return;
    }
    const now = performance.now();
    if (frame.event === 'connection_ack') {
      if (!context.vars.acked) {
        context.vars.acked = true;
        events.emit('histogram', 'ordertrack.establishment_ms', now - context.vars.connectStartedAt);
        events.emit('counter', 'ordertrack.acks', 1);
      }
    } else if (frame.event === 'tracking_update') {
      events.emit('counter', 'ordertrack.updates', 1);
      const location = frame.data && frame.data.location;
      if (typeof location === 'string' && location.startsWith(LOCATION_PREFIX)) {
        const sentAt = parseFloat(location.slice(LOCATION_PREFIX.length));
        if (!Number.isNaN(sentAt)) events.emit('histogram', 'ordertrack.delivery_ms', performance.timeOrigin + now - sentAt * 1000);
      }
    } else if (frame.event === 'heartbeat_ack') {
      if (context.vars.heartbeatSentAt !== undefined) {
        events.emit('histogram', 'ordertrack.heartbeat_rtt_ms', now - context.vars.heartbeatSentAt);
        context.vars.heartbeatSentAt = undefined;
      }
    } else if (frame.event === 'error') {
      events.emit('counter', `ordertrack.error.${frame.data && frame.data.code}`, 1);
    }
  };
  ws.on('message', onMessage);
  for (const data of ws.earlyMessages || []) onMessage(data);
  ws.earlyMessages = undefined;
  ws.on('close', (code) => {
    if (!context.vars.finishing) events.emit('counter', `ordertrack.closed_by_server.${code}`, 1);
  });
  done();
}

function heartbeat(context, events, done) {
  if (context.vars.heartbeatSentAt !== undefined) events.emit('counter', 'ordertrack.heartbeat_unanswered', 1);
  context.vars.heartbeatSentAt = performance.now();
  events.emit('counter', 'websocket.messages_sent', 1);
  context.ws.send('{"event":"heartbeat"}', done);
}

// Close with 1000 ourselves: Artillery's own close() sends a close frame without a code, which
// our pod (at the time of writing) answers with the invalid close code 0, and the ws library's
// error on that crashes Artillery's worker ("Callback was already called").
function finish(context, events, done) {
  if (!context.vars.acked) events.emit('counter', 'ordertrack.no_ack', 1);
  context.vars.finishing = true;
  context.ws.close(1000);
  done();
}

module.exports = { connect, listen, heartbeat, finish };
