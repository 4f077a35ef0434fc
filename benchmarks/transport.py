"""The transport baseline: the same frames from one aiomqtt publisher to one subscriber
through the same broker, as a fast client would send them (QoS 1, a window of publishes in
flight, the frame metadata as user properties), with nothing else on either side."""

from __future__ import annotations

import asyncio
import time

import aiomqtt
from paho.mqtt.properties import Properties

from benchmarks.stack import CAPTURE_USER, STATION, AgentStack
from framewire.inference_agent.pipeline import local_frame
from framewire.schemas import frame_properties

WINDOW = 32  # publishes in flight at once: the capture agent's default max_in_flight


def transport_raw_fps(stack: AgentStack, frames: list[bytes], *, window: int = WINDOW) -> float:
    """Frames per second received by the subscriber, first publish to last message."""
    return asyncio.run(_raw(stack, frames, window))


async def _raw(stack: AgentStack, frames: list[bytes], window: int) -> float:
    topics = stack.topics
    host, port = stack.plan.plain_bind, stack.plan.port
    messages = [
        (data, frame_properties(local_frame(data, seq=i, source_name=f"{i}.jpg", station=STATION)))
        for i, data in enumerate(frames)
    ]
    async with (
        aiomqtt.Client(
            host,
            port,
            username="inference",
            password=stack.password("inference"),
            identifier="inference-raw",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as sub,
        aiomqtt.Client(
            host,
            port,
            username=CAPTURE_USER,
            password=stack.password(CAPTURE_USER),
            identifier=f"{CAPTURE_USER}-raw",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as pub,
    ):
        # the subscription the inference agents use: the share group's
        await sub.subscribe(topics.shared_frames("inference"), qos=1)
        topic = topics.frames(STATION)
        pub.pending_calls_threshold = window  # a full window is the point, not a warning
        slots = asyncio.Semaphore(window)

        async def publish(payload: bytes, props: Properties) -> None:
            async with slots:
                await pub.publish(topic, payload, qos=1, properties=props)

        async def receive() -> None:
            got = 0
            async for _ in sub.messages:
                got += 1
                if got == len(messages):
                    return

        start = time.perf_counter()
        async with asyncio.timeout(300), asyncio.TaskGroup() as tasks:
            tasks.create_task(receive())
            for payload, props in messages:
                tasks.create_task(publish(payload, props))
        return len(messages) / (time.perf_counter() - start)
