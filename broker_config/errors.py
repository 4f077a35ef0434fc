"""The one error of the broker configuration that callers catch (exit code 3 in the CLI)."""

from __future__ import annotations


class BrokerError(RuntimeError):
    """Mosquitto is missing, failed to start, or its configuration cannot be built."""
