// The tracking page: renders a TrackingClient's state. Configuration comes from the URL
// fragment (never the query string, which ends up in logs): #token=<jwt>&poll=30&hb=25&hbtimeout=10
import { TrackingClient } from "/static/tracking-client.js";

const STATUS_TEXT = {
  shipped: "Shipped", in_transit: "In transit", out_for_delivery: "Out for delivery",
  delivered: "Delivered", exception: "Delivery exception", unknown: "Status unknown",
};

/** Page options from the fragment: seconds in the URL, milliseconds for the client. */
export function pageOptions(hash) {
  const params = new URLSearchParams((hash || "").replace(/^#/, ""));
  const seconds = (name) => {
    const value = Number(params.get(name));
    return params.has(name) && Number.isFinite(value) && value > 0 ? value * 1000 : undefined;
  };
  return {
    token: params.get("token") || "",
    pollInterval: seconds("poll"),
    heartbeatInterval: seconds("hb"),
    heartbeatTimeout: seconds("hbtimeout"),
    reconnectDelay: seconds("reconnect"),
    // no WebSocket URL from the link: the socket goes where the REST answer's realtime.url
    // says, so a crafted link cannot send the token to another host
  };
}

function orderIdFromPath(pathname) {
  const match = /^\/orders\/([^/]+)\/?$/.exec(pathname);
  return match ? decodeURIComponent(match[1]) : null;
}

function formatTime(value) {
  if (!value) return "—";
  // a bare date (carriers often estimate a day, not a time) is shown as that day, in no zone
  const day = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (day) {
    const date = new Date(Number(day[1]), Number(day[2]) - 1, Number(day[3]));
    return date.toLocaleDateString(undefined, { dateStyle: "medium" });
  }
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return value;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function byId(id) { return document.getElementById(id); }

function setText(id, value) { byId(id).textContent = value ?? "—"; }

function indicatorText(state) {
  if (state.mode === "live") return "live";
  if (state.mode === "polling") return `updating every ${Number((state.pollInterval / 1000).toFixed(1))} s`;
  if (state.mode === "stopped") return "not updating";
  return "connecting…";
}

function render(state) {
  setText("order-id", state.order_id);
  const status = byId("status");
  status.textContent = STATUS_TEXT[state.status] || state.status || "—";
  status.dataset.status = state.status || "";
  setText("location", state.location || "—");
  setText("eta", formatTime(state.estimated_delivery));
  setText("last-update", formatTime(state.last_update));
  setText("carrier", state.carrier ? state.carrier.toUpperCase() : "—");
  setText("tracking-number", state.tracking_number || "");
  const indicator = byId("indicator");
  indicator.dataset.mode = state.mode;
  indicator.dataset.reason = state.modeReason || "";
  setText("indicator-text", indicatorText(state));
  renderTimeline(state.history);
  byId("tracking").setAttribute("aria-busy", "false");
}

function renderTimeline(history) {
  // newest first; one <li> per seq, built from scratch so nothing can appear twice
  const items = [...history].reverse().map((event) => {
    const li = document.createElement("li");
    li.dataset.seq = String(event.seq);
    const title = document.createElement("div");
    title.className = "event__status";
    title.textContent = STATUS_TEXT[event.status] || event.status;
    const meta = document.createElement("div");
    meta.className = "event__meta";
    meta.textContent = `${event.location || "—"} · ${formatTime(event.timestamp)}`;
    li.append(title, meta);
    return li;
  });
  byId("timeline").replaceChildren(...items);
}

function showNotice(text) {
  const notice = byId("notice");
  notice.textContent = text;
  notice.hidden = !text;
}

function main() {
  const orderId = orderIdFromPath(location.pathname);
  const options = pageOptions(location.hash);
  if (!orderId) { showNotice("No order in the address."); return; }
  if (!options.token) { showNotice("This tracking link has no access token."); return; }
  const client = new TrackingClient({ orderId, ...options });
  client.addEventListener("state", (event) => render(event.detail));
  client.addEventListener("failure", (event) => {
    if (event.detail.fatal) showNotice(event.detail.message);
  });
  globalThis.trackingClient = client; // for debugging from the console
  client.start();
}

main();
