"""`framewire setup`: one command per box writes its configuration, credentials, broker files
and systemd units (the logic is in framewire.box_setup)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from framewire.box_setup import (
    BoxSetup,
    Change,
    SetupError,
    apply,
    capture_box,
    framewire_executable,
    local_steps,
    remote_box,
    remote_steps,
    unit_paths,
)
from framewire.broker_config import BrokerError, find_mosquitto
from framewire.cli_common import EXIT_FAILED, console, err

setup_app = typer.Typer(
    help="Set up this box: configuration, credentials, broker and systemd units, in one "
    "command. Running it again changes nothing that is already right.",
    no_args_is_help=True,
)


class ProfileChoice(StrEnum):
    production = "production"
    development = "development"


RootOption = Annotated[
    Path,
    typer.Option(
        help="Write everything under this folder instead of / (to prepare a box's files "
        "elsewhere); the paths inside the files are under it too.",
        file_okay=False,
    ),
]
BrokerUrlOption = Annotated[
    str,
    typer.Option(
        "--broker",
        help="The broker on the capture box: mqtts://HOST:8883 (or mqtt://HOST:1883 for a "
        "development broker). `framewire setup capture-box` prints it.",
    ),
]
PasswordFileOption = Annotated[
    Path,
    typer.Option(
        help="This agent's broker password, copied from the capture box "
        "(/etc/framewire/broker/secrets/<agent>.password).",
        dir_okay=False,
    ),
]
CaFileOption = Annotated[
    Path | None,
    typer.Option(
        help="The broker's CA certificate (the capture box's /etc/framewire/broker/tls/ca.pem).",
        dir_okay=False,
    ),
]


@setup_app.command("capture-box")
def setup_capture_box(
    station: Annotated[str, typer.Option(help="This capture station's id.")],
    broker_host: Annotated[
        str | None,
        typer.Option(
            help="The name inference boxes reach this box by (the broker certificate names "
            "it). Default: this machine's host name."
        ),
    ] = None,
    profile: Annotated[
        ProfileChoice,
        typer.Option(
            help="production: logins only, TLS for other machines; development: "
            "anonymous clients may read."
        ),
    ] = ProfileChoice.production,
    tls: Annotated[
        bool | None,
        typer.Option(
            "--tls/--no-tls",
            help="A TLS listener for the other boxes, with a private CA that setup makes "
            "(kept across runs). Default: on in production.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Use this broker certificate instead of a private CA.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The key of --tls-cert.")] = None,
    bind: Annotated[str, typer.Option(help="Address the broker listens on.")] = "0.0.0.0",  # noqa: S104
    watch_dir: Annotated[
        Path, typer.Option(help="Folder the camera software writes images into.")
    ] = Path("/srv/framewire/captures"),
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger/--no-ledger",
            help="Run the ledger here (default), or on a box of its own (setup ledger-box).",
        ),
    ] = True,
    root: RootOption = Path("/"),
) -> None:
    """The capture box: the broker (Mosquitto), the capture agent and the ledger."""

    def build() -> BoxSetup:
        try:
            mosquitto = find_mosquitto()
        except BrokerError as exc:  # its message says how to install Mosquitto
            raise SetupError(str(exc), exit_code=3) from None
        if not watch_dir.is_absolute():
            raise SetupError(f"--watch-dir {watch_dir} must be an absolute path")
        return capture_box(
            station=station,
            paths=unit_paths(root.absolute(), framewire_executable(), mosquitto.absolute()),
            broker_host=broker_host or socket.gethostname(),
            profile=profile.value,
            tls=tls,
            tls_cert=tls_cert.absolute() if tls_cert else None,
            tls_key=tls_key.absolute() if tls_key else None,
            bind=bind,
            watch_dir=watch_dir,
            ledger=ledger,
        )

    _run(build)


@setup_app.command("inference-box")
def setup_inference_box(
    broker: BrokerUrlOption,
    password_file: PasswordFileOption,
    ca_file: CaFileOption = None,
    agent_id: Annotated[
        str | None,
        typer.Option(
            help="This agent's id: 'inference' or 'inference-...'. Default: inference-<host name>."
        ),
    ] = None,
    root: RootOption = Path("/"),
) -> None:
    """An inference box: the inference agent, connecting to the capture box's broker."""
    _run(lambda: _remote("inference", broker, password_file, ca_file, agent_id, root))


@setup_app.command("ledger-box")
def setup_ledger_box(
    broker: BrokerUrlOption,
    password_file: PasswordFileOption,
    ca_file: CaFileOption = None,
    agent_id: Annotated[
        str | None, typer.Option(help="This agent's id: 'ledger' or 'ledger-...'.")
    ] = None,
    root: RootOption = Path("/"),
) -> None:
    """A ledger box, for a ledger kept apart from the capture box (capture-box --no-ledger)."""
    _run(lambda: _remote("ledger", broker, password_file, ca_file, agent_id, root))


def _remote(
    kind: Literal["inference", "ledger"],
    broker: str,
    password_file: Path,
    ca_file: Path | None,
    agent_id: str | None,
    root: Path,
) -> BoxSetup:
    return remote_box(
        kind,
        paths=unit_paths(root.absolute(), framewire_executable()),
        broker_url=broker,
        password_file=password_file,
        ca_file=ca_file,
        agent_id=agent_id,
    )


def _run(build: Callable[[], BoxSetup]) -> None:
    try:
        box = build()
        changes = apply(box)
    except SetupError as exc:
        err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except OSError as exc:  # run without sudo, say
        hint = " (run setup with sudo)" if isinstance(exc, PermissionError) else ""
        where = f" {exc.filename}" if exc.filename else ""
        err.print(f"[red]cannot write{escape(where)}: {exc.strerror or exc}{hint}[/]")
        raise typer.Exit(EXIT_FAILED) from None
    _report(box, changes)


_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim", "kept": "red"}


def _report(box: BoxSetup, changes: list[Change]) -> None:
    root = box.paths.root
    where = "" if root == Path("/") else f" under {root}"
    console.print(f"[bold]{box.box}[/]{where}:")
    for c in changes:
        if c.action == "unchanged":
            continue
        note = f" ({c.note})" if c.note and c.action != "kept" else ""
        line = f"  [{_STYLE[c.action]}]{c.action:<9}[/] {escape(f'{c.path}  {c.what}{note}')}"
        console.print(line, soft_wrap=True)
    same = sum(c.action == "unchanged" for c in changes)
    if same == len(changes):
        console.print(f"  nothing changed: all {same} files and folders were already right")
    elif same:
        console.print(f"  [dim]unchanged: {same} more files and folders already right[/]")
    for c in changes:
        if c.action == "kept":
            err.print(f"[yellow]warning: kept {escape(f'{c.path}: {c.note}')}[/]", soft_wrap=True)
    if box.broker is not None and box.broker.owner is None:
        err.print(
            "[yellow]warning: not run as root, so the broker's files stay this user's; "
            "framewire-broker.service runs as user mosquitto, which cannot read them[/]",
            soft_wrap=True,
        )
    console.print("\nnext, on this box:")
    for command in local_steps(box):
        console.print(f"  {command}", soft_wrap=True, markup=False)
    if box.watch_dir is not None:
        console.print(
            f"  point the camera software at {box.watch_dir} (the agent runs as a user of its "
            "own: keep the images readable by others)",
            soft_wrap=True,
            markup=False,
        )
    for step in remote_steps(box):
        which = "each" if step.box == "inference box" else "the"
        them = "them" if len(step.files) > 1 else "it"
        console.print(
            f"\nfor {which} {step.box}: copy {', '.join(map(str, step.files))} over, then run "
            f"there, in the folder holding {them}:",
            soft_wrap=True,
            markup=False,
        )
        console.print(f"  {step.command}", soft_wrap=True, markup=False)
