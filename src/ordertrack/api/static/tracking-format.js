// The tracking page's wording rules: pure functions (no DOM, no I/O), so each can be checked
// on its own from a browser console or a test: location case, times with zone and relative
// time, the progress strip's step, carrier names, and what a refused link tells the customer.
// Words come from the page's message catalog through `t` (i18n.js); dates and relative times
// from the browser's Intl in the page's `locale`.

/** The statuses the page has words for (status.<name> in the catalogs). */
export const STATUSES = Object.freeze([
  "label_created", "shipped", "in_transit", "out_for_delivery", "delivered", "exception", "unknown",
]);

/** The progress strip, in the order a parcel goes through it (a label alone reaches none). */
export const STEPS = Object.freeze(["shipped", "in_transit", "out_for_delivery", "delivered"]);

const CARRIER_NAMES = Object.freeze({ dhl: "DHL", fedex: "FedEx", ups: "UPS" });

export function carrierName(carrier) {
  if (!carrier) return "";
  return CARRIER_NAMES[String(carrier).toLowerCase()] || String(carrier).toUpperCase();
}

/** The customer's word for a status, from the catalog (`t`); an unknown code as it came. */
export function statusText(status, t) {
  if (!status) return t("status.none");
  return STATUSES.includes(status) ? t(`status.${status}`) : String(status).replace(/_/g, " ");
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
export function formatTime(value, { now = new Date(), locale, timeZone, seconds = false } = {}) {
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
    ...(seconds ? { second: "2-digit" } : {}),
  }).format(date);
}

const UNITS = [
  ["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400],
  ["hour", 3600], ["minute", 60],
];

/**
 * "5 minutes ago", "in 25 seconds", "in 2 days", "now" in `locale`, from the browser's
 * Intl.RelativeTimeFormat (no hand-written phrases); "" for no time. A time ahead is always
 * "in ...", never "now". A bare date counts in calendar days ("tomorrow").
 */
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
  if (seconds <= 0 && seconds > -10) {
    return new Intl.RelativeTimeFormat(locale, { numeric: "auto" }).format(0, "second");
  }
  if (Math.abs(seconds) < 45) {
    // never 0 for a time ahead: "in 1 second", not "now"
    const whole = seconds > 0 ? Math.max(1, Math.round(seconds)) : Math.round(seconds);
    return format.format(whole, "second");
  }
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

const PROBLEM_KINDS = Object.freeze(["expired", "damaged", "not_yours", "not_found", "query_token", "no_order"]);

/**
 * The customer's wording for why the page cannot show the order: `{kind, title, text}`, from
 * the catalog (`t`). `code` is the client's failure code (the API's error code, or
 * TOKEN_EXPIRED after the pod's close 1008); `token` words a 401 (expired link, or a damaged
 * one). FORBIDDEN: the token is good but names another account than the order's owner.
 */
export function problemFor(code, token, t, nowSeconds = Date.now() / 1000) {
  let kind;
  if (code === "TOKEN_EXPIRED") kind = "expired";
  else if (code === "FORBIDDEN") kind = "not_yours";
  else if (code === "NOT_FOUND") kind = "not_found";
  else if (code === "UNAUTHORIZED") kind = tokenProblem(token, nowSeconds) === "expired" ? "expired" : "damaged";
  else if (PROBLEM_KINDS.includes(code)) kind = code;
  else kind = "damaged";
  return { kind, title: t(`problem.${kind}.title`), text: t(`problem.${kind}.text`) };
}
