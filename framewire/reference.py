"""The configuration reference in the README, generated from the settings models."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from framewire.edge_agents.capture.settings import CaptureSettings
from framewire.edge_agents.ledger.settings import LedgerSettings
from framewire.edge_agents.runtime import AgentSettings
from framewire.inference_agent.settings import InferenceSettings
from framewire.inference_agent.stages import STAGES

BEGIN = "<!-- BEGIN CONFIG REFERENCE (generated: framewire config reference) -->"
END = "<!-- END CONFIG REFERENCE -->"

_SECTIONS: list[tuple[str, type[BaseSettings], str | None]] = [
    ("Every agent (top level of the TOML file)", AgentSettings, None),
    ("Capture agent (`[capture]`)", CaptureSettings, "capture"),
    ("Inference agent (`[inference]`)", InferenceSettings, "inference"),
    ("Ledger agent (`[ledger]`)", LedgerSettings, "ledger"),
]


def _default(cls: type[BaseSettings], name: str) -> str:
    field = cls.model_fields[name]
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is None:
        return "(unset)"
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def reference() -> str:
    lines = [BEGIN]
    common = set(AgentSettings.model_fields)
    for title, cls, _ in _SECTIONS:
        lines += [
            "",
            f"#### {title}",
            "",
            "| key | environment | default | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in cls.model_fields.items():
            if cls is not AgentSettings and name in common:
                continue
            desc = (field.description or "").replace("|", "\\|")
            lines.append(
                f"| `{name}` | `FRAMEWIRE_{name.upper()}` | {_default(cls, name)} | {desc} |"
            )
        if cls is InferenceSettings:
            lines += _stage_table()
    lines += ["", END]
    return "\n".join(lines)


def _stage_table() -> list[str]:
    """The names `[inference] stages` accepts."""
    lines = [
        "",
        "Stages (`stages`), in the order they may run:",
        "",
        "| stage | runs after | what it does |",
        "|---|---|---|",
    ]
    for name, spec in STAGES.items():
        after = ", ".join(f"`{a}`" for a in spec.after) or "(first)"
        summary = spec.summary + (" (needs `catalog`)" if spec.needs_catalog else "")
        lines.append(f"| `{name}` | {after} | {summary} |")
    return lines
