// The tracking page's wording rules: pure functions (no DOM, no I/O), so each can be checked
// on its own from a browser console or a test: location case, times with zone and relative
// time, the progress strip's step, carrier names, and what a refused link tells the customer.

export const STATUS_TEXT = Object.freeze({
  shipped: "Shipped", in_transit: "In transit", out_for_delivery: "Out for delivery",
  delivered: "Delivered", exception: "Delivery exception", unknown: "Status unknown",
});

/** The progress strip, in the order a parcel goes through it. */
export const STEPS = Object.freeze(["shipped", "in_transit", "out_for_delivery", "delivered"]);

const CARRIER_NAMES = Object.freeze({ dhl: "DHL", fedex: "FedEx", ups: "UPS" });

export function carrierName(carrier) {
  if (!carrier) return "";
  return CARRIER_NAMES[String(carrier).toLowerCase()] || String(carrier).toUpperCase();
}

export function statusText(status) {
  return STATUS_TEXT[status] || (status ? String(status).replace(/_/g, " ") : "Waiting for the first scan");
}

/**
 * One case for every carrier: words a carrier shouts ("INDIANAPOLIS") become title case, a
 * 2-letter word in capitals stays as it is (a state or country code: "IN", "US"), and words
 * already in mixed or lower case are left alone ("McAllen", "2 stops away").
 */
export function formatLocation(text) {
  if (!text) return "";
  return String(text).replace(/\p{L}+/gu, (word) => {
    if (word.length <= 2 || word !== word.toUpperCase() || word === word.toLowerCase()) return word;
    return word[0] + word.slice(1).toLowerCase();
  });
}

const DAY = /^(\d{4})-(\d{2})-(\d{2})$/;

/** A Date for an ISO timestamp or a bare `YYYY-MM-DD` (that day, local midnight); or null. */
export function parseTime(value) {
  if (!value) return null;
  const day = DAY.exec(value);
  const date = day ? new Date(Number(day[1]), Number(day[2]) - 1, Number(day[3])) : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/**
 * "Oct 3, 2:02 PM EDT" in the viewer's zone (the year only when it is not this year); a bare
 * date (carriers often estimate a day, not a time) is that day, with no time and no zone.
 */
export function formatTime(value, { now = new Date(), locale, timeZone } = {}) {
  const date = parseTime(value);
  if (!date) return value || "";
  const options = { month: "short", day: "numeric", timeZone };
  const year = (d) => new Intl.DateTimeFormat("en", { year: "numeric", timeZone }).format(d);
  if (year(date) !== year(now)) options.year = "numeric";
  if (DAY.test(value)) {
    return new Intl.DateTimeFormat(locale, { ...options, weekday: "short", timeZone: undefined }).format(date);
  }
  return new Intl.DateTimeFormat(locale, {
    ...options, hour: "numeric", minute: "2-digit", timeZoneName: "short",
  }).format(date);
}

const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400],
  ["hour", 3600], ["minute", 60],
];

/** "5 minutes ago", "in 2 days", "just now"; "" for no time. A bare date counts in days. */
export function relativeTime(value, { now = new Date(), locale } = {}) {
  const date = parseTime(value);
  if (!date) return "";
  if (DAY.test(value)) {
    // calendar days: "tomorrow" is right for a day
    const format = new Intl.RelativeTimeFormat(locale, { numeric: "auto", style: "long" });
    const today = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const days = Math.round((date - today) / 86400000);
    return Math.abs(days) < 7 ? format.format(days, "day") : format.format(Math.round(days / 7), "week");
  }
  // elapsed time: "1 day ago" (23 hours ago may well have been today, not "yesterday")
  const format = new Intl.RelativeTimeFormat(locale, { numeric: "always", style: "long" });
  const seconds = (date.getTime() - now.getTime()) / 1000;
  if (Math.abs(seconds) < 45) return "just now";
  // the largest unit it nearly fills: 58 minutes is "1 hour", not "58 minutes"
  const [unit, size] = UNITS.find(([, length]) => Math.abs(seconds) >= length * 0.95) || ["minute", 60];
  return format.format(Math.round(seconds / size), unit);
}

/** How far the parcel got: the index in STEPS of the furthest status seen, -1 for none. */
export function progressStep(status, history = []) {
  let reached = STEPS.indexOf(status);
  for (const event of history) reached = Math.max(reached, STEPS.indexOf(event.status));
  return reached;
}

/** What the link's token says about itself: "missing", "malformed", "expired" or null. */
export function tokenProblem(token, nowSeconds = Date.now() / 1000) {
  if (!token) return "missing";
  const parts = String(token).split(".");
  if (parts.length !== 3) return "malformed";
  let claims;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    claims = JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, "=")));
  } catch (_) {
    return "malformed";
  }
  if (!claims || typeof claims !== "object") return "malformed";
  return typeof claims.exp === "number" && claims.exp <= nowSeconds ? "expired" : null;
}

const PROBLEMS = Object.freeze({
  expired: {
    title: "This tracking link has expired",
    text: "For your security, tracking links work for a limited time. Open the latest "
      + "shipping email or text from the shop, or sign in to your account, for a new link.",
  },
  damaged: {
    title: "This tracking link is incomplete",
    text: "Part of the link is missing or was changed. Open it again from your shipping "
      + "email or text, or copy the whole link, everything after “#” included.",
  },
  not_yours: {
    title: "This link is for a different order",
    text: "The tracking link you opened does not belong to this order. Open the link from "
      + "the email or text about this order, or sign in to your account to see your orders.",
  },
  not_found: {
    title: "We can't find this order",
    text: "Check that you opened the whole link from your shipping email or text. A new "
      + "order can take a little while to appear.",
  },
  query_token: {
    title: "Please open the link exactly as it was sent",
    text: "This address has the access code after “?token=”. For your security the page only "
      + "reads it after “#token=”, as in the link we sent you: open that link again, or "
      + "copy it whole into the address bar.",
  },
  no_order: {
    title: "No order in this address",
    text: "Open the tracking link from your shipping email or text.",
  },
});

/**
 * The customer's wording for why the page cannot show the order: `{kind, title, text}`.
 * `code` is the client's failure code (the API's error code, or TOKEN_EXPIRED after the pod's
 * close 1008); `token` words a 401 (expired link, or a damaged one).
 */
export function problemFor(code, token, nowSeconds = Date.now() / 1000) {
  let kind;
  if (code === "TOKEN_EXPIRED") kind = "expired";
  else if (code === "FORBIDDEN") kind = "not_yours";
  else if (code === "NOT_FOUND") kind = "not_found";
  else if (code === "UNAUTHORIZED") kind = tokenProblem(token, nowSeconds) === "expired" ? "expired" : "damaged";
  else if (PROBLEMS[code]) kind = code;
  else kind = "damaged";
  return { kind, ...PROBLEMS[kind] };
}
