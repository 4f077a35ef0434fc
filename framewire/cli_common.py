"""What every `framewire` command shares: the app, consoles, exit codes, settings loading,
error handling and broker logins."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from broker_config import BrokerError
from edge_agents.runtime import AgentSettings, run_main
from edge_agents.runtime.settings import CONFIG_ENV
from framewire import __version__
from framewire.observe import BrokerLogin

app = typer.Typer(
    help="Move camera frames from a capture box to an inference box and into a ledger.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schemas_app = typer.Typer(help="The message contract.", no_args_is_help=True)
ledger_app = typer.Typer(help="Read the ledger.", no_args_is_help=True)
capture_app = typer.Typer(help="The capture box's frame states.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
broker_app = typer.Typer(
    help="Mosquitto for framewire: render its configuration or run it.",
    invoke_without_command=True,
)
app.add_typer(schemas_app, name="schemas")
app.add_typer(ledger_app, name="ledger")
app.add_typer(capture_app, name="capture")
app.add_typer(broker_app, name="broker")
app.add_typer(config_app, name="config")

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_BROKER = 3

S = TypeVar("S", bound=AgentSettings)
T = TypeVar("T")


class AgentName(StrEnum):
    capture = "capture"
    inference = "inference"
    ledger = "ledger"


class ExportFormat(StrEnum):
    json = "json"
    csv = "csv"


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML configuration file (also FRAMEWIRE_CONFIG).",
        exists=True,
        dir_okay=False,
    ),
]


def _use_config(config: Path | None) -> None:
    if config is not None:
        os.environ[CONFIG_ENV] = str(config)


def load_settings(cls: Callable[..., S], **overrides: object) -> S:
    """Build settings, or exit 2 with one readable line per wrong field."""
    try:
        return cls(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        err.print("[red]configuration error:[/]")
        for e in exc.errors(include_url=False):
            where = ".".join(str(p) for p in e["loc"]) or "(settings)"
            env = f"FRAMEWIRE_{where.upper()}"
            err.print(f"  {where} ({env}): {e['msg']}")
        raise typer.Exit(EXIT_CONFIG) from None
    except (OSError, ValueError) as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(EXIT_CONFIG) from None


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    if version:
        console.print(__version__)
        raise typer.Exit()


def _write_runtime_file(data_dir: Path, url: str, secrets: dict[str, Path]) -> None:
    """Where `framewire status` and `framewire request` find the broker `up` started."""
    info = {"broker_url": url, "secrets": {u: str(p) for u, p in secrets.items()}}
    (data_dir / "up.json").write_text(json.dumps(info), encoding="utf-8")


def _with_broker_errors(fn: Callable[[], T]) -> T:
    """Run an agent or the stack; errors a person can fix become one line and an exit code
    (3: the broker is missing or unreachable; 2: configuration, catalog or model)."""
    from edge_agents.capture.backlog import BrokerUnreachableError
    from edge_agents.runtime import ConfigurationError
    from inference_agent.cards.catalog import CatalogError
    from inference_agent.models import ModelError

    try:
        return fn()
    except* (BrokerError, BrokerUnreachableError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    except* (CatalogError, ModelError, ConfigurationError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]")
        raise typer.Exit(EXIT_CONFIG) from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _observer_login(base: AgentSettings, user: str = "observer") -> BrokerLogin:
    """The broker `framewire up` started (from <data_dir>/up.json), else the configured one."""
    runtime = base.data_dir / "up.json"
    if "broker_url" not in base.model_fields_set and runtime.is_file():
        info = json.loads(runtime.read_text(encoding="utf-8"))
        secret = info.get("secrets", {}).get(user)
        return BrokerLogin(
            info["broker_url"], user if secret else None, Path(secret) if secret else None
        )
    return BrokerLogin(base.broker_url, base.username(), base.mqtt_password_file)


def _send(
    agent: str, command: str, args: dict[str, str | int | float | bool | None], wait: float
) -> None:
    """Send one command over MQTT, print the answer; exit 1 if refused, 3 if unreachable."""
    import aiomqtt

    from framewire.observe import request as send_request
    from schemas import TopicTree

    base = load_settings(AgentSettings)
    login = _observer_login(base, user="operator")
    try:
        response = run_main(
            send_request(login, TopicTree(base.topic_prefix), agent, command, args, wait=wait)
        )
    except TimeoutError:
        err.print(f"[red]{agent} did not answer within {wait:.0f} s[/]")
        raise typer.Exit(EXIT_FAILED) from None
    except aiomqtt.MqttError as exc:
        err.print(f"[red]cannot reach the broker at {login.url}: {exc}[/]")
        raise typer.Exit(EXIT_BROKER) from None
    console.print_json(data=response.model_dump(mode="json"))
    if not response.ok:
        raise typer.Exit(EXIT_FAILED)


AgentOption = Annotated[
    str | None, typer.Option("--agent", help="Agent id (default: from config).")
]
WaitOption = Annotated[float, typer.Option(help="Seconds to wait for the answer.")]
