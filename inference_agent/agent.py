"""Inference agent: frames in, one result per frame out.

Frames wait in a bounded queue; when it is full, intake waits, so the broker holds the
rest (nothing is dropped here). The pipeline runs in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import aiomqtt

from edge_agents.runtime import AgentRuntime
from inference_agent.build import build_pipeline
from inference_agent.pipeline import Pipeline
from inference_agent.settings import InferenceSettings
from schemas import (
    ErrorKind,
    FrameMeta,
    MessageError,
    encode_json,
    frame_meta_from_properties,
    user_properties,
    utc_now,
)

logger = logging.getLogger(__name__)

Job = tuple[FrameMeta, bytes, datetime]


class InferenceAgent:
    def __init__(self, settings: InferenceSettings, runtime: AgentRuntime, pipeline: Pipeline):
        self.settings = settings
        self.runtime = runtime
        self.pipeline = pipeline
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=settings.queue_size)
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="pipeline")
        runtime.gauge("frames_waiting", self.queue.qsize)
        runtime.gauge("cache_entries", lambda: len(pipeline.cache))
        runtime.details.update(
            stages=",".join(s.name for s in pipeline.stages),
            share_group=settings.share_group or "",
            catalog=str(settings.catalog) if settings.catalog else None,
        )
        for name, text in pipeline.models().items():
            runtime.details[f"model.{name}"] = text

    async def on_frame(self, message: aiomqtt.Message) -> None:
        received_at = utc_now()
        payload = message.payload if isinstance(message.payload, bytes) else b""
        meta = frame_meta_from_properties(user_properties(message.properties))
        station = self.runtime.topics.segment(message.topic.value, 1)
        if station != meta.station:
            raise MessageError(
                ErrorKind.SCHEMA_INVALID,
                f"frame of station {meta.station!r} arrived on the topic of {station!r}",
            )
        self.runtime.counters["frames.received"] += 1
        await self.queue.put((meta, payload, received_at))

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            meta, payload, received_at = await self.queue.get()
            try:
                outcome = await loop.run_in_executor(
                    self.pool, self.pipeline.process, meta, payload, received_at
                )
                if outcome.error is not None:
                    await self.runtime.dead_letter(
                        outcome.error.kind,
                        outcome.error.reason,
                        source_topic=self.runtime.topics.frames(meta.station),
                        source_name=meta.source_name,
                        frame_id=meta.frame_id,
                        payload=payload,
                    )
                if outcome.result is not None:
                    await self.runtime.publish_when_connected(
                        self.runtime.topics.results(meta.station), encode_json(outcome.result)
                    )
                    kind = "cached" if outcome.result.cached else outcome.result.status
                    self.runtime.counters[f"results.{kind}"] += 1
            finally:
                self.queue.task_done()

    async def drain(self) -> None:
        await self.queue.join()


async def run(settings: InferenceSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the inference agent until `stop` is set or SIGTERM/SIGINT arrives."""
    runtime = AgentRuntime(settings, "inference", persistent=True)
    pipeline = await asyncio.to_thread(build_pipeline, settings, agent_id=runtime.agent_id)
    agent = InferenceAgent(settings, runtime, pipeline)
    topics = runtime.topics
    if settings.share_group:
        topic = topics.shared_frames(settings.share_group)
    else:
        topic = topics.all_frames()
    runtime.subscribe(topic, agent.on_frame, match=topics.all_frames())
    tasks = {f"worker-{i}": agent.work for i in range(settings.workers)}
    try:
        await runtime.run(tasks, drain=agent.drain, stop=stop)
    finally:
        agent.pool.shutdown(wait=False, cancel_futures=True)
