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
