"""Configuration of the ledger agent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from framewire.edge_agents.runtime import AgentSettings

DATABASE_CREDENTIAL = "ledger-database-password"


class LedgerSettings(AgentSettings):
    """Ledger agent: stores every result exactly once and acknowledges it."""

    toml_section: ClassVar[str | None] = "ledger"
    default_metrics_port: ClassVar[int] = 9742
    agent_kind: ClassVar[str] = "ledger"

    ledger_db: Path | None = Field(
        default=None, description="Ledger database; default <data_dir>/ledger.sqlite3."
    )
    database_url: str | None = Field(
        default=None,
        description="The ledger's database as a URL: postgresql://user@host:port/dbname for "
        "PostgreSQL (needs framewire[postgres]; the password from database_password_file, "
        "never the URL), or sqlite:///path. Default: the SQLite file ledger_db.",
    )
    database_password_file: Path | None = Field(
        default=None,
        description="File holding the PostgreSQL password. Default: "
        "$CREDENTIALS_DIRECTORY/ledger-database-password when systemd provides it, else "
        "libpq's own (~/.pgpass, PGPASSFILE).",
    )

    backup_dir: Path | None = Field(
        default=None, description="Where nightly backups go; default <data_dir>/backups."
    )
    backup_keep: int = Field(
        default=7, ge=0, description="Backups to keep (the oldest go first); 0: no backups."
    )
    backup_hour: int = Field(default=3, ge=0, le=23, description="Hour of the nightly backup.")
    backup_minute: int = Field(default=30, ge=0, le=59, description="Minute of the backup.")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # imported here: the ledger's stores bring numpy, which reading settings needs not
        from framewire.edge_agents.ledger.stores import LedgerError, sqlite_path

        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres", "sqlite"}:
            raise ValueError("must start with postgresql:// or sqlite:///")
        if parts.scheme == "sqlite":
            try:
                sqlite_path(value)
            except LedgerError as err:
                raise ValueError(str(err)) from None
        if parts.password:
            raise ValueError(
                "put the database password in a file (database_password_file), not the URL"
            )
        return value

    @property
    def ledger_url(self) -> str | Path:
        """Where the ledger is, for `open_ledger`: a PostgreSQL URL or the SQLite file."""
        from framewire.edge_agents.ledger.stores import is_postgres

        if self.database_url is not None and is_postgres(self.database_url):
            return self.database_url
        return self.ledger_path

    def database_password(self) -> str | None:
        """The PostgreSQL password, if framewire is to give one (else libpq finds its own)."""
        path = self.database_password_file
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            candidate = Path(creds) / DATABASE_CREDENTIAL if creds else None
            path = candidate if candidate and candidate.is_file() else None
        return None if path is None else path.read_text(encoding="utf-8").strip()

    @property
    def backup_path(self) -> Path:
        return self.backup_dir or self.data_dir / "backups"

    @property
    def ledger_path(self) -> Path:
        """The SQLite ledger's file (database_url when it is a sqlite:/// URL)."""
        from framewire.edge_agents.ledger.stores import is_postgres, sqlite_path

        if self.database_url is not None and not is_postgres(self.database_url):
            return sqlite_path(self.database_url)
        return self.ledger_db or self.data_dir / "ledger.sqlite3"
