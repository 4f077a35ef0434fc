"""What every framewire agent shares: settings, connection, status, lifecycle, storage."""

from framewire.edge_agents.runtime.agent import AgentRuntime
from framewire.edge_agents.runtime.commands import CommandError
from framewire.edge_agents.runtime.endpoints import (
    AgentSpec,
    Inbound,
    Lane,
    Receive,
    Send,
    UndeclaredError,
    counter_family,
)
from framewire.edge_agents.runtime.lifecycle import run_main
from framewire.edge_agents.runtime.logs import setup_logging
from framewire.edge_agents.runtime.session import Backoff, ConfigurationError, NotConnectedError
from framewire.edge_agents.runtime.settings import AgentSettings, BrokerAddress
from framewire.edge_agents.runtime.sqlite import SqliteThread, open_sqlite, transaction

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
