"""What every `framewire` command shares: the app, consoles, exit codes, settings loading,
error handling and broker logins."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from framewire.broker_config import BrokerError
from framewire.edge_agents.runtime import AgentSettings
from framewire.edge_agents.runtime.lifecycle import ForcedStop
from framewire.edge_agents.runtime.settings import CONFIG_ENV
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
EXIT_INTERRUPTED = 130  # Ctrl-C pressed twice: stopped without draining

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


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("framewire")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from framewire.edge_agents.runtime.agent import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        console.print(f"framewire {package_version()}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Move camera frames from a capture box to an inference box and into a ledger."""


# --- configuration ---------------------------------------------------------------------------
def agent_settings_classes() -> dict[str, type[AgentSettings]]:
    from framewire.edge_agents.capture.settings import CaptureSettings
    from framewire.edge_agents.ledger.settings import LedgerSettings
    from framewire.inference_agent.settings import InferenceSettings

    return {"capture": CaptureSettings, "inference": InferenceSettings, "ledger": LedgerSettings}


_checked = False


def load_settings(cls: Callable[..., S], **overrides: object) -> S:
    """Build settings, or exit 2 with one readable line per wrong field.

    The whole configuration is checked first (every agent's table), once per process: a
    configuration file with a wrong value is refused by every command that reads it, with
    the field named, rather than by some commands only."""
    global _checked
    given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if not _checked:
        problems: dict[str, None] = {}  # in order, each once (a shared field fails in each)
        for other in agent_settings_classes().values():
            own = {k: v for k, v in given.items() if k in other.model_fields}
            problems.update(dict.fromkeys(_problems(other, own)))
        if problems:
            _refuse(list(problems))
        _checked = True
    try:
        return cls(**given)
    except (ValidationError, OSError, ValueError) as exc:
        _refuse(_describe(exc, getattr(cls, "toml_section", None), set(given)))


def _problems(cls: type[AgentSettings], overrides: dict[str, Any]) -> list[str]:
    try:
        cls(**overrides)
    except (ValidationError, OSError, ValueError) as exc:
        return _describe(exc, cls.toml_section, set(overrides))
    return []


def _refuse(problems: list[str]) -> NoReturn:
    err.print("[red]configuration error:[/]", soft_wrap=True)
    for line in problems:
        err.print(f"  {line}", soft_wrap=True, markup=False)
    err.print("(framewire config reference lists every setting)")
    raise typer.Exit(EXIT_CONFIG)


def _describe(exc: Exception, section: str | None, given: set[str] | None = None) -> list[str]:
    """One line per wrong field: its name, where its value came from, what is wrong."""
    path = os.environ.get(CONFIG_ENV)
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False)
        return [_describe_field(e, section, path, given or set()) for e in errors]
    if isinstance(exc, OSError) and path:
        why = exc.strerror or str(exc)
        return [f"cannot read the configuration file {path} ({CONFIG_ENV}): {why}"]
    if path and type(exc).__name__ == "TOMLDecodeError":
        return [f"{path} ({CONFIG_ENV}) is not valid TOML: {exc}"]
    return [str(exc)]


def _describe_field(e: Any, section: str | None, path: str | None, given: set[str]) -> str:
    name = ".".join(str(p) for p in e["loc"])
    if not name:  # a check across fields
        return str(e["msg"]).removeprefix("Value error, ")
    top = str(e["loc"][0])
    env = f"FRAMEWIRE_{top.upper()}"
    table = _toml_tables(path)
    in_section = section is not None and top in table.get(section, {})
    if top in given:
        where = "given on the command line"
    elif env in os.environ:
        where = f"environment {env}"
    elif in_section:
        where = f"[{section}] in {path}"
    elif top in table.get("", {}):
        where = f"top level of {path}"
    else:
        where = f"{env}, or {top} in the configuration file"
    if e["type"] == "extra_forbidden":
        what = f"a setting of [{section}]" if in_section else "a framewire setting"
        return f"{name} ({where}): not {what}"
    value = e.get("input")
    shown = "" if isinstance(value, dict) else f" = {_short(value)}"
    return f"{name}{shown} ({where}): {str(e['msg']).removeprefix('Value error, ')}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _toml_tables(path: str | None) -> dict[str, dict[str, object]]:
    """The configuration file's keys: "" for the top level, else per table."""
    import tomllib

    if not path:
        return {}
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, ValueError):
        return {}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    return {"": {k: v for k, v in data.items() if k not in tables}, **tables}


# --- errors a person can fix -------------------------------------------------------------------
def _with_broker_errors(fn: Callable[[], T]) -> T:
    """Run an agent or the stack; errors a person can fix become one line and an exit code
    (3: the broker is missing or unreachable; 2: configuration, catalog or model; 130:
    stopped at once by a second Ctrl-C)."""
    try:
        return _reporting(fn)
    except ForcedStop:
        err.print("[yellow]stopped without draining[/]")
        # Everything was closed on the way out (broker, databases, connections); what is
        # left is a model inference running on a worker thread, which the interpreter would
        # wait for at exit. Its frame is sent again, so it is not waited for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place, or after
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _reporting(fn: Callable[[], T]) -> T:
    from framewire.edge_agents.capture.backlog import BrokerUnreachableError
    from framewire.edge_agents.runtime import ConfigurationError
    from framewire.inference_agent.cards.catalog import CatalogError
    from framewire.inference_agent.models import ModelError

    try:
        return fn()
    except* (BrokerError, BrokerUnreachableError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(EXIT_BROKER) from None
    except* (CatalogError, ModelError, ConfigurationError) as group:
        for exc in _leaves(group):
            err.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except* ValidationError as group:  # settings built past load_settings (up's agents)
        err.print("[red]configuration error:[/]")
        for exc in _leaves(group):
            for line in _describe(exc, None) if isinstance(exc, Exception) else [str(exc)]:
                err.print(f"  {line}", soft_wrap=True, markup=False)
        raise typer.Exit(EXIT_CONFIG) from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def quiet_logging(level: str, log_format: str) -> None:
    """Logging for commands with a progress bar: lines go above the bar, not through it."""
    if log_format == "json":
        from framewire.edge_agents.runtime import setup_logging

        setup_logging(level, log_format)
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=err, show_path=False, rich_tracebacks=False)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("mqtt", "apscheduler", "watchfiles"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


# --- the installation `framewire up` runs: <data_dir>/up.json ---------------------------------
RUNTIME_FILE = "up.json"


@dataclass(frozen=True)
class UpInfo:
    """What `framewire up` writes into its data dir, for the commands run next to it."""

    broker_url: str
    secrets: dict[str, Path] = field(default_factory=dict)
    topic_prefix: str | None = None
    agents: dict[str, str] = field(default_factory=dict)  # kind -> agent id
    path: Path | None = None

    def write(self, data_dir: Path) -> Path:
        data_dir.mkdir(parents=True, exist_ok=True)
        target = data_dir / RUNTIME_FILE
        info = {
            "broker_url": self.broker_url,
            "secrets": {u: str(p) for u, p in self.secrets.items()},
            "topic_prefix": self.topic_prefix,
            "agents": self.agents,
        }
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
        tmp.replace(target)
        return target

    @classmethod
    def read(cls, data_dir: Path) -> UpInfo | None:
        path = data_dir / RUNTIME_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                broker_url=str(info["broker_url"]),
                secrets={str(u): Path(p) for u, p in dict(info.get("secrets") or {}).items()},
                topic_prefix=info.get("topic_prefix"),
                agents={str(k): str(v) for k, v in dict(info.get("agents") or {}).items()},
                path=path,
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # none, or not one this framewire can read: as if `up` never ran


def up_info(base: AgentSettings) -> UpInfo | None:
    """The `framewire up` of this data dir, when the configuration points at its broker
    (or at no broker in particular)."""
    info = UpInfo.read(base.data_dir)
    if info is None:
        return None
    if "broker_url" in base.model_fields_set and base.broker_url != info.broker_url:
        return None
    return info


def _observer_login(base: AgentSettings, user: str = "observer") -> BrokerLogin:
    """The broker `framewire up` started (from <data_dir>/up.json), else the configured one."""
    info = up_info(base)
    if info is not None and "broker_url" not in base.model_fields_set:
        secret = info.secrets.get(user)
        return BrokerLogin(info.broker_url, user if secret else None, secret)
    return BrokerLogin(base.broker_url, base.username(), base.mqtt_password_file)


def without_bytes(result: dict[str, Any]) -> dict[str, Any]:
    """A result fit for a terminal: the thumbnail's base64 replaced by its size."""
    thumb = result.get("thumbnail")
    if not isinstance(thumb, dict) or not isinstance(thumb.get("data"), str):
        return result
    import base64
    import binascii

    try:
        size = len(base64.b64decode(thumb["data"], validate=True))
    except (binascii.Error, ValueError):
        size = len(thumb["data"]) * 3 // 4
    shown = {**thumb, "data": f"<{size} bytes omitted: --raw includes them>"}
    return {**result, "thumbnail": shown}
