"""Settings (config.py): a flag, then the environment, then the default; a bad value is one line."""

from __future__ import annotations

import pytest

from ordertrack import config


def test_config_reads_flag_then_env_then_default():
    settings = (config.Setting("HEARTBEAT_INTERVAL_SECONDS", config.duration, "30", "h"),
                config.Setting("PORT", config.port, "8080", "p"))
    assert config.load(settings, environ={}).heartbeat_interval_seconds == 30.0
    assert config.load(settings, environ={"HEARTBEAT_INTERVAL_SECONDS": "0.25"}).heartbeat_interval_seconds == 0.25
    with pytest.raises(config.ConfigError) as info:
        config.load(settings, environ={"PORT": "http"})
    assert "PORT" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(config.ConfigError):
        config.load(settings, environ={"HEARTBEAT_INTERVAL_SECONDS": "-1"})


@pytest.mark.parametrize(("parse", "text", "reason"), [
    (config.duration, "soon", "expected a number of seconds, e.g. 30 or 0.5"),
    (config.duration, "0", "expected a positive number of seconds"),
    (config.duration, "inf", "expected a positive number of seconds"),
    (config.non_negative_duration, "-0.5", "expected zero or a positive number of seconds"),
    (config.positive_int, "1.5", "expected a whole number"),
    (config.positive_int, "0", "expected a whole number above 0"),
    (config.non_negative_int, "-1", "expected a whole number, 0 or above"),
    (config.port, "http", "expected a TCP port number"),
    (config.port, "65536", "expected a TCP port number from 0 to 65535"),
])
def test_number_parsers_name_the_reason(parse, text, reason):
    with pytest.raises(ValueError) as info:
        parse(text)
    assert str(info.value) == reason


def test_number_parsers_accept_their_range():
    assert config.duration("0.2") == 0.2
    assert config.non_negative_duration("0") == 0.0
    assert (config.positive_int("1"), config.non_negative_int("0")) == (1, 0)
    assert (config.port("0"), config.port("65535")) == (0, 65535)
