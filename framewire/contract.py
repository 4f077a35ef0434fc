"""framewire's message contract as its agents declare it: the AsyncAPI operations are what
the agent specs say each kind receives and sends (edge_agents/runtime/endpoints.py), so the
document cannot drift from what the agents do."""

from __future__ import annotations

from pathlib import Path

from framewire.edge_agents.capture.agent import SPEC as CAPTURE
from framewire.edge_agents.ledger.agent import SPEC as LEDGER
from framewire.edge_agents.runtime.endpoints import RUNTIME, AgentSpec
from framewire.inference_agent.agent import SPEC as INFERENCE
from framewire.schemas import export as _export
from framewire.schemas.channels import Operation

SPECS: tuple[AgentSpec, ...] = (CAPTURE, INFERENCE, LEDGER)


def operations() -> list[Operation]:
    """What every agent does (the runtime's part), then each kind's own."""
    ops = RUNTIME.operations()
    for spec in SPECS:
        ops += spec.operations()
    return ops


def documents() -> dict[str, str]:
    return _export.documents(operations())


def export(directory: Path) -> list[Path]:
    return _export.export(directory, operations())
