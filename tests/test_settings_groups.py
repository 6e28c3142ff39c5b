"""Settings are declared once each, in groups the processes compose, and every command's
`--help` (and the README's word on LOG_LEVEL) is built from those declarations."""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys

import pytest

from ordertrack import cli, config
from tests.support import REPO


def declared(module) -> tuple[config.Setting, ...]:
    """The command's settings (its module's `SETTINGS`)."""
    return getattr(module, "SETTINGS", ())


def test_each_setting_is_declared_once_across_every_command():
    declarations: dict[str, set] = {}
    for entry in cli.COMMANDS.values():
        for setting in declared(importlib.import_module(entry.module)):
            # a command may give another's setting its own default (dev's sandbox clock),
            # never its own parser or meaning
            declarations.setdefault(setting.env, set()).add((setting.parse, setting.help))
    twice = {env: forms for env, forms in declarations.items() if len(forms) > 1}
    assert twice == {}


def test_the_shared_groups_are_composed_not_copied():
    from ordertrack.api.main import SETTINGS as API
    from ordertrack.gateway.settings import SETTINGS as GATEWAY
    from ordertrack.ingest.settings import SETTINGS as INGEST
    from ordertrack.push.settings import SETTINGS as PUSH

    for group, users in ((config.REGION, (API, PUSH)), (config.UPS_WEBHOOK, (GATEWAY, INGEST)),
                         (config.DHL_WEBHOOK, (GATEWAY, INGEST)),
                         (config.LOGGING, (API, PUSH, GATEWAY, INGEST))):
        for settings in users:
            assert all(any(s is mine for mine in settings) for s in group)


def test_a_setting_declared_twice_in_one_command_is_a_bug_caught_at_once():
    parser = argparse.ArgumentParser()
    again = config.Setting("REGION", config.text, "eu", "another meaning")
    with pytest.raises(AssertionError, match="REGION is declared twice"):
        config.add_flags(parser, config.REGION + (again,))
    config.add_flags(argparse.ArgumentParser(), config.REGION + config.REGION)  # composed twice


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_commands_help_is_its_settings_declarations(command):
    parser = cli.build_parser(command)
    sub = next(action for action in parser._actions
               if isinstance(action, argparse._SubParsersAction)).choices[command]
    helps: dict[str, str] = {}
    for action in sub._actions:  # the first flag of each setting (sandbox adds short aliases)
        helps.setdefault(action.dest, action.help)
    for setting in declared(importlib.import_module(cli.COMMANDS[command].module)):
        if setting.attr in helps:
            assert helps[setting.attr] == config.describe(setting)


def test_log_level_reads_the_same_in_help_and_readme():
    (level,) = config.LOGGING
    help_text = subprocess.run([sys.executable, "-m", "ordertrack", "serve", "--help"],
                               capture_output=True, text=True, timeout=60, cwd=REPO).stdout
    assert config.describe(level) in " ".join(help_text.split())
    assert config.describe(level) == ("logging level: debug, info, warning, error, critical; "
                                      "env LOG_LEVEL (default info)")
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"`LOG_LEVEL` ({', '.join(config.LOG_LEVELS)}; default {level.default})" in readme
    assert not re.search(r"LOG_LEVEL[^.]*default INFO", readme)
    for accepted in config.LOG_LEVELS:
        assert config.log_level(accepted.upper()) == accepted.upper()
