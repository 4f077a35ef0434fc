"""JSON Schema and AsyncAPI 3 documents, generated from the models (never written by hand)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.messages import JSON_MESSAGES, SCHEMA_VERSION, Availability, FrameMeta, Message
from schemas.topics import TopicTree

_TREE = TopicTree("PREFIX")
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


def _address(topic: str) -> str:
    """AsyncAPI address from a topic built by TopicTree with placeholder identifiers."""
    names = {"PREFIX": "{prefix}", "STATION": "{station}", "AGENT": "{agent}", "CLIENT": "{client}"}
    return "/".join(names.get(seg, seg) for seg in topic.split("/"))


def _channel(topic: str, params: dict[str, str], message: str) -> dict[str, Any]:
    params = {"prefix": "Topic prefix (default 'framewire').", **params}
    return {
        "address": _address(topic),
        "parameters": {k: {"description": v} for k, v in params.items()},
        "messages": {message: {"$ref": f"#/components/messages/{message}"}},
    }


def _operation(action: str, channel: str, message: str, doc: str, qos: int, retain: bool) -> Any:
    return {
        "action": action,
        "summary": doc,
        "channel": {"$ref": f"#/channels/{channel}"},
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        "bindings": {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}},
    }


def asyncapi() -> dict[str, Any]:
    station = {"station": "Capture station id."}
    agent = {"agent": "Agent id."}
    t = _TREE
    channels = {
        "frames": _channel(t.frames("STATION"), station, "Frame"),
        "results": _channel(t.results("STATION"), station, "InferenceResult"),
        "acks": _channel(t.acks("STATION"), station, "LedgerAck"),
        "availability": _channel(t.availability("AGENT"), agent, "Availability"),
        "status": _channel(t.status("AGENT"), agent, "AgentStatus"),
        "deadletter": _channel(t.dead_letters("AGENT"), agent, "DeadLetter"),
        "thumbnail": _channel(t.thumbnail("AGENT"), agent, "Thumbnail"),
        "request": _channel(t.requests("AGENT"), agent, "CommandRequest"),
        "response": _channel(
            t.responses("CLIENT"), {"client": "The requesting client's id."}, "CommandResponse"
        ),
    }
    operations = {
        "captureSendsFrame": _operation(
            "send", "frames", "Frame", "Capture agent publishes each frame.", 1, False
        ),
        "inferenceReceivesFrame": _operation(
            "receive", "frames", "Frame", "Inference agents share the frame stream.", 1, False
        ),
        "inferenceSendsResult": _operation(
            "send", "results", "InferenceResult", "One result per frame.", 1, False
        ),
        "ledgerReceivesResult": _operation(
            "receive", "results", "InferenceResult", "The ledger stores each result once.", 1, False
        ),
        "ledgerSendsAck": _operation(
            "send", "acks", "LedgerAck", "Sent after the result is committed.", 1, False
        ),
        "captureReceivesAck": _operation(
            "receive", "acks", "LedgerAck", "Ends the frame's retries.", 1, False
        ),
        "agentSendsAvailability": _operation(
            "send", "availability", "Availability", "Retained; Last Will is offline.", 1, True
        ),
        "agentSendsStatus": _operation(
            "send", "status", "AgentStatus", "Retained periodic heartbeat.", 1, True
        ),
        "agentSendsDeadLetter": _operation(
            "send", "deadletter", "DeadLetter", "Input an agent refused, and why.", 1, False
        ),
        "inferenceSendsThumbnail": _operation(
            "send", "thumbnail", "Thumbnail", "JPEG of the last frame (retained).", 0, True
        ),
        "agentReceivesRequest": _operation(
            "receive", "request", "CommandRequest", "Reload, pause, status...", 1, False
        ),
        "agentSendsResponse": _operation(
            "send", "response", "CommandResponse", "To the request's response topic.", 1, False
        ),
    }
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
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
    }


def documents() -> dict[str, str]:
    """Every generated document, by relative path, as the text to commit."""
    docs = {"asyncapi.json": asyncapi()}
    for name, schema in json_schemas().items():
        docs[f"schemas/{name}.schema.json"] = schema
    return {path: json.dumps(doc, indent=2, sort_keys=False) + "\n" for path, doc in docs.items()}


def export(directory: Path) -> list[Path]:
    written = []
    for rel, text in documents().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
