"""Commands over MQTT: an agent answers CommandRequests on its request topic, replying on the
caller's MQTT 5 response topic with the caller's correlation data."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from framewire.schemas import CommandRequest, CommandResponse

logger = logging.getLogger(__name__)

Scalar = str | int | float | bool | None
CommandResult = tuple[str, dict[str, Scalar]]
CommandHandler = Callable[[dict[str, Scalar]], Awaitable[CommandResult]]
Reply = Callable[[str, CommandResponse, Properties], Awaitable[None]]


class CommandError(Exception):
    """A command that cannot be carried out; the message goes back to the caller."""


class CommandTable:
    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self._handlers: dict[str, CommandHandler] = {}

    def add(self, name: str, handler: CommandHandler) -> None:
        self._handlers[name] = handler

    async def answer(self, request: CommandRequest, props: Properties | None, reply: Reply) -> None:
        """Run the requested command (its failure goes back to the caller, not up)."""
        reply_to = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        handler = self._handlers.get(request.command)
        data: dict[str, Scalar] = {}
        if handler is None:
            ok, text = False, f"unknown command {request.command!r}"
            data = {"commands": ",".join(sorted(self._handlers))}
        else:
            try:
                text, data = await handler(dict(request.args))
                ok = True
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the caller gets the reason; the agent goes on
                ok, text = False, str(err) or type(err).__name__
        logger.log(logging.INFO if ok else logging.WARNING, "request %s: %s", request.command, text)
        if not reply_to:
            return
        props_out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation is not None:
            props_out.CorrelationData = correlation
        response = CommandResponse(
            agent_id=self.agent_id, command=request.command, ok=ok, message=text, data=data
        )
        await reply(reply_to, response, props_out)
