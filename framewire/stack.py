"""The whole pipeline on one machine: a broker (embedded Mosquitto unless one is configured)
and the capture, inference and ledger agents, each with its own broker identity."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker_config import BrokerPlan, EmbeddedBroker, default_accounts, free_port
from edge_agents.capture.agent import run as run_capture
from edge_agents.capture.settings import CaptureSettings
from edge_agents.ledger.agent import run as run_ledger
from edge_agents.ledger.settings import LedgerSettings
from edge_agents.runtime.lifecycle import SignalStop
from framewire.samples import sample_catalog_path
from inference_agent.agent import run as run_inference
from inference_agent.settings import InferenceSettings

logger = logging.getLogger(__name__)


@dataclass
class Stack:
    broker_url: str
    capture: CaptureSettings
    inference: InferenceSettings
    ledger: LedgerSettings
    secrets: dict[str, Path]

    @property
    def observer_password_file(self) -> Path | None:
        return self.secrets.get("observer")


@contextlib.asynccontextmanager
async def open_stack(
    data_dir: Path,
    captures: Path,
    *,
    broker_url: str | None = None,
    station: str = "station-1",
    prefix: str = "framewire",
    overrides: dict[str, object] | None = None,
) -> AsyncIterator[Stack]:
    """Start the broker (when `broker_url` is None) and build each agent's settings."""
    common: dict[str, Any] = {"topic_prefix": prefix, "data_dir": data_dir, **(overrides or {})}
    creds: dict[str, Path] = {}
    async with contextlib.AsyncExitStack() as exits:
        if broker_url is None:
            plan = BrokerPlan(
                data_dir / "broker",
                port=free_port(),
                prefix=prefix,
                accounts=default_accounts([station, "import"]),
            )
            broker = await exits.enter_async_context(EmbeddedBroker(plan))
            broker_url, creds = broker.url, broker.secrets
        common["broker_url"] = broker_url

        def login(user: str) -> dict[str, Any]:
            if user not in creds:
                return {}
            return {"mqtt_username": user, "mqtt_password_file": creds[user]}

        capture_user = f"capture-{station}"
        yield Stack(
            broker_url=broker_url,
            capture=CaptureSettings(
                **common,
                **login(capture_user),
                agent_id=capture_user,
                station=station,
                watch_dir=captures,
            ),
            inference=_inference_settings(common, login("inference"), station),
            ledger=LedgerSettings(
                **common,
                **login("ledger"),
                agent_id="ledger",
            ),
            secrets=creds,
        )


def _inference_settings(
    common: dict[str, Any], login: dict[str, Any], station: str
) -> InferenceSettings:
    """The sample catalog unless one is configured, so cards are recognised out of the box."""
    settings = InferenceSettings(**common, **login, agent_id=f"inference-{station}")
    if settings.catalog is None:
        logger.info("no catalog configured: using the sample catalog %s", sample_catalog_path())
        settings = settings.model_copy(update={"catalog": sample_catalog_path()})
    return settings


async def run_agents(stack: Stack, stop: asyncio.Event) -> None:
    """Run the three agents until `stop` is set (SIGINT/SIGTERM set it too)."""
    with SignalStop(stop):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_ledger(stack.ledger, stop=stop), name="ledger")
            tg.create_task(run_inference(stack.inference, stop=stop), name="inference")
            tg.create_task(run_capture(stack.capture, stop=stop), name="capture")
