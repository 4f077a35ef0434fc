"""Configuration of the ledger agent."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from edge_agents.runtime import AgentSettings


class LedgerSettings(AgentSettings):
    """Ledger agent: stores every result exactly once and acknowledges it."""

    toml_section: ClassVar[str | None] = "ledger"
    agent_kind: ClassVar[str] = "ledger"

    ledger_db: Path | None = Field(
        default=None, description="Ledger database; default <data_dir>/ledger.sqlite3."
    )

    @property
    def ledger_path(self) -> Path:
        return self.ledger_db or self.data_dir / "ledger.sqlite3"
