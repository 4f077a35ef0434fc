"""The few things framewire needs from aiomqtt that it does not offer publicly, in one place.

aiomqtt 2.x acknowledges a QoS 1 message as soon as it is queued, before the agent has
handled it; framewire switches paho's manual acknowledgements on instead, so the broker
counts a message delivered only once its handler is done, and its flow control (the
client's Receive Maximum) holds the rest of the stream. And the message pump must notice a
lost connection while a handler waits for room in a lane, which only aiomqtt's internal
future says. An aiomqtt release that renames these fails here, at connect, not in the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt


def acknowledge_manually(client: aiomqtt.Client) -> None:
    """Before connecting: QoS 1 messages are acknowledged by `acknowledge`, not on receipt."""
    client._client.manual_ack_set(True)


def acknowledge(client: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Send the PUBACK of a QoS 1 message (nothing for QoS 0). On a connection that is gone
    it does nothing: the broker delivers the message again on the next one."""
    if message.qos > 0:
        client._client.ack(message.mid, message.qos)


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    """Done when the connection of `client` is lost."""
    return client._disconnected


async def messages(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Message]:
    """`client.messages`, taking what is already queued without a task per message (aiomqtt
    starts one, and an asyncio.wait, for every message it hands out)."""
    queue = client._queue
    lost = client._disconnected
    iterator = aiter(client.messages)
    while True:
        if lost.done():
            yield await anext(iterator)  # raises MqttError, as aiomqtt does
        try:
            yield queue.get_nowait()
        except asyncio.QueueEmpty:
            yield await anext(iterator)
