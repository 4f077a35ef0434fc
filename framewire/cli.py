"""The `framewire` command line: the app and every command registered on it."""

from framewire import cli_admin, cli_ledger_migrate, cli_pipeline, cli_views  # noqa: F401 - they register commands
from framewire.cli_catalog import catalog_app
from framewire.cli_common import app
from framewire.cli_metrics import metrics_app
from framewire.cli_setup import setup_app
from framewire.cli_shadow import shadow_app

app.add_typer(catalog_app, name="catalog")
app.add_typer(setup_app, name="setup")
app.add_typer(metrics_app, name="metrics")
app.add_typer(shadow_app, name="shadow")

__all__ = ["app"]

if __name__ == "__main__":  # pragma: no cover
    app()
