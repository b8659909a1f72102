"""One base class for errors a user can fix (bad data, params, a failed gate): the CLI prints
their message as one line and exits 1, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message tells the user what to change."""
