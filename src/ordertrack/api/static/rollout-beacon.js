// The rollout's measurements from the page (README, "The rollout's success criteria"): the
// view is counted once in its variant (`realtime`: the flag served true, the WebSocket page;
// `polling`: the control group), and when the page goes away (`pagehide`: closed, reloaded,
// navigated off, or put in the back-forward cache) `navigator.sendBeacon` reports how long it
// stayed. Nothing else about the visitor is sent: the view's id and a number of seconds.

export const VIEWS_PATH = (orderId) => `/api/v2/orders/${encodeURIComponent(orderId)}/views`;
export const STAYS_PATH = "/api/v2/page-stays";

/** The variant a view belongs to, from the flag's answer. */
export function variantOf(realtimeEnabled) { return realtimeEnabled ? "realtime" : "polling"; }

/** Seconds since the page started loading (performance's clock: no wall-clock jumps). */
export function staySeconds(nowMs = performance.now()) { return Math.round(nowMs) / 1000; }

/** Count this view, then report its stay once on `pagehide`. Failures are silent: measuring
 * must never disturb tracking. Resolves to the view id, or null. */
export async function reportView({ orderId, token, realtime, fetchImpl = globalThis.fetch }) {
  const variant = variantOf(realtime);
  let viewId = null;
  try {
    const response = await fetchImpl(VIEWS_PATH(orderId), {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ variant }),
      cache: "no-store",
    });
    if (response.ok) viewId = (await response.json()).view_id || null;
  } catch (_) { /* not counted: the page works the same */ }
  if (!viewId) return null;
  let sent = false;
  globalThis.addEventListener("pagehide", () => {
    if (sent) return;
    sent = true;
    const body = new Blob([JSON.stringify({ view_id: viewId, seconds: staySeconds() })],
      { type: "application/json" });
    navigator.sendBeacon(STAYS_PATH, body);
  });
  document.documentElement.dataset.viewId = viewId; // for tests and the curious
  document.documentElement.dataset.variant = variant;
  return viewId;
}
