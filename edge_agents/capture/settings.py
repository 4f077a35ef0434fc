"""Configuration of the capture agent."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from framewire.edge_agents.capture.inspect import ImageLimits
from framewire.edge_agents.runtime import AgentSettings
from framewire.schemas import check_identifier


class CaptureSettings(AgentSettings):
    """Capture agent: watches a folder and publishes every new image as a frame."""

    toml_section: ClassVar[str | None] = "capture"
    default_metrics_port: ClassVar[int] = 9741
    agent_kind: ClassVar[str] = "capture"

    station: str = Field(default="station-1", description="Id of this capture station.")
    watch_dir: Path = Field(
        default=Path("captures"), description="Folder the camera software writes images into."
    )
    state_db: Path | None = Field(
        default=None, description="Capture state database; default <data_dir>/capture.sqlite3."
    )
    max_frame_bytes: int = Field(
        default=20 * 1024 * 1024,
        gt=0,
        le=200 * 1024 * 1024,
        description="Largest file accepted, bytes; the broker's packet limit must exceed it.",
    )
    max_pixels: int = Field(
        default=50_000_000, gt=0, description="Largest image accepted, pixels (bomb guard)."
    )
    max_side: int = Field(
        default=20_000, gt=0, description="Longest side of an image accepted, pixels."
    )
    max_aspect_ratio: float = Field(
        default=10.0,
        ge=1,
        description="Widest long-to-short side ratio accepted (a thin sliver of an image "
        "would make the OCR allocate gigabytes).",
    )
    decode_check: bool = Field(
        default=False,
        description="Decode every image on capture. Off: a file is checked by its header "
        "(type, size, pixel limits) and to be complete by its structure, and a picture "
        "corrupt in the middle is found by the inference agent (a result with status error).",
    )
    allowed_formats: list[Literal["JPEG", "PNG", "WEBP"]] = Field(
        default=["JPEG", "PNG", "WEBP"], description="Image types accepted, found by content."
    )
    settle_seconds: float = Field(
        default=0.5, gt=0, description="A file is taken once unchanged for this long."
    )
    truncated_grace_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A file that is empty or decodes as truncated may still be being "
        "written: it is looked at again, with backoff, and quarantined only once unchanged "
        "for this long. Unset: max(10 x settle_seconds, 10 s).",
    )
    wait_for_inference: bool = Field(
        default=True,
        description="Hold frames while no inference agent is online (read from the "
        "retained availability topics) instead of publishing them to a shared subscription "
        "with no member, where the broker drops them.",
    )
    rescan_interval: float = Field(
        default=60.0, gt=0, description="Seconds between full rescans of the folder."
    )
    force_polling: bool = Field(
        default=False, description="Poll the folder instead of OS events (network shares)."
    )
    max_in_flight: int = Field(
        default=256,
        ge=1,
        le=5000,
        description="Frames published but not yet acknowledged by the ledger, at most. The "
        "window that keeps the pipeline busy: it must cover what the agents hold in their "
        "lanes plus a round trip's worth of frames.",
    )
    max_in_flight_mib: int = Field(
        default=256,
        ge=1,
        description="Bytes of frames published and not yet acknowledged, at most, MiB: the "
        "broker holds them, and drops what its queue limits (max_queued_bytes) cannot.",
    )
    ack_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for the ledger before resending."
    )
    resend_backoff_max: float = Field(
        default=900.0, gt=0, description="Longest pause between resends of one frame, seconds."
    )
    max_attempts: int = Field(
        default=50, ge=1, description="Resends before a frame is quarantined as undeliverable."
    )

    prune_after_days: float = Field(
        default=30.0,
        gt=0,
        description="Forget finished frames this old once their file has left the folder.",
    )
    prune_hour: int = Field(default=4, ge=0, le=23, description="Hour of the nightly prune.")

    @field_validator("station")
    @classmethod
    def _valid_station(cls, value: str) -> str:
        return check_identifier(value, "station")

    @property
    def limits(self) -> ImageLimits:
        return ImageLimits(
            max_bytes=self.max_frame_bytes,
            max_pixels=self.max_pixels,
            formats=tuple(self.allowed_formats),
            max_side=self.max_side,
            max_aspect_ratio=self.max_aspect_ratio,
            decode=self.decode_check,
        )

    @property
    def truncated_grace(self) -> float:
        if self.truncated_grace_seconds is not None:
            return self.truncated_grace_seconds
        return max(10 * self.settle_seconds, 10.0)

    @property
    def state_path(self) -> Path:
        return self.state_db or self.data_dir / "capture.sqlite3"
