// The tracking page's language: one message catalog per language under /static/i18n/
// (`en.json`, `de.json`, ...; `languages.json` lists those the page ships), chosen from the
// browser's preferences (navigator.languages), English otherwise. A translator adds or edits
// a catalog and its line in languages.json; no code changes. Dates and relative times come
// from the browser's own Intl.DateTimeFormat / Intl.RelativeTimeFormat in the same language.

export const FALLBACK = "en";

/** The first of `preferred` (BCP 47 tags, most wanted first) the page ships, by its primary
 * language ("de-AT" -> "de"); FALLBACK when none is shipped. */
export function chooseLanguage(preferred, available) {
  for (const tag of preferred || []) {
    const primary = String(tag).toLowerCase().split("-")[0];
    if (available.includes(primary)) return primary;
  }
  return FALLBACK;
}

/** `{name}` placeholders filled from `params`. */
export function fill(text, params = {}) {
  return String(text).replace(/\{(\w+)\}/g, (whole, name) => (name in params ? String(params[name]) : whole));
}

/** A translator for `messages`, falling back to `fallback` (English), then to the key. */
export function translator(messages, fallback = {}) {
  return (key, params) => {
    const text = messages[key] ?? fallback[key];
    return text === undefined ? key : fill(text, params);
  };
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-cache" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

/** `{lang, t}` for this browser: the catalog of its preferred shipped language (English
 * strings fill any gap a catalog has). A catalog that cannot load means English. */
export async function loadLanguage(preferred = globalThis.navigator ? navigator.languages : [],
                                   base = "/static/i18n") {
  let english = {};
  try { english = await fetchJson(`${base}/${FALLBACK}.json`); } catch (_) { /* keys shown */ }
  let available = [FALLBACK];
  try { available = await fetchJson(`${base}/languages.json`); } catch (_) { /* English */ }
  const lang = chooseLanguage(preferred, available);
  let messages = english;
  if (lang !== FALLBACK) {
    try { messages = await fetchJson(`${base}/${lang}.json`); } catch (_) { return { lang: FALLBACK, t: translator(english) }; }
  }
  return { lang, t: translator(messages, english) };
}

/** Every element with `data-i18n="key"` gets its text; `data-i18n-label` its aria-label. */
export function translateDocument(doc, lang, t) {
  doc.documentElement.lang = lang;
  doc.querySelectorAll("[data-i18n]").forEach((node) => { node.textContent = t(node.dataset.i18n); });
  doc.querySelectorAll("[data-i18n-label]").forEach((node) => {
    node.setAttribute("aria-label", t(node.dataset.i18nLabel));
  });
}
