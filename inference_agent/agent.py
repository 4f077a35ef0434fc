"""Inference agent: frames in, one result per frame out.

Frames wait in the `frames` lane, bounded: when it is full the broker holds the rest of
the stream (the agent's Receive Maximum), and a frame is acknowledged to the broker only
once its result is published. The pipeline runs in worker threads, never on the loop, a
micro-batch of frames per call (batch_size, batch_wait_ms).

Its role (`[inference] role`) decides which frames it reads and where its readings go:

    primary     its share of the stream; results to the frame's station. With escalate,
                a card read below the threshold is read again by an escalation agent
                first, and the better reading is published, both kept in `opinions`.
    fallback    as primary, but subscribed only while no primary is online
    shadow      a copy of the stream, in its own share group; Opinions on shadow/, which
                the ledger compares with the results and never counts
    escalation  frames primaries escalate; its reading goes back to the one that asked
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

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
from framewire.edge_agents.runtime.presence import AgentPresence
from framewire.inference_agent.build import build_pipeline
from framewire.inference_agent.cards.recognizer import RecognizeCard
from framewire.inference_agent.models import ModelError, default_manifest_path, load_manifests
from framewire.inference_agent.pipeline import Outcome, Pipeline
from framewire.inference_agent.settings import InferenceSettings
from framewire.schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
    MessageError,
    encode_json,
    frame_properties,
    utc_now,
)
from framewire.schemas.channels import (
    AVAILABILITY,
    ESCALATED,
    ESCALATIONS,
    FRAMES,
    RESULTS,
    SHADOW,
    STATUS,
    THUMBNAIL,
    Frame,
)

logger = logging.getLogger(__name__)

Job = tuple[FrameMeta, bytes, datetime]
# seconds a fallback agent listens to the retained presence before it decides to stand in
FALLBACK_SETTLE = 1.0

SPEC = AgentSpec(
    kind="inference",
    receives=(
        Receive(
            FRAMES,
            "Frames of every station; the agents of a share group split the stream "
            "(primary and fallback agents in one group, shadow agents in their own).",
            "frames",
            shared=True,
        ),
        Receive(
            ESCALATIONS,
            "Escalation agents: frames a primary read below its threshold.",
            "frames",
            shared=True,
        ),
        Receive(
            ESCALATED,
            "An escalation agent's reading of a frame this agent sent it.",
            "control",
        ),
        Receive(
            AVAILABILITY,
            "Which agents are online: a fallback takes frames only while no primary is, and "
            "a primary escalates only while an escalation agent is.",
            "control",
        ),
        Receive(STATUS, "Each agent's kind and role.", "control"),
    ),
    sends=(
        Send(RESULTS, "One result per frame, to the frame's station."),
        Send(SHADOW, "Shadow agents: their reading of each frame, compared, never counted."),
        Send(ESCALATIONS, "A frame read below the threshold, for a second reading."),
        Send(ESCALATED, "Escalation agents: the reading, to the agent that asked."),
        Send(THUMBNAIL, "A small JPEG of the last frame (Home Assistant's image).", 0, True),
    ),
    lanes=(Lane("frames", capacity=8, workers=8, summary="frames waiting for the pipeline"),),
    counters={
        "frames.received": "frames taken from the broker",
        "results.ok": "results published for frames read",
        "results.error": "results published for frames that could not be read",
        "results.cached": "results answered from the cache (a resend of a frame seen before)",
        "results.shadow": "shadow readings published (shadow agents)",
        "escalations.sent": "frames sent for a second reading",
        "escalations.kept": "second readings kept: better than this agent's",
        "escalations.unanswered": "second readings not back within escalate_timeout",
        "escalations.skipped": "frames below the threshold kept as read: no escalation "
        "agent online",
        "escalations.answered": "frames read again for another agent (escalation agents)",
        "fallback.takeovers": "times a fallback agent started taking frames",
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
        self.role = settings.role
        self.presence = AgentPresence(runtime.topics)
        # frames sent for a second reading, by frame id: the reading when it comes back
        self._escalated: dict[str, asyncio.Future[InferenceResult]] = {}
        runtime.details.update(role=self.role, receiving=self.role != "fallback")
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
            share_group=settings.group() or "",
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
        """A frame from the stream (or, for an escalation agent, one sent to be read again):
        read it, then publish the reading where this agent's role says."""
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
            result = outcome.result
            if result is None:
                return
            try:
                if self.role == "shadow":
                    opinion = result.opinion("shadow")
                    await self.runtime.send(SHADOW, meta.station, encode_json(opinion))
                    self.runtime.count("results.shadow")
                elif self.role == "escalation":
                    await self._answer(message, result)
                    self.runtime.count("escalations.answered")
                else:
                    if self._below_threshold(result):
                        result = await self._second_reading(meta, payload, result)
                    await self.runtime.send(RESULTS, meta.station, encode_json(result))
                    kind = "cached" if result.cached else result.status
                    self.runtime.count(f"results.{kind}")
            except aiomqtt.MqttError as err:
                # not acknowledged on a connection that is gone: the frame comes again
                # (or its station resends it) and the cache answers it
                logger.info("reading of frame %s not published: %s", meta.frame_id, err)
                return
            await self._report(result)
        finally:
            self.in_hand -= 1

    # --- escalation -----------------------------------------------------------------------
    def _below_threshold(self, result: InferenceResult) -> bool:
        card = result.card
        return (
            self.settings.escalate
            and result.status == "ok"
            and card is not None
            and card.status != "identified"
        )

    async def _second_reading(
        self, meta: FrameMeta, payload: bytes, first: InferenceResult
    ) -> InferenceResult:
        """Ask an escalation agent to read the frame again and return the better reading,
        both recorded in its `opinions`; this agent's own when none is online or none
        answers in time."""
        if not self.presence.online("inference", role="escalation"):
            self.runtime.count("escalations.skipped")
            return first
        props = frame_properties(meta)
        props.ResponseTopic = ESCALATED.topic(self.runtime.topics, self.runtime.agent_id)
        props.CorrelationData = meta.frame_id.encode()
        # a resend of a frame still out shares the reading asked for first
        waiting = self._escalated.setdefault(
            meta.frame_id, asyncio.get_running_loop().create_future()
        )
        try:
            await self.runtime.send(ESCALATIONS, meta.station, payload, properties=props)
            self.runtime.count("escalations.sent")
            try:
                async with asyncio.timeout(self.settings.escalate_timeout):
                    second = await asyncio.shield(waiting)
            except TimeoutError:
                self.runtime.count("escalations.unanswered")
                logger.warning(
                    "frame %s: no second reading within %.0f s (escalate_timeout); keeping "
                    "this agent's",
                    meta.frame_id,
                    self.settings.escalate_timeout,
                )
                return first
        finally:
            if self._escalated.get(meta.frame_id) is waiting:
                del self._escalated[meta.frame_id]
        keep_second = better(second, first)
        if keep_second:
            self.runtime.count("escalations.kept")
        kept, other = (second, first) if keep_second else (first, second)
        opinions = [
            first.opinion(self.role).model_copy(update={"kept": not keep_second}),
            second.opinion("escalation").model_copy(update={"kept": keep_second}),
        ]
        # the kept reading, with this frame's timings (received here) and both opinions
        return kept.model_copy(
            update={
                "opinions": opinions,
                "received_at": first.received_at,
                "thumbnail": kept.thumbnail or other.thumbnail,
            }
        )

    async def on_escalated(self, message: Inbound[InferenceResult]) -> None:
        """A second reading came back: hand it to the frame waiting for it."""
        if message.source != self.runtime.agent_id:
            return
        second = message.value
        waiting = self._escalated.get(second.frame_id)
        if waiting is None or waiting.done():
            logger.info("second reading of frame %s came too late", second.frame_id)
            return
        waiting.set_result(second)

    async def _answer(self, message: Inbound[Frame], result: InferenceResult) -> None:
        """An escalation agent's reading goes to the response topic of the frame, which
        must be an agent's escalated/ topic: never anywhere this agent's rights reach."""
        reply_to = getattr(message.properties, "ResponseTopic", None)
        asker = ESCALATED.param_of(self.runtime.topics, reply_to) if reply_to else None
        if asker is None:
            raise MessageError(
                ErrorKind.UNDELIVERABLE,
                f"an escalated frame must name a response topic under "
                f"{self.runtime.topics.prefix}/escalated/, not {str(reply_to)[:200]!r}",
            )
        await self.runtime.send(ESCALATED, asker, encode_json(result))

    # --- fallback ---------------------------------------------------------------------------
    async def stand_in(self) -> None:
        """A fallback agent: take frames while no primary is online, hand back when one is.

        It joins the share group only then, and says so in its status (`receiving`), which
        capture counts: frames wait for it rather than go to an empty group. On handing back
        it leaves the group; capture then sends again whatever it had not answered."""
        await asyncio.sleep(FALLBACK_SETTLE)  # the retained presence arrives first
        while True:
            self.presence.changed.clear()
            wanted = not self.presence.online("inference", role="primary")
            if wanted != self.runtime.receiving(FRAMES):
                await self.runtime.set_receiving(FRAMES, wanted)
                self.runtime.details["receiving"] = wanted
                if wanted:
                    self.runtime.count("fallback.takeovers")
                    logger.warning("no primary inference agent online: taking frames")
                else:
                    primaries = ", ".join(self.presence.online("inference", role="primary"))
                    logger.info("primary inference agent online (%s): handing back", primaries)
                await self.runtime.publish_status()
            await self.presence.changed.wait()

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


def better(second: InferenceResult, first: InferenceResult) -> bool:
    """True when the second reading of a frame is better than the first: a card identified
    beats one to review, which beats none; then the higher confidence. A tie keeps the
    first."""
    rank = {"identified": 2, "needs_review": 1, "unknown": 0}

    def score(result: InferenceResult) -> tuple[int, int, float]:
        card = result.card
        if card is None:
            return (result.status == "ok", -1, 0.0)
        return (result.status == "ok", rank[card.status], card.confidence)

    return score(second) > score(first)


async def run(settings: InferenceSettings, *, stop: asyncio.Event | None = None) -> None:
    """Run the inference agent until `stop` is set or SIGTERM/SIGINT arrives."""
    # A member of a share group keeps no session: Mosquitto goes on dealing shares to an
    # offline persistent member, so a dead box would sit on its share of the stream until
    # it came back. Without a session its share goes to the live members, and capture
    # resends what the dead one held as soon as its Last Will says it is gone.
    capacity = settings.queue_size + settings.workers * settings.batch_size
    spec = SPEC.resized("frames", capacity=capacity, workers=capacity)
    group = settings.group()
    runtime = AgentRuntime(settings, spec, persistent=not group)
    pipeline = await asyncio.to_thread(build_pipeline, settings, agent_id=runtime.agent_id)
    agent = InferenceAgent(settings, runtime, pipeline)
    topics = runtime.topics
    tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {}
    if settings.role == "escalation":
        runtime.receive(ESCALATIONS, agent.on_frame, share=group)
    else:
        runtime.receive(FRAMES, agent.on_frame, share=group, on=settings.role != "fallback")
    if settings.role == "fallback" or settings.escalate:
        runtime.receive(AVAILABILITY, agent.presence.on_availability)
        runtime.receive(STATUS, agent.presence.on_status)
    if settings.role == "fallback":
        tasks["stand_in"] = agent.stand_in
    if settings.escalate:
        runtime.receive(ESCALATED, agent.on_escalated, ident=runtime.agent_id)
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
        await runtime.run(tasks, stop=stop)
    finally:
        await agent.batches.close()
        agent.pool.shutdown(wait=False, cancel_futures=True)
