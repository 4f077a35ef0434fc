"""Configuration of the inference agent."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from framewire.edge_agents.runtime import AgentSettings
from framewire.edge_agents.runtime.images import ShapeLimits
from framewire.inference_agent.stages import IMAGE_STAGES, STAGES, check_stages, default_stages
from framewire.schemas import check_identifier
from framewire.schemas.messages import Role

# the share group each role joins unless share_group says otherwise
DEFAULT_GROUPS: dict[str, str] = {
    "primary": "inference",
    "fallback": "inference",
    "shadow": "shadow",
    "escalation": "escalation",
}


class InferenceSettings(AgentSettings):
    """Inference agent: runs the frame pipeline and publishes one result per frame."""

    toml_section: ClassVar[str | None] = "inference"
    default_metrics_port: ClassVar[int] = 9743
    agent_kind: ClassVar[str] = "inference"

    role: Role = Field(
        default="primary",
        description="primary: takes its share of the frame stream (distributed mode). "
        "fallback: takes frames only while no primary is online (an agent on the capture "
        "box, say), and hands back when one returns. shadow: reads a copy of every frame "
        "with its own model; its readings are compared with the results (framewire shadow "
        "report) and never count. escalation: reads again, on a heavier model, the frames "
        "a primary with escalate = true read below its threshold.",
    )
    share_group: str | None = Field(
        default="inference",
        description="MQTT 5 shared-subscription group: agents in one group split the stream "
        "between them. Unset, each role has its own: inference (primary and fallback), "
        "shadow, escalation. Empty: every agent gets every frame.",
    )
    escalate: bool = Field(
        default=False,
        description="Send a frame whose card reads below confidence_threshold to an "
        "escalation agent (role = escalation) and keep the better reading; both are "
        "recorded in the result's opinions. With no escalation agent online, or none "
        "answering within escalate_timeout, this agent's own reading stands.",
    )
    escalate_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds to wait for an escalation agent's reading.",
    )
    queue_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Frames waiting for the worker, at most. When full, intake waits "
        "(backpressure to the broker); nothing is dropped.",
    )
    workers: int = Field(default=1, ge=1, le=64, description="Pipeline worker threads.")
    batch_size: int = Field(
        default=8,
        ge=1,
        le=256,
        description="Frames run through the pipeline in one worker call, at most "
        "(micro-batching: a batch starts once this many wait, or after batch_wait_ms).",
    )
    batch_wait_ms: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="Longest wait for a batch to fill, ms. 0: a batch takes what is waiting "
        "when a worker is free (no frame waits for others).",
    )
    thumbnail_size: int = Field(
        default=256, ge=16, le=2048, description="Longest side of the result thumbnail, pixels."
    )
    cache_entries: int = Field(
        default=4096, ge=0, description="Results remembered by sha256, so resends cost nothing."
    )
    catalog: Path | None = Field(
        default=None,
        description="Card catalog CSV (name,set,number,rarity,market_price,...); reloaded when "
        "it changes. Unset: no card recognition, image facts only.",
    )
    stages: list[str] | None = Field(
        default=None,
        description="Stages that run, in order (FRAMEWIRE_STAGES: a JSON list, or names "
        f"separated by commas). Unset: {', '.join(IMAGE_STAGES)}, and card when a catalog "
        'is set. ["checksum"] only checks the bytes: enough for a box that archives frames. '
        f"Known: {', '.join(STAGES)} (table below).",
    )
    confidence_threshold: float = Field(
        default=0.85, ge=0, le=1, description="Confidence at or above which a card is identified."
    )
    model_manifest: Path | None = Field(
        default=None, description="Model manifest (TOML); default: the shipped OCR models."
    )
    model_backend: Literal["auto", "onnx", "mlx"] = Field(
        default="auto",
        description="auto: MLX on Apple silicon when installed, else onnxruntime.",
    )
    onnx_intra_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime threads within an operator; 0: automatic."
    )
    onnx_inter_op_threads: int = Field(
        default=0, ge=0, description="onnxruntime threads across operators; 0: automatic."
    )
    onnx_intra_op_spinning: bool = Field(
        default=False,
        description="Let onnxruntime's threads spin while they wait for work. Off: on a box "
        "whose cores are shared (capture, ledger, the broker) spinning takes the cores the "
        "next card needs; on a box that only runs inference it may save a little latency.",
    )
    max_pixels: int = Field(default=50_000_000, gt=0, description="Largest frame decoded, pixels.")
    max_side: int = Field(
        default=20_000, gt=0, description="Longest side of a frame that is decoded, pixels."
    )
    max_aspect_ratio: float = Field(
        default=10.0,
        ge=1,
        description="Widest long-to-short side ratio decoded: a thin sliver of an image would "
        "make the text detector, which scales the short side up, allocate gigabytes.",
    )

    def shape_limits(self) -> ShapeLimits:
        return ShapeLimits(
            max_pixels=self.max_pixels,
            max_side=self.max_side,
            max_aspect_ratio=self.max_aspect_ratio,
        )

    def group(self) -> str | None:
        """The share group this agent joins (None: none; it gets every frame)."""
        if "share_group" in self.model_fields_set:
            return self.share_group
        return DEFAULT_GROUPS[self.role]

    def stage_names(self) -> list[str]:
        """The stages this agent runs, in order."""
        if self.stages is not None:
            return list(self.stages)
        return default_stages(catalog=self.catalog is not None)

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_list(cls, value: object) -> object:
        # FRAMEWIRE_STAGES=checksum,decode as well as the JSON list
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @field_validator("stages")
    @classmethod
    def _valid_stages(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # catalog is declared above stages, so it is validated already; when it failed, its
        # own error says so and the stages are not blamed for it
        if value is None:
            return None
        catalog = "catalog" not in info.data or info.data["catalog"] is not None
        return check_stages(value, catalog=catalog)

    @model_validator(mode="after")
    def _escalating_role(self) -> InferenceSettings:
        if self.escalate and self.role not in ("primary", "fallback"):
            raise ValueError(
                f"escalate is for primary and fallback agents, not for role = {self.role!r} "
                "(its readings are not escalated)"
            )
        return self

    @field_validator("share_group")
    @classmethod
    def _valid_group(cls, value: str | None) -> str | None:
        return check_identifier(value, "share_group") if value else None
