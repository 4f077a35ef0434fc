"""framewire's message contract as its agents declare it: the AsyncAPI operations are what
the agent specs say each kind receives and sends (edge_agents/runtime/endpoints.py), so the
document cannot drift from what the agents do."""

from __future__ import annotations

from pathlib import Path

from edge_agents.capture.agent import SPEC as CAPTURE
from edge_agents.ledger.agent import SPEC as LEDGER
from edge_agents.runtime.endpoints import RUNTIME, AgentSpec
from inference_agent.agent import SPEC as INFERENCE
from schemas import export as _export
from schemas.channels import Operation

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
