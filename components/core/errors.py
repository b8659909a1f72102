"""One base class for errors a user can fix (bad data, params, a failed gate): the CLI prints
their message as one line and exits 1, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to change."""


class ConfigError(UserError, ValueError):
    """A params file, override or device request that does not fit (the schema, or this machine)."""
