"""Unit tests of the message contract: identifiers, topics, codecs, generated documents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framewire.contract import documents
from framewire.schemas import (
    ErrorKind,
    FrameMeta,
    InferenceResult,
    InvalidIdentifierError,
    LedgerAck,
    MessageError,
    TopicTree,
    check_identifier,
    decode_json,
    encode_json,
    frame_meta_from_properties,
    frame_properties,
    new_frame_id,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


def meta(**over: object) -> FrameMeta:
    base: dict[str, object] = dict(
        frame_id=new_frame_id(),
        station="station-1",
        seq=7,
        captured_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        sha256="ab" * 32,
        content_type="image/jpeg",
        size=1234,
        source_name="sub/card 1.jpg",
    )
    base.update(over)
    return FrameMeta.model_validate(base)


@pytest.mark.parametrize("good", ["station-1", "a", "A.b_c-9", "x" * 64, "01M7Y9QJ12YRKPA99J"])
def test_identifier_accepts_safe_names(good: str) -> None:
    assert check_identifier(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("a+b", "'+'"),
        ("a#", "'#'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        (".hidden", "leading '.'"),
        ("$SYS", "'$'"),
        ("tab\there", "'\\t'"),
        ("nul\x00", "'\\x00'"),
        ("ünïcode", "'ï'"),
        ("x" * 65, "over the limit of 64"),
    ],
)
def test_identifier_refuses_hostile_names_with_reason(bad: str, why: str) -> None:
    with pytest.raises(InvalidIdentifierError) as exc:
        check_identifier(bad, "station id")
    assert why in str(exc.value)


def test_frame_ids_are_unique_sortable_identifiers() -> None:
    ids = [new_frame_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 and check_identifier(i) for i in ids)
    assert ids[0][:10] <= ids[-1][:10]  # time part is ordered


def test_topic_tree_builds_every_topic_under_its_prefix() -> None:
    t = TopicTree("plant-7/line")
    assert t.frames("st-1") == "plant-7/line/frames/st-1"
    assert t.shared_frames("inference") == "$share/inference/plant-7/line/frames/+"
    assert t.results("st-1") == "plant-7/line/results/st-1"
    assert t.acks("st-1") == "plant-7/line/acks/st-1"
    assert t.availability("ledger") == "plant-7/line/agents/ledger/availability"
    assert t.status("ledger") == "plant-7/line/agents/ledger/status"
    assert t.dead_letters("cap") == "plant-7/line/deadletter/cap"
    assert t.segment("plant-7/line/results/st-1", 1) == "st-1"
    with pytest.raises(InvalidIdentifierError):
        t.frames("st/1")
    with pytest.raises(InvalidIdentifierError):
        TopicTree("a/#")
    with pytest.raises(ValueError, match="not under prefix"):
        t.segment("other/results/x", 1)


def test_frame_metadata_round_trips_through_user_properties() -> None:
    m = meta()
    props = frame_properties(m)
    assert props.ContentType == "image/jpeg"
    pairs = dict(props.UserProperty)
    assert pairs["schema"] == "framewire.frame/1"
    assert pairs["frame_id"] == m.frame_id and pairs["sha256"] == m.sha256
    assert frame_meta_from_properties(props.UserProperty) == m


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda p: [kv for kv in p if kv[0] != "schema"], ErrorKind.UNSUPPORTED_VERSION),
        (
            lambda p: [("schema", "framewire.frame/9") if k == "schema" else (k, v) for k, v in p],
            ErrorKind.UNSUPPORTED_VERSION,
        ),
        (lambda p: [*p, ("frame_id", "x")], ErrorKind.MALFORMED),
        (lambda p: [*p, ("colour", "red")], ErrorKind.SCHEMA_INVALID),
        (
            lambda p: [(k, "../../etc" if k == "station" else v) for k, v in p],
            ErrorKind.BAD_IDENTIFIER,
        ),
        (lambda p: [(k, "-1" if k == "size" else v) for k, v in p], ErrorKind.SCHEMA_INVALID),
        (lambda p: [], ErrorKind.MALFORMED),
    ],
)
def test_bad_frame_metadata_is_refused_with_its_kind(change, kind) -> None:  # type: ignore[no-untyped-def]
    pairs = list(frame_properties(meta()).UserProperty)
    with pytest.raises(MessageError) as exc:
        frame_meta_from_properties(change(pairs))
    assert exc.value.kind == kind
    assert exc.value.reason


def test_json_messages_check_version_then_shape() -> None:
    ack = LedgerAck(
        frame_id=new_frame_id(),
        station="s",
        ledgered_at=datetime.now(UTC),
        duplicate=False,
        result_status="ok",
    )
    assert decode_json(LedgerAck, encode_json(ack)) == ack
    data = json.loads(encode_json(ack))
    cases = [
        (b"\xff\xfe", ErrorKind.MALFORMED),
        (b"[1, 2]", ErrorKind.MALFORMED),
        (json.dumps({**data, "schema_version": 2}).encode(), ErrorKind.UNSUPPORTED_VERSION),
        (json.dumps({**data, "surprise": 1}).encode(), ErrorKind.SCHEMA_INVALID),
        (json.dumps({**data, "station": "a/#"}).encode(), ErrorKind.BAD_IDENTIFIER),
    ]
    for payload, kind in cases:
        with pytest.raises(MessageError) as exc:
            decode_json(LedgerAck, payload)
        assert exc.value.kind == kind, payload


@given(st.binary(max_size=2048))
def test_any_bytes_parse_to_a_result_or_a_message_error(payload: bytes) -> None:
    try:
        decode_json(InferenceResult, payload)
    except MessageError as err:
        assert err.reason


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["schema", "frame_id", "station", "seq", "size", "sha256", "x"]),
            st.text(max_size=80),
        ),
        max_size=12,
    )
)
def test_any_user_properties_parse_or_raise_message_error(pairs: list[tuple[str, str]]) -> None:
    try:
        frame_meta_from_properties(pairs)
    except MessageError as err:
        assert err.reason


@given(st.dictionaries(st.text(max_size=20), st.integers() | st.text(max_size=20), max_size=8))
def test_any_json_object_parses_or_raises_message_error(obj: dict[str, object]) -> None:
    try:
        decode_json(LedgerAck, json.dumps({"schema_version": 1, **obj}).encode())
    except MessageError as err:
        assert err.reason


def test_committed_documents_match_the_models() -> None:
    """docs/ is generated by `framewire schemas export docs`; regenerate after a change."""
    for rel, text in documents().items():
        path = DOCS / rel
        assert path.exists(), f"{path} missing: run `framewire schemas export docs`"
        assert path.read_text() == text, f"{path} is stale: run `framewire schemas export docs`"


def test_asyncapi_document_names_every_channel_and_message() -> None:
    doc = json.loads(documents()["asyncapi.json"])
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["frames"]["address"] == "{prefix}/frames/{station}"
    assert doc["channels"]["announce"]["address"] == "{prefix}/announce/{station}"
    assert doc["channels"]["shadow"]["address"] == "{prefix}/shadow/{station}"
    assert doc["channels"]["escalated"]["address"] == "{prefix}/escalated/{agent}"
    # what the roles do, from the inference and ledger agents' declarations
    assert {"inferenceSendsShadow", "ledgerReceivesShadow", "inferenceReceivesEscalate"} <= set(
        doc["operations"]
    )
    assert set(doc["components"]["messages"]) == {
        "Frame",
        "Thumbnail",
        "Availability",
        "FrameAnnouncement",
        "InferenceResult",
        "Opinion",
        "LedgerAck",
        "AgentStatus",
        "DeadLetter",
        "CommandRequest",
        "CommandResponse",
    }
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].startswith("#/channels/")


def test_readme_configuration_reference_is_current() -> None:
    """The README's reference is generated: `framewire config reference`."""
    from framewire.reference import reference

    readme = (DOCS.parent / "README.md").read_text()
    assert reference() in readme, "README config reference is stale: regenerate it"
