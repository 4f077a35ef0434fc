"""`framewire identify`: the inference pipeline in-process, on image files, no broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framewire.edge_agents.capture.inspect import (
    FrameRejectedError,
    ImageLimits,
    inspect_image,
    read_bounded,
)
from framewire.inference_agent.pipeline import Pipeline, local_frame
from framewire.schemas import utc_now


@dataclass(frozen=True)
class Identified:
    file: Path
    record: dict[str, Any]
    ok: bool


def _record(file: Path, pipeline: Pipeline, limits: ImageLimits, seq: int) -> dict[str, Any]:
    try:
        data = read_bounded(file, limits)
        found = inspect_image(data, limits)
    except FrameRejectedError as err:
        return {"file": str(file), "error": err.reason, "error_kind": err.kind.value}
    except OSError as err:
        return {"file": str(file), "error": err.strerror or str(err), "error_kind": "unreadable"}
    meta = local_frame(
        data,
        seq=seq,
        source_name=file.name,
        content_type=found.content_type,
        captured_at=dt.datetime.fromtimestamp(file.stat().st_mtime, dt.UTC),
    )
    outcome = pipeline.process(meta, data, utc_now())
    result = outcome.result
    if result is None or result.status == "error":
        reason = outcome.error.reason if outcome.error else "pipeline failed"
        return {"file": str(file), "error": reason, "error_kind": "processing_error"}
    record: dict[str, Any] = {"file": str(file), "sha256": result.sha256, "phash": result.phash}
    if result.card is not None:
        record.update(result.card.model_dump(mode="json"))
    if result.image is not None:
        record.update(width=result.image.width, height=result.image.height)
    record["ms"] = round(sum(s.ms for s in result.stages), 1)
    return record


def identify(files: list[Path], pipeline: Pipeline, limits: ImageLimits) -> Iterator[Identified]:
    for seq, file in enumerate(files, start=1):
        record = _record(file, pipeline, limits, seq)
        yield Identified(file, record, "error" not in record)
