"""Inference agent: frames in, one result per frame out.

Frames wait in the `frames` lane, bounded: when it is full the broker holds the rest of
the stream (the agent's Receive Maximum), and a frame is acknowledged to the broker only
once its result is published. The pipeline runs in worker threads, never on the loop, a
micro-batch of frames per call (batch_size, batch_wait_ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import aiomqtt

from framewire.edge_agents.runtime import (
    AgentRuntime,
    AgentSpec,
    CommandError,
    Inbound,
    Lane,
    Receive,
    Send,
)
from framewire.edge_agents.runtime.batching import Batcher
from framewire.edge_agents.runtime.commands import CommandResult, Scalar
from framewire.edge_agents.runtime.homeassistant import Entity, status_sensor
from framewire.inference_agent.build import build_pipeline
from framewire.inference_agent.cards.recognizer import RecognizeCard
from framewire.inference_agent.models import ModelError, default_manifest_path, load_manifests
from framewire.inference_agent.pipeline import Outcome, Pipeline
from framewire.inference_agent.settings import InferenceSettings
from framewire.schemas import FrameMeta, InferenceResult, encode_json, utc_now
from framewire.schemas.channels import FRAMES, RESULTS, THUMBNAIL, Frame

logger = logging.getLogger(__name__)

Job = tuple[FrameMeta, bytes, datetime]

SPEC = AgentSpec(
    kind="inference",
    receives=(
        Receive(
            FRAMES,
            "Frames of every station; the agents of a share group split the stream.",
            "frames",
            shared=True,
        ),
    ),
    sends=(
        Send(RESULTS, "One result per frame, to the frame's station."),
        Send(THUMBNAIL, "A small JPEG of the last frame (Home Assistant's image).", 0, True),
    ),
    lanes=(Lane("frames", capacity=8, workers=8, summary="frames waiting for the pipeline"),),
    counters={
        "frames.received": "frames taken from the broker",
        "results.ok": "results published for frames read",
        "results.error": "results published for frames that could not be read",
        "results.cached": "results answered from the cache (a resend of a frame seen before)",
        "model_swaps": "models replaced by reload_model",
        "model_swaps.refused": "reload_model requests refused (the old model stays)",
    },
    gauges={
        "frames_waiting": "frames received and not yet answered",
        "cache_entries": "results remembered by sha256",
    },
    commands={
        "reload_model": "verify, warm up and swap one model or all (name=..., manifest=...)",
        "reload_catalog": "read the card catalog again",
    },
)


class InferenceAgent:
    def __init__(self, settings: InferenceSettings, runtime: AgentRuntime, pipeline: Pipeline):
        self.settings = settings
        self.runtime = runtime
        self.pipeline = pipeline
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="pipeline")
        self.batches: Batcher[Job, Outcome] = Batcher(
            self._run_batch,
            max_size=settings.batch_size,
            max_wait=settings.batch_wait_ms / 1000,
            concurrency=settings.workers,
        )
        self.in_hand = 0
        runtime.gauge("frames_waiting", lambda: self.in_hand + runtime.dispatcher.depth("frames"))
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
            stages=",".join(settings.stage_names()),
            share_group=settings.share_group or "",
            catalog=str(settings.catalog) if settings.catalog else None,
        )
        for name, text in pipeline.models().items():
            runtime.details[f"model.{name}"] = text
        if pipeline.registry is not None:
            runtime.details["model_load_ms"] = round(pipeline.registry.total_load_ms(), 1)

    async def _run_batch(self, jobs: list[Job]) -> list[Outcome]:
        def run() -> list[Outcome]:
            return [self.pipeline.process(meta, payload, at) for meta, payload, at in jobs]

        return await asyncio.get_running_loop().run_in_executor(self.pool, run)

    async def on_frame(self, message: Inbound[Frame]) -> None:
        received_at = utc_now()
        meta, payload = message.value
        self.runtime.count("frames.received")
        self.in_hand += 1
        try:
            outcome = await self.batches.submit((meta, payload, received_at))
            if outcome.error is not None:
                await self.runtime.dead_letter(
                    outcome.error.kind,
                    outcome.error.reason,
                    source_topic=message.topic,
                    source_name=meta.source_name,
                    frame_id=meta.frame_id,
                    payload=payload,
                )
            if outcome.result is not None:
                try:
                    await self.runtime.send(RESULTS, meta.station, encode_json(outcome.result))
                except aiomqtt.MqttError as err:
                    # not acknowledged on a connection that is gone: the frame comes again
                    # (or its station resends it) and the cache answers it
                    logger.info("result of frame %s not published: %s", meta.frame_id, err)
                    return
                kind = "cached" if outcome.result.cached else outcome.result.status
                self.runtime.count(f"results.{kind}")
                await self._report(outcome.result)
        finally:
            self.in_hand -= 1

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
                await self.runtime.send(THUMBNAIL, agent, result.thumbnail.data)

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
                self.runtime.count("model_swaps.refused")
                raise CommandError(f"{err}; the previous model stays in use") from None
            self.pipeline.swaps += 1
            self.runtime.count("model_swaps")
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
    capacity = settings.queue_size + settings.workers * settings.batch_size
    spec = SPEC.resized("frames", capacity=capacity, workers=capacity)
    runtime = AgentRuntime(settings, spec, persistent=not settings.share_group)
    pipeline = await asyncio.to_thread(build_pipeline, settings, agent_id=runtime.agent_id)
    agent = InferenceAgent(settings, runtime, pipeline)
    topics = runtime.topics
    runtime.receive(FRAMES, agent.on_frame, share=settings.share_group or None)
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
    try:
        await runtime.run({}, stop=stop)
    finally:
        await agent.batches.close()
        agent.pool.shutdown(wait=False, cancel_futures=True)
