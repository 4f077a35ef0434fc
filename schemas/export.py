"""JSON Schema and AsyncAPI 3 documents, generated from the models (never written by hand)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from framewire.schemas.channels import CHANNELS, Channel, Operation
from framewire.schemas.messages import (
    JSON_MESSAGES,
    SCHEMA_VERSION,
    Availability,
    FrameMeta,
    Message,
)

_REF = "#/components/schemas/{model}"


def _schemas() -> dict[str, Any]:
    models: list[tuple[type[Message], Any]] = [(FrameMeta, "validation")]
    models += [(m, "validation") for m in JSON_MESSAGES.values()]
    _, top = models_json_schema(models, ref_template=_REF)
    defs: dict[str, Any] = top["$defs"]
    defs["Availability"] = {
        "type": "string",
        "enum": [a.value for a in Availability],
        "description": Availability.__doc__,
    }
    return dict(sorted(defs.items()))


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema per message, keyed by model name."""
    out: dict[str, dict[str, Any]] = {}
    every: dict[str, type[Message]] = {"FrameMeta": FrameMeta, **JSON_MESSAGES}
    for name, model in every.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://framewire.dev/schemas/{name}-v{SCHEMA_VERSION}.json"
        out[name] = schema
    return out


def _channel(channel: Channel) -> dict[str, Any]:
    params = {
        "prefix": "Topic prefix (default 'framewire').",
        channel.param: _PARAMS[channel.param],
    }
    return {
        "address": channel.address(),
        "description": channel.summary,
        "parameters": {k: {"description": v} for k, v in params.items()},
        "messages": {channel.message: {"$ref": f"#/components/messages/{channel.message}"}},
    }


def _operation(op: Operation) -> dict[str, Any]:
    name, message = op.channel.name, op.channel.message
    summary = op.summary + (" (MQTT 5 shared subscription)" if op.shared else "")
    return {
        "action": op.action,
        "summary": summary,
        "channel": {"$ref": f"#/channels/{name}"},
        "messages": [{"$ref": f"#/channels/{name}/messages/{message}"}],
        "bindings": {"mqtt": {"qos": op.qos, "retain": op.retain, "bindingVersion": "0.2.0"}},
    }


_PARAMS = {
    "station": "Capture station id.",
    "agent": "Agent id.",
    "client": "The requesting client's id.",
}


def asyncapi(operations: Sequence[Operation]) -> dict[str, Any]:
    """The AsyncAPI 3 document of `operations`: what the agents declare they do
    (framewire/contract.py collects them)."""
    channels = {c.name: _channel(c) for c in CHANNELS}
    ops: dict[str, Any] = {}
    for op in operations:
        if op.operation_id in ops:
            raise ValueError(f"operation {op.operation_id} is declared twice")
        ops[op.operation_id] = _operation(op)
    messages: dict[str, Any] = {
        "Frame": {
            "name": "Frame",
            "summary": "Raw image bytes; metadata as MQTT 5 user properties (FrameMeta fields "
            "as strings, plus schema=framewire.frame/1) and the content-type property.",
            "contentType": "image/jpeg",
            "headers": {"$ref": _REF.format(model="FrameMeta")},
            "payload": {"type": "string", "format": "binary"},
        },
        "Thumbnail": {
            "name": "Thumbnail",
            "summary": "A small JPEG of the last frame the agent handled (a Home Assistant "
            "image entity shows it).",
            "contentType": "image/jpeg",
            "payload": {"type": "string", "format": "binary"},
        },
        "Availability": {
            "name": "Availability",
            "contentType": "text/plain",
            "payload": {"$ref": _REF.format(model="Availability")},
        },
    }
    for name in JSON_MESSAGES:
        messages[name] = {
            "name": name,
            "contentType": "application/json",
            "payload": {"$ref": _REF.format(model=name)},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "framewire",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "Camera frames from capture to inference to ledger, over MQTT 5.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": ops,
        "components": {"schemas": _schemas(), "messages": messages},
    }


def documents(operations: Sequence[Operation]) -> dict[str, str]:
    """Every generated document, by relative path, as the text to commit."""
    docs = {"asyncapi.json": asyncapi(operations)}
    for name, schema in json_schemas().items():
        docs[f"schemas/{name}.schema.json"] = schema
    return {path: json.dumps(doc, indent=2, sort_keys=False) + "\n" for path, doc in docs.items()}


def export(directory: Path, operations: Sequence[Operation]) -> list[Path]:
    written = []
    for rel, text in documents(operations).items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
