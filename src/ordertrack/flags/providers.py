"""The OpenFeature providers the kill switch can run on, chosen by configuration.

- `LAUNCHDARKLY_SDK_KEY` set: LaunchDarkly's OpenFeature provider (the log's platform).
- `FLAGS_FILE` set: flagd's provider in in-process FILE mode (no flagd daemon): a flagd
  flag-definition file, re-read when it changes (polled every `FLAGS_FILE_POLL_SECONDS`).
- neither: `RedisFlagProvider`, the document `ordertrack flag` writes (the default of
  `ordertrack dev`), pushed to every pod at once over `ws:control:all`.

Setting both is refused at start-up: which source owns the kill switch must never be a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider
from openfeature.provider.metadata import Metadata

from ordertrack.config import Setting, duration, optional_text
from ordertrack.flags.document import FLAG_NAME, Flag, is_enabled, read_flag

SETTINGS = (
    Setting("FLAGS_FILE", optional_text, None,
            "flagd flag-definition file for the kill switch and heartbeat flags (OpenFeature flagd provider, FILE mode)"),
    Setting("FLAGS_FILE_POLL_SECONDS", duration, "1",
            "seconds between checks of FLAGS_FILE for changes"),
    Setting("LAUNCHDARKLY_SDK_KEY", optional_text, None,
            "LaunchDarkly server SDK key: flags from LaunchDarkly (OpenFeature provider)"),
)

REDIS = "redis"
FLAGD_FILE = "flagd-file"
LAUNCHDARKLY = "launchdarkly"


def choose(settings: Any) -> str:
    """Which provider the settings ask for (pure). Raises ValueError when they ask for two."""
    flags_file = getattr(settings, "flags_file", None)
    sdk_key = getattr(settings, "launchdarkly_sdk_key", None)
    if flags_file and sdk_key:
        raise ValueError("set FLAGS_FILE or LAUNCHDARKLY_SDK_KEY, not both")
    if sdk_key:
        return LAUNCHDARKLY
    return FLAGD_FILE if flags_file else REDIS


def build(settings: Any, launchdarkly_data_system: Any = None):
    """The provider the settings choose. `launchdarkly_data_system` (an ldclient data system
    config) replaces LaunchDarkly's streaming connection: tests pass one built on
    `ldclient.integrations.test_datav2.TestDataV2`, which reports flag changes like the real
    stream does (the older `TestData` writes the store without change events)."""
    kind = choose(settings)
    if kind == LAUNCHDARKLY:
        from ld_openfeature import LaunchDarklyProvider
        from ldclient.config import Config

        options: dict[str, Any] = {}
        if launchdarkly_data_system is not None:
            options = {"datasystem_config": launchdarkly_data_system, "send_events": False,
                       "diagnostic_opt_out": True}
        # start_wait=0: never block start-up on LaunchDarkly; until it answers, the pod has
        # no decision (see README, "The kill switch")
        return LaunchDarklyProvider(Config(settings.launchdarkly_sdk_key, **options), start_wait=0)
    if kind == FLAGD_FILE:
        from openfeature.contrib.provider.flagd import FlagdProvider
        from openfeature.contrib.provider.flagd.config import ResolverType

        poll_ms = int(getattr(settings, "flags_file_poll_seconds", 1.0) * 1000)
        # the file watcher sleeps `deadline_ms` between checks of the file's mtime
        return FlagdProvider(resolver_type=ResolverType.FILE,
                             offline_flag_source_path=str(settings.flags_file),
                             deadline_ms=max(poll_ms, 10))
    return RedisFlagProvider()


class RedisFlagProvider(AbstractProvider):
    """The Redis flag document as an OpenFeature provider.

    It does no I/O itself: whoever reads the document (the pod on a control message and every
    few seconds, the API in each request's one Redis round trip) hands it to `observe`. Until a
    first document was observed the provider has no decision (`PROVIDER_NOT_READY`). It only
    knows `realtime_order_tracking`; other flags (the heartbeat ones) resolve to their defaults.
    """

    def __init__(self) -> None:
        self.flag: Flag | None = None
        self._raw: bytes | None | object = _UNSEEN

    def get_metadata(self) -> Metadata:
        return Metadata(name="ordertrack-redis")

    def observe(self, raw: bytes | None) -> bool:
        """Take a freshly read document; True when the decision changed. An unreadable
        document keeps the last good one and is reported as a provider error."""
        if raw == self._raw:
            return False
        self._raw = raw
        try:
            flag = read_flag(raw)
        except ValueError as exc:
            self.emit_provider_error(ProviderEventDetails(
                message=f"{FLAG_NAME} document in Redis unreadable: {exc}",
                error_code=ErrorCode.PARSE_ERROR))
            return False
        if flag == self.flag:
            return False
        first, self.flag = self.flag is None, flag
        details = ProviderEventDetails(flags_changed=[FLAG_NAME],
                                       message=flag.to_json().decode())
        if first:
            self.emit_provider_ready(details)
        else:
            self.emit_provider_configuration_changed(details)
        return True

    def resolve_boolean_details(self, flag_key: str, default_value: bool,
                                evaluation_context: EvaluationContext | None = None
                                ) -> FlagResolutionDetails[bool]:
        if flag_key != FLAG_NAME:
            return _not_found(flag_key, default_value)
        if self.flag is None:
            return FlagResolutionDetails(default_value, reason=Reason.ERROR,
                                         error_code=ErrorCode.PROVIDER_NOT_READY)
        attrs: Mapping[str, Any] = evaluation_context.attributes if evaluation_context else {}
        user = evaluation_context.targeting_key if evaluation_context else None
        value = is_enabled(self.flag, user or "", attrs.get("region"), attrs.get("carrier"))
        return FlagResolutionDetails(value, reason=_reason(self.flag))

    def resolve_string_details(self, flag_key, default_value, evaluation_context=None):
        return _not_found(flag_key, default_value)

    def resolve_integer_details(self, flag_key, default_value, evaluation_context=None):
        return _not_found(flag_key, default_value)

    def resolve_float_details(self, flag_key, default_value, evaluation_context=None):
        return _not_found(flag_key, default_value)

    def resolve_object_details(self, flag_key, default_value, evaluation_context=None):
        return _not_found(flag_key, default_value)


_UNSEEN = object()


def _reason(flag: Flag) -> Reason:
    """DISABLED (off for everyone) or STATIC (the same for every context: no region, carrier
    or percentage rule) let the caller reuse the value for any context."""
    if not flag.enabled:
        return Reason.DISABLED
    if not flag.regions and not flag.carriers and flag.percentage in (0.0, 100.0):
        return Reason.STATIC
    return Reason.TARGETING_MATCH


def _not_found(flag_key: str, default_value):
    return FlagResolutionDetails(default_value, reason=Reason.DEFAULT,
                                 error_code=ErrorCode.FLAG_NOT_FOUND,
                                 error_message=f"{flag_key} is not in the Redis flag document")
