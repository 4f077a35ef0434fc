"""`framewire ledger migrate`: copy a SQLite ledger into PostgreSQL, resumably."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from framewire.cli_common import EXIT_CONFIG, EXIT_FAILED, err, ledger_app


@ledger_app.command("migrate")
def ledger_migrate(
    source: Annotated[Path, typer.Argument(help="The SQLite ledger (ledger.sqlite3).")],
    url: Annotated[
        str, typer.Argument(help="The PostgreSQL ledger: postgresql://user@host:port/dbname.")
    ],
    password_file: Annotated[
        Path | None,
        typer.Option(help="File holding the PostgreSQL password (default: libpq's ~/.pgpass)."),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows per transaction.")] = 500,
) -> None:
    """Copy every row of a SQLite ledger into a PostgreSQL one. Run it again after an
    interruption, or once the SQLite ledger has gained rows: it goes on where it stopped and
    never writes a frame twice. Exit 1 when the copy could not finish (what was copied
    stays), 2 for a wrong argument."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from framewire.edge_agents.ledger.stores import (
        LedgerError,
        LedgerUnavailable,
        is_postgres,
        redact,
    )

    if not is_postgres(url):
        err.print(f"[red]{redact(url)!r} is not a postgresql:// URL[/]")
        raise typer.Exit(EXIT_CONFIG)
    try:
        import psycopg

        from framewire.edge_agents.ledger.migrate import migrate
    except (ImportError, LedgerError) as exc:  # psycopg is not installed
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None
    password = None if password_file is None else password_file.read_text("utf-8").strip()
    columns = (TextColumn("copying"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"))
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("copy", total=None)
        try:
            done = migrate(
                source,
                url,
                password=password,
                batch=batch,
                progress=lambda n, total: bar.update(task, completed=n, total=total),
            )
        except LedgerUnavailable as exc:
            bar.stop()
            err.print(f"[red]cannot write {exc.location}: {exc}[/]")
            err.print("what was copied stays: run the same command again to go on")
            raise typer.Exit(EXIT_FAILED) from None
        except (OSError, sqlite3.Error, psycopg.Error, LedgerError) as exc:
            bar.stop()
            err.print(f"[red]{exc}[/]")
            raise typer.Exit(EXIT_FAILED) from None
    err.print(
        f"copied {done.copied} row(s) from {source} to {redact(url)}"
        f" ({done.present} there already, {done.relinked} re-capture link(s) moved)",
        soft_wrap=True,
    )
