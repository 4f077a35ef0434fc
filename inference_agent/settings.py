"""Configuration of the inference agent."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from edge_agents.runtime import AgentSettings
from schemas import check_identifier


class InferenceSettings(AgentSettings):
    """Inference agent: runs the frame pipeline and publishes one result per frame."""

    toml_section: ClassVar[str | None] = "inference"
    agent_kind: ClassVar[str] = "inference"

    share_group: str | None = Field(
        default="inference",
        description="MQTT 5 shared-subscription group: inference agents in one group split "
        "the frame stream between them. Empty: every agent gets every frame.",
    )
    queue_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Frames waiting for the worker, at most. When full, intake waits "
        "(backpressure to the broker); nothing is dropped.",
    )
    workers: int = Field(default=1, ge=1, le=64, description="Pipeline worker threads.")
    thumbnail_size: int = Field(
        default=256, ge=16, le=2048, description="Longest side of the result thumbnail, pixels."
    )
    cache_entries: int = Field(
        default=4096, ge=0, description="Results remembered by sha256, so resends cost nothing."
    )

    @field_validator("share_group")
    @classmethod
    def _valid_group(cls, value: str | None) -> str | None:
        return check_identifier(value, "share_group") if value else None
