"""`FlagSource`: the process's view of its flags, evaluated through the OpenFeature SDK.

The pod decides upgrades synchronously (picows calls its listener factory inline) and one
evaluation through the SDK costs ~11 us (the Redis provider) to ~0.3 ms (flagd's) of the pod's
one core, so decisions are cached per evaluation context, and a decision the provider calls
context-free (OpenFeature reason `STATIC` or `DISABLED`: no targeting rule was involved) for
every context at once, as flagd's own RPC resolver caches `STATIC` ones. Both caches are
dropped on every configuration change.

What it decides:
- `realtime_enabled(user_id, carrier, client_class)`: the kill switch. Before the order's
  carrier is known (at the upgrade) it is "enabled for one of the carriers"; the pod checks
  again with the carrier once it has read the order's state.
- `heartbeat(client_class)`: (ping interval, pong timeout) in seconds, the numeric flags
  `ws_ping_interval_seconds` / `ws_pong_timeout_seconds`, evaluated per client class and region
  (not per user), the environment's values as defaults.

Provider events arrive on OpenFeature's worker threads and are handed to the event loop. A
provider error (a broken file, LaunchDarkly unreachable, an unreadable Redis document) is
logged and counted, and the last good decision stays; a process that never had a decision
answers the code default: realtime off (clients use REST), heartbeats from the environment.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Callable
from typing import cast

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from prometheus_client import CollectorRegistry, Counter, Gauge

from ordertrack.flags.document import FLAG_NAME
from ordertrack.flags.providers import RedisFlagProvider

log = logging.getLogger("ordertrack.flags")

PING_INTERVAL_FLAG = "ws_ping_interval_seconds"
PONG_TIMEOUT_FLAG = "ws_pong_timeout_seconds"
#: a heartbeat flag outside this range is ignored (logged once per change) for the default
HEARTBEAT_RANGE = (0.05, 3600.0)
#: bound on cached decisions (one per user and client class); cleared whole when reached
DECISIONS_MAX = 200_000

#: evaluation errors that mean "no decision" (a missing flag is one: off)
NO_DECISION = frozenset((ErrorCode.PROVIDER_NOT_READY, ErrorCode.PROVIDER_FATAL,
                         ErrorCode.GENERAL, ErrorCode.PARSE_ERROR))
#: reasons that say the value is the same for every evaluation context (no targeting involved)
CONTEXT_FREE = frozenset((Reason.STATIC, Reason.DISABLED))

_domains = itertools.count(1)


class _StripTraceback(logging.Filter):
    """flagd's file watcher logs expected errors (a broken file) with a traceback, again at every
    poll: keep one line per distinct message, without the traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        message = record.getMessage()
        if message == self._last:
            return False
        self._last = message
        return True


logging.getLogger("openfeature.contrib").addFilter(_StripTraceback())


class FlagMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.ready = Gauge(
            "ordertrack_flag_provider_ready",
            "1 while the flag provider has a decision and its last update was readable",
            ["provider"], registry=registry)
        self.errors = Counter(
            "ordertrack_flag_provider_errors_total",
            "Flag provider errors (unreadable file or document, provider down); the last good "
            "decision stays", ["provider"], registry=registry)
        self.changes = Counter(
            "ordertrack_flag_changes_total", "Flag configuration changes applied",
            ["provider"], registry=registry)


class FlagSource:
    def __init__(self, provider, *, loop, region: str, carriers: tuple[str, ...],
                 heartbeat_defaults: tuple[float, float] = (30.0, 10.0),
                 registry: CollectorRegistry | None = None):
        self.provider = provider
        self.loop = loop
        self.region = region
        self.heartbeat_defaults = heartbeat_defaults
        self.carriers = carriers
        self.provider_name = provider.get_metadata().name
        self.metrics = FlagMetrics(registry if registry is not None else CollectorRegistry())
        self.metrics.ready.labels(self.provider_name).set(0)
        #: True once the provider gave a decision (ready or a change): see the module doc
        self.decided = False
        self.healthy = False
        self._last_error: str | None = None
        self._decisions: dict[tuple, bool] = {}
        #: the kill switch's value for every context, when the provider said it is context-free
        self._static: bool | None = None
        self._heartbeats: dict[str, tuple[float, float]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._domain = f"ordertrack-{next(_domains)}"
        self.client = api.get_client(domain=self._domain)
        for event in (ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                      ProviderEvent.PROVIDER_ERROR, ProviderEvent.PROVIDER_STALE):
            self.client.add_handler(event, functools.partial(self._from_thread, event))
        if self.uses_redis:  # initializes at once; its decision comes with its first document
            api.set_provider_and_wait(provider, domain=self._domain)
        else:  # on a worker thread: LaunchDarkly's first connection never blocks start-up
            api.set_provider(provider, domain=self._domain)

    def on_change(self, listener: Callable[[], None]) -> None:
        """`listener()` runs on the loop after every change of the flags' configuration."""
        self._listeners.append(listener)

    def close(self) -> None:
        self.provider.shutdown()

    # --- decisions -----------------------------------------------------------------------------
    def realtime_enabled(self, user_id: str, carrier: str | None, client_class: str) -> bool:
        return self.decide(user_id, carrier, client_class) is True

    def decide(self, user_id: str, carrier: str | None, client_class: str) -> bool | None:
        """The kill switch for this context; None when the provider gave no decision (not
        ready, failed): the caller keeps what it had (an open connection stays open)."""
        if self._static is not None:
            return self._static
        key = (user_id, carrier, client_class)
        decision = self._decisions.get(key)
        if decision is not None:
            return decision
        undecided = False
        for each in (carrier,) if carrier else self.carriers:
            value = self._evaluate(user_id, each, client_class)
            if self._static is not None:
                return self._static
            if value is None:
                undecided = True
                continue
            if each != carrier:  # the ack asks again with the order's carrier: keep the answer
                self._remember((user_id, each, client_class), value)
            if value:
                decision = True
                break
        else:
            if undecided:
                return None
            decision = False
        self._remember(key, decision)
        return decision

    def _remember(self, key: tuple, decision: bool) -> None:
        if len(self._decisions) >= DECISIONS_MAX:
            self._decisions.clear()
        self._decisions[key] = decision

    def _evaluate(self, user_id: str, carrier: str, client_class: str) -> bool | None:
        context = EvaluationContext(user_id, {"region": self.region, "carrier": carrier,
                                              "client_class": client_class})
        details = self.client.get_boolean_details(FLAG_NAME, False, context)
        if details.error_code in NO_DECISION:
            return None
        value = details.value is True
        if details.error_code is None and details.reason in CONTEXT_FREE:
            self._static = value
        return value

    def heartbeat(self, client_class: str) -> tuple[float, float]:
        """(ping interval, pong timeout) for a connection of this class."""
        values = self._heartbeats.get(client_class)
        if values is None:
            # a key of its own: LaunchDarkly refuses a context without one
            context = EvaluationContext(f"client_class:{client_class}",
                                        {"region": self.region, "client_class": client_class})
            values = cast(tuple[float, float], tuple(
                self._number(name, default, context) for name, default in
                zip((PING_INTERVAL_FLAG, PONG_TIMEOUT_FLAG), self.heartbeat_defaults,
                    strict=True)))
            self._heartbeats[client_class] = values
        return values

    def _number(self, name: str, default: float, context: EvaluationContext) -> float:
        details = self.client.get_float_details(name, float(default), context)
        value = details.value
        if details.error_code not in (None, ErrorCode.FLAG_NOT_FOUND,
                                      ErrorCode.PROVIDER_NOT_READY):
            log.warning("flag %s unusable (%s: %s); using %s s", name, details.error_code.value,
                        details.error_message, default)
            return default
        low, high = HEARTBEAT_RANGE
        if not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
            log.warning("flag %s = %r outside %s..%s s; using %s s", name, value, low, high, default)
            return default
        return float(value)

    # --- the Redis provider's input --------------------------------------------------------------
    def observe_document(self, raw: bytes | None) -> None:
        """A freshly read Redis flag document (ignored unless the Redis provider is in use).
        A change applies to this call's caller at once, before the event reaches the loop."""
        if isinstance(self.provider, RedisFlagProvider) and self.provider.observe(raw):
            self._forget()

    def _forget(self) -> None:
        """The configuration changed: every cached decision goes."""
        self._decisions.clear()
        self._static = None
        self._heartbeats.clear()

    @property
    def uses_redis(self) -> bool:
        return isinstance(self.provider, RedisFlagProvider)

    # --- events --------------------------------------------------------------------------------
    def _from_thread(self, event: ProviderEvent, details: EventDetails) -> None:
        try:
            self.loop.call_soon_threadsafe(self._on_event, event, details)
        except RuntimeError:  # the loop is closed: the process is stopping
            pass

    def _on_event(self, event: ProviderEvent, details: EventDetails) -> None:
        name = self.provider_name
        if details.provider_name != name:
            return  # adding a handler replays the status of the domain's previous (no-op) provider
        if (event is ProviderEvent.PROVIDER_READY and self.uses_redis
                and self.provider.flag is None):
            return  # the Redis provider is "ready" at once, but decides from its first document
        if event in (ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED):
            first = not self.decided
            self.decided = self.healthy = True
            self._last_error = None
            self.metrics.ready.labels(name).set(1)
            self._forget()
            if event is ProviderEvent.PROVIDER_CONFIGURATION_CHANGED or not first:
                self.metrics.changes.labels(name).inc()
            log.info("flags %s", "ready" if first else "changed", extra={"fields": {
                "provider": name, "event": event.value,
                "flags_changed": details.flags_changed, "detail": details.message}})
            for listener in self._listeners:
                listener()
        else:
            self.healthy = False
            self.metrics.ready.labels(name).set(0)
            self.metrics.errors.labels(name).inc()
            if details.message == self._last_error:
                return  # flagd retries a broken file every poll: one line per distinct error
            self._last_error = details.message
            log.error("flag provider %s: %s", "stale" if event is ProviderEvent.PROVIDER_STALE
                      else "error", details.message or "no detail", extra={"fields": {
                          "provider": name, "event": event.value,
                          "error_code": details.error_code.value if details.error_code else None,
                          "keeping": "last good decision" if self.decided else
                          "no decision yet: realtime off"}})
