"""What every framewire agent shares: settings, connection, status, lifecycle, storage."""

from edge_agents.runtime.agent import (
    AgentRuntime,
    Backoff,
    ConfigurationError,
    NotConnectedError,
)
from edge_agents.runtime.commands import CommandError
from edge_agents.runtime.lifecycle import run_main
from edge_agents.runtime.logs import setup_logging
from edge_agents.runtime.settings import AgentSettings, BrokerAddress
from edge_agents.runtime.sqlite import SqliteThread, open_sqlite, transaction

__all__ = [
    "AgentRuntime",
    "AgentSettings",
    "Backoff",
    "BrokerAddress",
    "CommandError",
    "ConfigurationError",
    "NotConnectedError",
    "SqliteThread",
    "open_sqlite",
    "run_main",
    "setup_logging",
    "transaction",
]
