"""framewire: camera frames from a capture box to an inference box and into a ledger."""

from framewire.edge_agents.runtime.agent import __version__

__all__ = ["__version__"]
