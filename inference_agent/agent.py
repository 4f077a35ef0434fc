"""Inference agent: frames in, one result per frame out.

Frames wait in a bounded queue; when it is full, intake waits, so the broker holds the
rest (nothing is dropped here). The pipeline runs in worker threads, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import aiomqtt

from edge_agents.runtime import AgentRuntime, CommandError
from edge_agents.runtime.commands import CommandResult, Scalar
from edge_agents.runtime.homeassistant import Entity, status_sensor
from inference_agent.build import build_pipeline
from inference_agent.cards.recognizer import RecognizeCard
from inference_agent.models import ModelError, default_manifest_path, load_manifests
from inference_agent.pipeline import Pipeline
from inference_agent.settings import InferenceSettings
from schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
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
        runtime.count_throughput("frames.received")
        runtime.details.update(last_card=None, last_confidence=None, last_status=None)
        runtime.entities += [
            status_sensor(
                "last_card",
                "Last card",
                "{{ value_json.details.last_card | default('none yet', true) }}",
            ),
            status_sensor(
                "last_confidence",
                "Last confidence",
                # null until a card was seen: Home Assistant's unknown, not a confidence of 0
                "{{ value_json.details.last_confidence | default(None) }}",
                state_class="measurement",
                suggested_display_precision=2,
            ),
            status_sensor(
                "last_status",
                "Last recognition",
                "{{ value_json.details.last_status | default('none yet', true) }}",
            ),
            status_sensor(
                "model",
                "Model in use",
                "{{ value_json.details['model.ocr-rec'] | default('none', true) }}",
                entity_category="diagnostic",
            ),
        ]
        self.seconds = runtime.metrics.histogram(
            "framewire_inference_seconds", "Pipeline time per frame"
        ).labels(agent=runtime.agent_id)
        self.stage_seconds = runtime.metrics.histogram(
            "framewire_stage_seconds", "Time per pipeline stage", ("stage",)
        )
        load = runtime.metrics.gauge("framewire_model_load_seconds", "Load + warm-up", ("model",))
        if pipeline.registry is not None:
            for name in pipeline.registry.describe():
                loaded = pipeline.registry.get(name)
                seconds = (loaded.load_ms + loaded.warmup_ms) / 1000
                load.labels(agent=runtime.agent_id, model=name).set(seconds)
        runtime.details.update(
            stages=",".join(s.name for s in pipeline.stages),
            share_group=settings.share_group or "",
            catalog=str(settings.catalog) if settings.catalog else None,
        )
        for name, text in pipeline.models().items():
            runtime.details[f"model.{name}"] = text
        if pipeline.registry is not None:
            runtime.details["model_load_ms"] = round(pipeline.registry.total_load_ms(), 1)

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
                    await self._report(outcome.result)
            finally:
                self.queue.task_done()

    async def _report(self, result: InferenceResult) -> None:
        """Metrics, status details and the retained thumbnail (a Home Assistant image)."""
        agent = self.runtime.agent_id
        if not result.cached:
            self.seconds.observe(sum(s.ms for s in result.stages) / 1000)
            for stage in result.stages:
                self.stage_seconds.labels(agent=agent, stage=stage.name).observe(stage.ms / 1000)
        card = result.card
        if card is not None:
            self.runtime.details.update(
                last_card=card.card_name,
                last_confidence=card.confidence,
                last_status=card.status,
            )
        if result.thumbnail is not None:
            # a thumbnail is a convenience: the result itself was delivered either way
            with contextlib.suppress(aiomqtt.MqttError):
                await self.runtime.publish(
                    self.runtime.topics.thumbnail(agent), result.thumbnail.data, retain=True
                )

    async def drain(self) -> None:
        await self.queue.join()

    # --- requests over MQTT ---------------------------------------------------------------
    async def reload_model(self, args: dict[str, Scalar]) -> CommandResult:
        """Swap one model (args: name, optional manifest path on this box), or all of them.
        The new model is verified and warmed up before it replaces the old one."""
        registry = self.pipeline.registry
        if registry is None:
            raise CommandError("no models are loaded (card recognition is off)")
        source = args.get("manifest") or self.settings.model_manifest or default_manifest_path()
        manifests = await asyncio.to_thread(load_manifests, Path(str(source)))
        name = args.get("name")
        wanted = [str(name)] if name else sorted(manifests)
        data: dict[str, Scalar] = {}
        for model in wanted:
            if model not in manifests:
                raise CommandError(f"manifest {source} has no model {model!r}")
            try:
                loaded = await asyncio.to_thread(registry.swap, manifests[model])
            except ModelError as err:
                self.runtime.counters["model_swaps.refused"] += 1
                raise CommandError(f"{err}; the previous model stays in use") from None
            self.pipeline.swaps += 1
            self.runtime.counters["model_swaps"] += 1
            self.runtime.details[f"model.{model}"] = loaded.describe()
            data[model] = loaded.describe()
            data[f"{model}.load_ms"] = round(loaded.load_ms + loaded.warmup_ms, 1)
        return f"reloaded {', '.join(wanted)}", data

    async def reload_catalog(self, args: dict[str, Scalar]) -> CommandResult:
        stage = next((s for s in self.pipeline.stages if isinstance(s, RecognizeCard)), None)
        if stage is None:
            raise CommandError("no catalog is configured (card recognition is off)")
        catalog = await asyncio.to_thread(stage.catalog.reload)
        if stage.catalog.error:
            raise CommandError(f"{stage.catalog.error}; the previous catalog stays in use")
        return f"catalog has {len(catalog)} cards", {"cards": len(catalog)}


async def run(settings: InferenceSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the inference agent until `stop` is set or SIGTERM/SIGINT arrives."""
    # A member of a share group keeps no session: Mosquitto goes on dealing shares to an
    # offline persistent member, so a dead box would sit on its share of the stream until
    # it came back. Without a session its share goes to the live members, and capture
    # resends what the dead one held as soon as its Last Will says it is gone.
    runtime = AgentRuntime(settings, "inference", persistent=not settings.share_group)
    pipeline = await asyncio.to_thread(build_pipeline, settings, agent_id=runtime.agent_id)
    agent = InferenceAgent(settings, runtime, pipeline)
    topics = runtime.topics
    if settings.share_group:
        topic = topics.shared_frames(settings.share_group)
    else:
        topic = topics.all_frames()
    runtime.subscribe(topic, agent.on_frame, match=topics.all_frames())
    runtime.command("reload_model", agent.reload_model)
    runtime.entities.append(
        Entity(
            "thumbnail",
            "image",
            "Last frame",
            {"image_topic": topics.thumbnail(runtime.agent_id), "content_type": "image/jpeg"},
        )
    )
    runtime.command("reload_catalog", agent.reload_catalog)
    tasks = {f"worker-{i}": agent.work for i in range(settings.workers)}
    try:
        await runtime.run(tasks, drain=agent.drain, stop=stop)
    finally:
        agent.pool.shutdown(wait=False, cancel_futures=True)
