// ordertrack tracking client: live order tracking over WebSocket, REST polling as the fallback.
//
// Usable on its own (no build step, no dependencies):
//
//   import { TrackingClient } from "/static/tracking-client.js";
//   const client = new TrackingClient({ orderId, token });
//   client.addEventListener("state", (e) => render(e.detail));   // snapshot after each change
//   client.addEventListener("mode", (e) => show(e.detail.mode)); // "connecting" | "live" | "polling" | "stopped"
//   client.addEventListener("trackingevent", (e) => ...);        // each new event, once
//   client.addEventListener("failure", (e) => ...);              // { code, message, fatal }
//   client.start();  ...  client.stop();
//
// Protocol (DESIGN.md, wire contract): subprotocols ["vantage-tracking-v1", "bearer.<jwt>"];
// server messages {"event", "data"}: connection_ack, tracking_update, heartbeat_ack, error.
// The client heartbeats {"event":"heartbeat"} every 25 s and treats a missing heartbeat_ack
// within 10 s as a drop (as it does a connection_ack that does not come within 10 s of opening
// the socket); after a drop it reconnects (1 s, exponential backoff, jitter) and
// sends {"event":"resume","data":{"last_seq":N}} right after open. While disconnected it polls
// REST every 30 s with X-Fallback-Reason (`restProblem` in the state says when those polls fail:
// "unreachable" for no answer at all, "unavailable" for an error answer; it keeps trying).
// Close 4001 (another tab holds the slot): REST polling, never reconnect by itself (`goLive()`
// takes a slot again when the customer asks). Close 4003 (kill
// switch): REST polling until a REST answer says `realtime.enabled: true` again. Close 1008
// (`token_expired`): final for this token, the client stops with failure TOKEN_EXPIRED.
// Every event has a seq; an event is applied (and rendered) once, whatever path brought it.
// `error` RESYNC_REQUIRED (a resume from a seq the pod's order never reached, with its `seq`):
// the client takes that seq as its own, drops events past it and refetches over REST.
// The history is shown by scan time (then seq); a late scan (older than the order's last
// update) joins it in its place and never moves the current status, place or time back.

export const SUBPROTOCOL = "vantage-tracking-v1";

export const DEFAULTS = Object.freeze({
  pollInterval: 30000, // ms between REST polls while not live
  heartbeatInterval: 25000, // ms between application heartbeats
  heartbeatTimeout: 10000, // ms to wait for heartbeat_ack before treating the socket as dead
  reconnectDelay: 1000, // ms before the first reconnect
  reconnectMax: 30000, // ms cap of the backoff
  jitter: 0.3, // fraction of the delay added at random
});

export const CLOSE = Object.freeze({
  GOING_AWAY: 1001,
  TOKEN_EXPIRED: 1008,
  HEARTBEAT_TIMEOUT: 4000,
  CONNECTION_LIMIT: 4001,
  INTERNAL_ERROR: 4002,
  FEATURE_DISABLED: 4003,
});

/** Delay before reconnect attempt `attempt` (0-based): base * 2^attempt, capped, plus jitter. */
export function backoffDelay(attempt, base, max, jitter = 0.3, random = Math.random) {
  const delay = Math.min(max, base * 2 ** Math.max(0, attempt));
  return Math.round(delay * (1 + jitter * random()));
}

/**
 * What a close code means for the client: "stop" (the token is no good: stop for good),
 * "fallback" (poll, never reconnect), "until_enabled" (poll until REST says realtime is on),
 * "soon" (reconnect after the base delay), "backoff" (reconnect with exponential backoff).
 */
export function closeAction(code) {
  if (code === CLOSE.TOKEN_EXPIRED) return "stop";
  if (code === CLOSE.CONNECTION_LIMIT) return "fallback";
  if (code === CLOSE.FEATURE_DISABLED) return "until_enabled";
  if (code === CLOSE.GOING_AWAY) return "soon";
  return "backoff";
}

/**
 * History order: by scan time, then seq. Carriers push late scans (an older scan arriving
 * after a newer one gets the next seq); the history reads as the shipment went.
 */
export function timelineOrder(a, b) {
  const ta = Date.parse(a.timestamp);
  const tb = Date.parse(b.timestamp);
  if (ta !== tb && !Number.isNaN(ta) && !Number.isNaN(tb)) return ta - tb;
  return a.seq - b.seq;
}

/** True when a scan at `timestamp` is older than the order's `lastUpdate` (a late scan:
 * it joins the history, but the current status, place and time stay with the newer one). */
export function isLate(timestamp, lastUpdate) {
  const t = Date.parse(timestamp);
  const last = Date.parse(lastUpdate);
  return !Number.isNaN(t) && !Number.isNaN(last) && t < last;
}

/** The X-Fallback-Reason a close code leads to. */
export function fallbackReason(code) {
  if (code === CLOSE.CONNECTION_LIMIT) return "connection_limit";
  if (code === CLOSE.FEATURE_DISABLED) return "feature_disabled";
  return "websocket_disconnected";
}

export class TrackingClient extends EventTarget {
  constructor(options) {
    super();
    if (!options || !options.orderId) throw new Error("TrackingClient needs an orderId");
    this.orderId = String(options.orderId);
    this.token = options.token || "";
    this.apiBase = (options.apiBase || "").replace(/\/$/, "");
    this.wsUrl = options.wsUrl || null; // overrides the REST answer's realtime.url
    this.config = { ...DEFAULTS };
    for (const name of Object.keys(DEFAULTS)) {
      if (options[name] !== undefined && options[name] !== null) this.config[name] = Number(options[name]);
    }
    this.WebSocketImpl = options.WebSocket || globalThis.WebSocket;
    this.fetchImpl = options.fetch || globalThis.fetch.bind(globalThis);

    this.order = {
      order_id: this.orderId, tracking_number: null, carrier: null, status: null,
      location: null, last_update: null, estimated_delivery: null,
    };
    this.events = new Map(); // seq -> {seq, status, location, timestamp}
    this.lastSeq = 0;
    this.realtime = null; // {enabled, url} from the last REST answer
    this.mode = "connecting";
    this.modeReason = null;
    this.connectionId = null;
    this.restProblem = null; // null | "unreachable" | "unavailable": how the last REST call failed

    this._ws = null;
    this._stopped = false;
    this._permanentFallback = null; // reason, once the server said never to reconnect (4001)
    this._attempt = 0;
    this._timers = {
      reconnect: null, poll: null, firstPoll: null, heartbeat: null, ack: null, handshake: null,
    };
    this._pollReason = null;
  }

  // --- lifecycle ---------------------------------------------------------------------------

  async start() {
    this._stopped = false;
    const answer = await this.refresh(null);
    if (this._stopped) return;
    if (answer && answer.realtime && answer.realtime.enabled) {
      this._connect();
    } else if (answer) {
      this._startPolling("feature_disabled");
    } else {
      // REST failed (not fatally): try the socket anyway, poll meanwhile
      this._startPolling("websocket_disconnected");
      if (this.wsUrl) this._connect();
    }
  }

  /** Stop for good; `reason` is the mode's reason ("client_stop", or the failure's code). */
  stop(reason = "client_stop") {
    this._stopped = true;
    this._stopPolling();
    this._clearHeartbeat();
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    if (this._ws) {
      const ws = this._ws;
      this._detach(ws);
      try { ws.close(1000, "client stop"); } catch (_) { /* already closed */ }
    }
    this._setMode("stopped", reason);
  }

  /** Go live again after a 4001 (another tab or device took the slot): takes a slot the
   * normal way, which may close the oldest other connection of this user. */
  goLive() {
    if (this._stopped || this._ws) return;
    this._permanentFallback = null;
    this._attempt = 0;
    this._connect();
  }

  snapshot() {
    const history = [...this.events.values()].sort(timelineOrder);
    return {
      ...this.order, seq: this.lastSeq, history, mode: this.mode, modeReason: this.modeReason,
      pollInterval: this.config.pollInterval, connectionId: this.connectionId,
      restProblem: this.restProblem,
    };
  }

  // --- REST --------------------------------------------------------------------------------

  /** Fetch the REST answer once and merge it. Returns the answer, or null on failure. */
  async refresh(reason) {
    const headers = { Accept: "application/json" };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (reason) headers["X-Fallback-Reason"] = reason;
    const url = `${this.apiBase}/api/v2/orders/${encodeURIComponent(this.orderId)}/tracking`;
    let response;
    try {
      response = await this.fetchImpl(url, { headers, cache: "no-store" });
    } catch (error) {
      this._setRestProblem("unreachable");
      this._fail("NETWORK", `tracking request failed: ${error}`, false);
      return null;
    }
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok || !body) {
      const code = (body && body.error) || `HTTP_${response.status}`;
      const message = (body && body.message) || response.statusText;
      // 401/403/404 will not get better by retrying: stop and say why
      const fatal = [401, 403, 404].includes(response.status);
      this._fail(code, message, fatal, response.status);
      if (fatal) this.stop(code);
      else this._setRestProblem("unavailable");
      return null;
    }
    if (this._stopped) return body;
    this.realtime = body.realtime || null;
    this._setRestProblem(null);
    this._mergeAnswer(body);
    // polling with no socket and no reconnect pending (realtime was off, REST failed at start,
    // or a 4003 closed the socket) and realtime is on now: go live again. Never after a 4001.
    if (this.mode === "polling" && !this._permanentFallback && !this._ws
        && this._timers.reconnect === null && this.realtime && this.realtime.enabled) {
      this._connect();
    }
    return body;
  }

  _mergeAnswer(doc) {
    for (const field of ["tracking_number", "carrier"]) {
      if (doc[field] !== undefined && doc[field] !== null) this.order[field] = doc[field];
    }
    let changed = false;
    const items = Array.isArray(doc.history) ? doc.history : [];
    items.forEach((item, index) => {
      const seq = Number.isInteger(item.seq) ? item.seq : index + 1;
      if (this._addEvent({ seq, status: item.status, location: item.location ?? null, timestamp: item.timestamp })) {
        changed = true;
      }
    });
    const docSeq = Number.isInteger(doc.seq) ? doc.seq : 0;
    if (docSeq >= this.lastSeq) {
      this.order.status = doc.status ?? this.order.status;
      this.order.last_update = doc.last_update ?? this.order.last_update;
      this.order.estimated_delivery = doc.estimated_delivery ?? this.order.estimated_delivery;
      // the place of the newest scan by time (the answer's status and last_update are its)
      const latest = [...this.events.values()].sort(timelineOrder).pop();
      if (latest) this.order.location = latest.location;
      this.lastSeq = docSeq;
      changed = true;
    }
    if (changed) this._emitState();
  }

  _setRestProblem(problem) {
    if (this.restProblem === problem) return;
    this.restProblem = problem;
    this._emitState();
  }

  /** Record an event once; true when it was new. */
  _addEvent(event) {
    if (this.events.has(event.seq)) return false;
    this.events.set(event.seq, event);
    this.dispatchEvent(new CustomEvent("trackingevent", { detail: event }));
    return true;
  }

  // --- WebSocket ---------------------------------------------------------------------------

  _socketUrl() {
    if (this.wsUrl) {
      return this.wsUrl.replace("{order_id}", encodeURIComponent(this.orderId));
    }
    return this.realtime && this.realtime.url;
  }

  _connect() {
    if (this._stopped || this._permanentFallback || this._ws) return;
    if (this.realtime && this.realtime.enabled === false) {
      // the REST answer says no realtime for this user (flag off, or no pod can push): poll;
      // `refresh` connects once an answer says realtime is enabled again
      this._startPolling(this._pollReason || "feature_disabled");
      return;
    }
    const url = this._socketUrl();
    if (!url) {
      this._startPolling("websocket_disconnected");
      return;
    }
    if (this.mode !== "polling") this._setMode("connecting", null);
    let ws;
    try {
      ws = new this.WebSocketImpl(url, [SUBPROTOCOL, `bearer.${this.token}`]);
    } catch (error) {
      this._fail("WEBSOCKET", `cannot open WebSocket: ${error}`, false);
      this._onDisconnected(1006);
      return;
    }
    this._ws = ws;
    // a pod that accepts TCP but never answers (frozen, black-holed) must not leave us waiting
    // without polling: no connection_ack within the heartbeat timeout is a drop like any other
    this._timers.handshake = setTimeout(() => this._heartbeatTimedOut(), this.config.heartbeatTimeout);
    ws.onopen = () => {
      // resume first: the pod replays what we missed, in order, before any live event
      this._send({ event: "resume", data: { last_seq: this.lastSeq } });
      this._startHeartbeat();
    };
    ws.onmessage = (message) => this._onMessage(message.data);
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this._detach(ws);
      this._onDisconnected(event.code);
    };
    ws.onerror = () => { /* a close event follows */ };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this._ws === ws) this._ws = null;
    clearTimeout(this._timers.handshake);
    this._timers.handshake = null;
    this._clearHeartbeat();
  }

  _send(message) {
    if (this._ws && this._ws.readyState === 1) this._ws.send(JSON.stringify(message));
  }

  _onMessage(raw) {
    let message;
    try { message = JSON.parse(raw); } catch (_) { return; }
    const data = message && message.data ? message.data : {};
    switch (message && message.event) {
      case "connection_ack":
        clearTimeout(this._timers.handshake);
        this._timers.handshake = null;
        this._attempt = 0;
        this.connectionId = data.connection_id || null;
        if (data.carrier) this.order.carrier = data.carrier;
        this._stopPolling();
        this._setMode("live", null);
        // the pod is ahead of us: fill the gap from REST (resume replay may too; dedupe by seq)
        if (Number.isInteger(data.seq) && data.seq > this.lastSeq) this.refresh(null);
        break;
      case "tracking_update":
        this._applyUpdate(data);
        break;
      case "heartbeat_ack":
        clearTimeout(this._timers.ack);
        this._timers.ack = null;
        break;
      case "error":
        if (data.code === "RESUME_UNAVAILABLE") {
          this.refresh("resume_unavailable");
        } else if (data.code === "RESYNC_REQUIRED") {
          this._resync(data.seq);
        } else {
          this._fail(data.code || "SERVER_ERROR", data.message || "server error", false);
        }
        break;
      default:
        break;
    }
  }

  /**
   * The pod's seq for the order is behind ours (its Redis lost events, e.g. a restart without
   * persistence): take its seq from now on, forget what we hold past it (the numbers will be
   * reused) and refetch over REST.
   */
  _resync(seq) {
    const serverSeq = Number.isInteger(seq) && seq >= 0 ? seq : 0;
    for (const held of [...this.events.keys()]) if (held > serverSeq) this.events.delete(held);
    this.lastSeq = serverSeq;
    this._emitState();
    this.refresh(null);
  }

  _applyUpdate(data) {
    const seq = Number(data.seq);
    if (!Number.isInteger(seq) || seq <= 0) return;
    if (this.events.has(seq) || seq <= this.lastSeq) return; // seen already
    const gap = seq > this.lastSeq + 1;
    this._addEvent({ seq, status: data.status, location: data.location ?? null, timestamp: data.timestamp });
    if (!isLate(data.timestamp, this.order.last_update)) {
      this.order.status = data.status ?? this.order.status;
      this.order.location = data.location ?? null;
      this.order.last_update = data.timestamp ?? this.order.last_update;
      if (data.estimated_delivery) this.order.estimated_delivery = data.estimated_delivery;
    }
    if (data.carrier) this.order.carrier = data.carrier;
    this.lastSeq = seq;
    this._emitState();
    if (gap) this.refresh(null); // events between lastSeq and seq went missing: fetch them
  }

  _startHeartbeat() {
    this._clearHeartbeat();
    this._timers.heartbeat = setInterval(() => {
      this._send({ event: "heartbeat" });
      if (this._timers.ack === null) {
        this._timers.ack = setTimeout(() => this._heartbeatTimedOut(), this.config.heartbeatTimeout);
      }
    }, this.config.heartbeatInterval);
  }

  _clearHeartbeat() {
    clearInterval(this._timers.heartbeat);
    clearTimeout(this._timers.ack);
    this._timers.heartbeat = null;
    this._timers.ack = null;
  }

  _heartbeatTimedOut() {
    const ws = this._ws;
    if (!ws) return;
    // do not wait for a closing handshake a dead peer will never answer
    this._detach(ws);
    try { ws.close(CLOSE.HEARTBEAT_TIMEOUT, "heartbeat timeout"); } catch (_) { /* ignore */ }
    this._onDisconnected(CLOSE.HEARTBEAT_TIMEOUT);
  }

  _onDisconnected(code) {
    this.connectionId = null;
    if (this._stopped) return;
    const action = closeAction(code);
    const reason = fallbackReason(code);
    if (action === "stop") {
      // the pod closed because the token expired: REST says 401 to it as well, so stop here
      this._fail("TOKEN_EXPIRED", "the tracking token has expired", true);
      this.stop("TOKEN_EXPIRED");
      return;
    }
    if (action === "until_enabled") {
      // the kill switch: no socket until a REST answer says realtime is enabled again
      this.realtime = { ...(this.realtime || {}), enabled: false };
      clearTimeout(this._timers.reconnect);
      this._timers.reconnect = null;
      this._startPolling(reason);
      return;
    }
    if (action === "fallback") {
      this._permanentFallback = reason;
      clearTimeout(this._timers.reconnect);
      this._timers.reconnect = null;
      this._startPolling(reason);
      return;
    }
    this._startPolling(reason);
    const delay = action === "soon"
      ? backoffDelay(0, this.config.reconnectDelay, this.config.reconnectMax, this.config.jitter)
      : backoffDelay(this._attempt++, this.config.reconnectDelay, this.config.reconnectMax, this.config.jitter);
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      this._connect();
    }, delay);
  }

  // --- polling -----------------------------------------------------------------------------

  _startPolling(reason) {
    this._pollReason = reason;
    this._setMode("polling", reason);
    if (this._timers.poll !== null) return;
    // a first poll soon (jittered, so a dead pod's clients do not all arrive at once) ...
    const first = Math.min(this.config.pollInterval, 1000) * Math.random();
    this._timers.firstPoll = setTimeout(() => this.refresh(this._pollReason), first);
    // ... then one per interval
    this._timers.poll = setInterval(() => this.refresh(this._pollReason), this.config.pollInterval);
  }

  _stopPolling() {
    clearTimeout(this._timers.firstPoll);
    clearInterval(this._timers.poll);
    this._timers.firstPoll = null;
    this._timers.poll = null;
    this._pollReason = null;
  }

  // --- notifications -----------------------------------------------------------------------

  _setMode(mode, reason) {
    if (this.mode === mode && this.modeReason === reason) return;
    this.mode = mode;
    this.modeReason = reason;
    this.dispatchEvent(new CustomEvent("mode", { detail: { mode, reason } }));
    this._emitState();
  }

  _emitState() {
    this.dispatchEvent(new CustomEvent("state", { detail: this.snapshot() }));
  }

  _fail(code, message, fatal, status = null) {
    this.dispatchEvent(new CustomEvent("failure", { detail: { code, message, fatal, status } }));
  }
}
