"""Configuration of the ledger agent."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from edge_agents.runtime import AgentSettings


class LedgerSettings(AgentSettings):
    """Ledger agent: stores every result exactly once and acknowledges it."""

    toml_section: ClassVar[str | None] = "ledger"
    default_metrics_port: ClassVar[int] = 9742
    agent_kind: ClassVar[str] = "ledger"

    ledger_db: Path | None = Field(
        default=None, description="Ledger database; default <data_dir>/ledger.sqlite3."
    )

    backup_dir: Path | None = Field(
        default=None, description="Where nightly backups go; default <data_dir>/backups."
    )
    backup_keep: int = Field(
        default=7, ge=0, description="Backups to keep (the oldest go first); 0: no backups."
    )
    backup_hour: int = Field(default=3, ge=0, le=23, description="Hour of the nightly backup.")
    backup_minute: int = Field(default=30, ge=0, le=59, description="Minute of the backup.")

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def ledger_path(self) -> Path:
        return self.ledger_db or self.data_dir / "ledger.sqlite3"
