"""What goes wrong in `make stack` in a way the user must act on."""

from __future__ import annotations

from servicectl.process import ServiceError


class StackError(ServiceError):
    """Something the user must act on; the message says what."""
