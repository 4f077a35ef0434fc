"""Running the stages over one frame and turning the outcome into an InferenceResult."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from framewire.inference_agent.models import ModelRegistry
from framewire.inference_agent.stages import FrameWork, Stage, StageError, VerifyChecksum
from framewire.schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
    StageTiming,
    new_frame_id,
    utc_now,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A result to publish (None when the frame must be resent), and what went wrong."""

    result: InferenceResult | None
    error: StageError | None = None


def local_frame(
    data: bytes,
    *,
    seq: int,
    source_name: str,
    station: str = "local",
    content_type: str = "image/jpeg",
    captured_at: datetime | None = None,
) -> FrameMeta:
    """Metadata for bytes run through the pipeline in-process (identify, benchmarks)."""
    return FrameMeta.model_validate(
        {
            "frame_id": new_frame_id(),
            "station": station,
            "seq": seq,
            "captured_at": captured_at or utc_now(),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": content_type,
            "size": len(data),
            "source_name": source_name,
        }
    )


class ResultCache:
    """Outputs by sha256, so a resent or byte-identical frame is not run again."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._data: OrderedDict[str, dict[str, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sha256: str) -> dict[str, object] | None:
        with self._lock:
            found = self._data.get(sha256)
            if found is not None:
                self._data.move_to_end(sha256)
            return found

    def put(self, sha256: str, outputs: dict[str, object]) -> None:
        if self.entries <= 0:
            return
        with self._lock:
            self._data[sha256] = outputs
            self._data.move_to_end(sha256)
            while len(self._data) > self.entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class Pipeline:
    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        agent_id: str,
        cache_entries: int = 0,
        registry: ModelRegistry | None = None,
    ) -> None:
        self.verify = VerifyChecksum()
        self.stages = [s for s in stages if not isinstance(s, VerifyChecksum)]
        self.agent_id = agent_id
        self.cache = ResultCache(cache_entries)
        self.registry = registry
        self.swaps = 0  # bumped by a model swap: cached outputs of older models are not reused

    def _cache_key(self, sha256: str) -> str:
        generation = self.swaps + sum(getattr(s, "generation", 0) for s in self.stages)
        return f"{sha256}:{generation}"

    def models(self) -> dict[str, str]:
        return self.registry.describe() if self.registry else {}

    def _timed(self, stage: Stage, work: FrameWork, timings: list[StageTiming]) -> None:
        start = time.perf_counter()
        try:
            stage.run(work)
        finally:
            timings.append(StageTiming(name=stage.name, ms=(time.perf_counter() - start) * 1e3))

    def process(self, meta: FrameMeta, payload: bytes, received_at: datetime) -> Outcome:
        """Run every stage over one frame. Blocking: call it from a worker thread."""
        work = FrameWork(meta=meta, payload=payload)
        timings: list[StageTiming] = []
        try:
            self._timed(self.verify, work, timings)
        except StageError as err:
            return Outcome(result=None, error=err)  # the capture box resends the original
        key = self._cache_key(meta.sha256)
        cached = self.cache.get(key)
        error: StageError | None = None
        if cached is not None:
            outputs = cached
        else:
            try:
                for stage in self.stages:
                    self._timed(stage, work, timings)
            except StageError as err:
                error = err
            except Exception as err:
                logger.exception("stage failed on frame %s", meta.frame_id)
                error = StageError(ErrorKind.PROCESSING_ERROR, f"{type(err).__name__}: {err}")
            finally:
                if work.image is not None:
                    work.image.close()
            outputs = {
                "image": work.facts,
                "phash": work.phash,
                "thumbnail": work.thumbnail,
                "card": work.card,
            }
            if error is None:
                self.cache.put(key, outputs)
        result = InferenceResult(
            frame_id=meta.frame_id,
            station=meta.station,
            agent_id=self.agent_id,
            sha256=meta.sha256,
            source_name=meta.source_name,
            captured_at=meta.captured_at,
            received_at=received_at,
            completed_at=utc_now(),
            status="error" if error else "ok",
            error=error.reason if error else None,
            stages=timings,
            cached=cached is not None,
            models=self.models(),
            **outputs,
        )
        return Outcome(result=result, error=error)
