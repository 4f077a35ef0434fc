"""What every framewire agent shares: settings, connection, status, lifecycle, storage."""

from edge_agents.runtime.agent import AgentRuntime
from edge_agents.runtime.commands import CommandError
from edge_agents.runtime.endpoints import (
    AgentSpec,
    Inbound,
    Lane,
    Receive,
    Send,
    UndeclaredError,
    counter_family,
)
from edge_agents.runtime.lifecycle import run_main
from edge_agents.runtime.logs import setup_logging
from edge_agents.runtime.session import Backoff, ConfigurationError, NotConnectedError
from edge_agents.runtime.settings import AgentSettings, BrokerAddress
from edge_agents.runtime.sqlite import SqliteThread, open_sqlite, transaction

__all__ = [
    "AgentRuntime",
    "AgentSettings",
    "AgentSpec",
    "Backoff",
    "BrokerAddress",
    "CommandError",
    "ConfigurationError",
    "Inbound",
    "Lane",
    "NotConnectedError",
    "Receive",
    "Send",
    "SqliteThread",
    "UndeclaredError",
    "counter_family",
    "open_sqlite",
    "run_main",
    "setup_logging",
    "transaction",
]
