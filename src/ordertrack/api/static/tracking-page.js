// The tracking page: renders a TrackingClient's state. Configuration comes from the URL
// fragment (never the query string, which ends up in logs): #token=<jwt>&poll=30&hb=25&hbtimeout=10
import { loadLanguage, translateDocument } from "/static/i18n.js";
import { reportView } from "/static/rollout-beacon.js";
import { TrackingClient } from "/static/tracking-client.js";
import {
  STEPS, carrierName, formatLocation, formatTime, problemFor, progressStep, relativeTime,
  statusText, tokenProblem,
} from "/static/tracking-format.js";

/** The page's language: `lang` (the catalog's) and `t` (key, params) -> text; set in main. */
const i18n = { lang: "en", t: (key) => key };
function t(key, params) { return i18n.t(key, params); }

/** How often relative times ("5 min. ago") are brought up to date. */
const RELATIVE_REFRESH_MS = 30000;

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

function byId(id) { return document.getElementById(id); }

function setText(id, value) { byId(id).textContent = value || "—"; }

function pollSeconds(state) { return Number((state.pollInterval / 1000).toFixed(1)); }

function indicatorText(state) {
  const seconds = pollSeconds(state);
  if (state.mode === "live") return t("indicator.live");
  if (state.mode === "stopped") return t("indicator.stopped");
  if (state.restProblem === "unreachable") return t("indicator.unreachable", { seconds });
  if (state.restProblem === "unavailable") return t("indicator.unavailable", { seconds });
  if (state.mode === "polling") return t("indicator.polling", { seconds });
  return t("indicator.connecting");
}

/** An absolute time with its zone and, beside it, the relative one; `seconds` adds the
 * seconds (two timeline entries that would otherwise read the same). */
function timeNode(value, { seconds = false } = {}) {
  const node = document.createElement("time");
  if (!value) { node.textContent = "—"; return node; }
  node.dateTime = value;
  node.textContent = formatTime(value, { locale: i18n.lang, seconds });
  const relative = relativeTime(value, { locale: i18n.lang });
  if (relative) {
    const span = document.createElement("span");
    span.className = "relative";
    span.textContent = ` (${relative})`;
    node.append(span);
  }
  return node;
}

function setTime(id, value) { byId(id).replaceChildren(timeNode(value)); }

function render(state) {
  const carrier = carrierName(state.carrier);
  const delivered = state.status === "delivered";
  byId("title").textContent = carrier ? t("page.heading_carrier", { carrier }) : t("page.heading");
  const number = byId("tracking-number");
  number.textContent = state.tracking_number ? t("page.tracking_number", { number: state.tracking_number }) : "";
  number.hidden = !state.tracking_number;
  document.title = state.tracking_number
    ? t("page.document_title", { status: statusText(state.status, t), carrier, number: state.tracking_number })
    : t("page.title");

  const status = byId("status");
  status.textContent = statusText(state.status, t);
  status.dataset.status = state.status || "";
  // a label alone: say what it means (the carrier has not got the parcel yet)
  byId("status-hint").textContent = state.status === "label_created" ? t("status.label_created.hint") : "";
  byId("status-hint").hidden = state.status !== "label_created";
  renderProgress(state);
  setText("location", formatLocation(state.location));
  // delivered: no estimate any more; the last update is the delivery
  byId("eta-row").hidden = delivered || !state.estimated_delivery;
  setTime("eta", state.estimated_delivery);
  byId("last-update-label").textContent = t(delivered ? "summary.delivered" : "summary.last_update");
  setTime("last-update", state.last_update);

  const indicator = byId("indicator");
  indicator.dataset.mode = state.mode;
  indicator.dataset.reason = state.modeReason || "";
  indicator.dataset.problem = state.mode === "live" ? "" : state.restProblem || "";
  setText("indicator-text", indicatorText(state));
  renderLimit(state);
  renderTimeline(state.history);
  // nothing to show yet (no answer so far): no empty card
  const known = Boolean(state.tracking_number) || state.history.length > 0;
  byId("summary").hidden = !known;
  byId("history").hidden = state.history.length === 0;
  byId("tracking").setAttribute("aria-busy", "false");
}

function renderProgress(state) {
  const reached = progressStep(state.status, state.history);
  const strip = byId("progress");
  strip.dataset.exception = state.status === "exception" ? "true" : "false";
  strip.querySelectorAll("li").forEach((li) => {
    const index = STEPS.indexOf(li.dataset.step);
    li.dataset.state = index < reached ? "done" : index === reached ? "current" : "todo";
    if (index === reached) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  });
}

/** The 4001 state (another tab or device took this page's live slot): say why the page is
 * not live and offer to go live again, which takes a slot the normal way. */
function renderLimit(state) {
  const limited = state.mode === "polling" && state.modeReason === "connection_limit";
  byId("limit").hidden = !limited;
  if (limited) byId("limit-text").textContent = t("limit.text", { seconds: pollSeconds(state) });
}

/** What an entry reads as (status, place, time): two that read alike get their seconds. */
function entryText(event, seconds) {
  return [statusText(event.status, t), formatLocation(event.location),
    formatTime(event.timestamp, { locale: i18n.lang, seconds })].join("|");
}

function renderTimeline(history) {
  // newest first; one <li> per seq, built from scratch so nothing can appear twice
  const counts = new Map();
  for (const event of history) {
    const key = entryText(event, false);
    counts.set(key, (counts.get(key) || 0) + 1);
  }
  const items = [...history].reverse().map((event) => {
    const li = document.createElement("li");
    li.dataset.seq = String(event.seq);
    li.dataset.status = event.status || "";
    const title = document.createElement("div");
    title.className = "event__status";
    title.textContent = statusText(event.status, t);
    const meta = document.createElement("div");
    meta.className = "event__meta";
    const where = formatLocation(event.location);
    const seconds = counts.get(entryText(event, false)) > 1;
    meta.append(where ? `${where} · ` : "", timeNode(event.timestamp, { seconds }));
    li.append(title, meta);
    return li;
  });
  byId("timeline").replaceChildren(...items);
}

/** Say why the page cannot show (or update) the order, in the customer's words. */
function showProblem(problem) {
  const notice = byId("notice");
  notice.dataset.kind = problem.kind;
  byId("notice-title").textContent = problem.title;
  byId("notice-text").textContent = problem.text;
  notice.hidden = false;
  byId("tracking").setAttribute("aria-busy", "false");
}

function stopIndicator() {
  const indicator = byId("indicator");
  indicator.dataset.mode = "stopped";
  setText("indicator-text", t("indicator.stopped"));
}

async function main() {
  Object.assign(i18n, await loadLanguage());
  translateDocument(document, i18n.lang, t);
  document.title = t("page.title");
  const orderId = orderIdFromPath(location.pathname);
  const options = pageOptions(location.hash);
  if (new URLSearchParams(location.search).has("token")) {
    // a token in the query string has been in the server's logs: drop it from the address
    // bar (and the history) and explain how the link works; never use it
    history.replaceState(null, "", location.pathname + location.hash);
    if (!options.token) { showProblem(problemFor("query_token", "", t)); stopIndicator(); return; }
  }
  if (!orderId) { showProblem(problemFor("no_order", "", t)); stopIndicator(); return; }
  if (["missing", "malformed"].includes(tokenProblem(options.token))) {
    showProblem(problemFor("UNAUTHORIZED", options.token, t));
    stopIndicator();
    return;
  }
  const client = new TrackingClient({ orderId, ...options });
  let last = null;
  client.addEventListener("state", (event) => { last = event.detail; render(last); });
  client.addEventListener("failure", (event) => {
    if (event.detail.fatal) showProblem(problemFor(event.detail.code, options.token, t));
  });
  // the rollout: this view counted in its variant (the flag's first answer), its stay
  // reported when the page goes away
  let reported = false;
  client.addEventListener("state", () => {
    if (reported || !client.realtime) return;
    reported = true;
    reportView({ orderId, token: options.token, realtime: Boolean(client.realtime.enabled) });
  });
  byId("go-live").addEventListener("click", () => client.goLive());
  setInterval(() => { if (last) render(last); }, RELATIVE_REFRESH_MS);
  globalThis.trackingClient = client; // for debugging from the console
  client.start();
}

main();
