"""What every `waxlake` command shares: settings from the job's environment, one-line errors."""

from __future__ import annotations

from typing import Any

from connectors.config import ConfigError, Settings, read_settings


class CommandError(Exception):
    """Ends a command with `waxlake: error: <message>` and the exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def command_settings(**overrides: Any) -> Settings:
    """The job's own settings (env, .env) with the command's options over them, so Kafka
    config and storage options carry over; a root is required."""
    try:
        settings = read_settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    if not settings.table_root:
        raise CommandError("no table root: pass --root or set WAXLAKE_TABLE_ROOT")
    return settings
