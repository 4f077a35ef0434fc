"""Mosquitto configuration for framewire, and Mosquitto as an embedded child process."""

from framewire.broker_config.bridge import BridgePlan
from framewire.broker_config.embedded import (
    INSTALL_HINT,
    EmbeddedBroker,
    find_mosquitto,
    free_port,
)
from framewire.broker_config.errors import BrokerError
from framewire.broker_config.render import (
    AgentAccount,
    BrokerPlan,
    default_accounts,
    write_broker_files,
)

__all__ = [
    "INSTALL_HINT",
    "AgentAccount",
    "BridgePlan",
    "BrokerError",
    "BrokerPlan",
    "EmbeddedBroker",
    "default_accounts",
    "find_mosquitto",
    "free_port",
    "write_broker_files",
]
