"""The declared runtime: what an agent does not declare it cannot do, batches run as
declared, and a request is answered while the data lane is full."""

from __future__ import annotations

import ast
import asyncio
import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from framewire.edge_agents.capture.agent import SPEC as CAPTURE
from framewire.edge_agents.ledger.agent import SPEC as LEDGER
from framewire.edge_agents.runtime import (
    AgentRuntime,
    AgentSettings,
    AgentSpec,
    Lane,
    Receive,
    Send,
)
from framewire.edge_agents.runtime.batching import Batcher
from framewire.edge_agents.runtime.endpoints import RUNTIME, UndeclaredError
from framewire.inference_agent.agent import SPEC as INFERENCE
from framewire.samples import card_jpeg, load_specs, sample_catalog_path
from framewire.schemas.channels import ACKS, FRAMES, RESULTS
from tests.conftest import USERS, Pipeline, cli_env, jpeg_bytes, wait_until
from tests.test_pipeline import capture_rows

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"capture": CAPTURE, "inference": INFERENCE, "ledger": LEDGER}


def _runtime(spec: AgentSpec) -> AgentRuntime:
    settings = AgentSettings(agent_id="unit-1", metrics_port=0, ha_discovery=False)
    return AgentRuntime(settings, spec, persistent=False)


SMALL = AgentSpec(
    kind="ledger",
    receives=(Receive(RESULTS, "results", "data"),),
    sends=(Send(ACKS, "acks"),),
    lanes=(Lane("data", capacity=4),),
    counters={"results.ledgered": "results stored"},
    gauges={"depth": "how deep"},
    commands={"backup": "back up"},
)


def test_what_a_spec_does_not_declare_is_refused() -> None:
    async def main() -> None:
        rt = _runtime(SMALL)

        async def handler(message: object) -> None: ...

        rt.receive(RESULTS, handler)  # declared
        with pytest.raises(UndeclaredError, match="frames"):
            rt.receive(FRAMES, handler)
        with pytest.raises(UndeclaredError, match="shared"):
            rt.receive(RESULTS, handler, share="inference")
        rt.count("results.ledgered")
        with pytest.raises(UndeclaredError, match=r"results\.ledgerd"):
            rt.count("results.ledgerd")  # a typo fails where it is made
        assert rt.counters["results.ledgered"] == 1
        assert rt.counters["dead_letters.malformed"] == 0  # every declared one, from 0
        rt.gauge("depth", lambda: 0)
        with pytest.raises(UndeclaredError):
            rt.gauge("deepth", lambda: 0)
        with pytest.raises(UndeclaredError):
            rt.command("format_disk", _no_command)
        # publishing is checked before anything reaches the network
        with pytest.raises(UndeclaredError, match="frames"):
            await rt.publish(rt.topics.frames("station-1"), b"x")
        with pytest.raises(UndeclaredError, match="responses/x/y"):
            await rt.publish(f"{rt.topics.prefix}/responses/x/y", b"x")

    asyncio.run(main())


async def _no_command(args: object) -> tuple[str, dict[str, object]]:
    return "", {}


def _counted_names(path: Path) -> set[str]:
    """Counter names an agent module counts with a literal name (`.count("name")`)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "count"
            and "runtime" in ast.unparse(node.func.value)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_counter_an_agent_counts_is_declared(kind: str) -> None:
    folder = {"capture": "edge_agents/capture", "ledger": "edge_agents/ledger"}.get(
        kind, "inference_agent"
    )
    declared = set(SPECS[kind].merged(RUNTIME).counters)
    for path in (ROOT / folder).glob("*.py"):
        undeclared = _counted_names(path) - declared
        assert not undeclared, f"{path.name} counts {undeclared}, which {kind} does not declare"


def test_aiomqtt_private_attributes_are_used_only_in_the_adapter() -> None:
    private = {"_disconnected", "_client", "_queue"}
    for path in (ROOT / "edge_agents").rglob("*.py"):
        if path.name == "mqtt_adapter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                owner = ast.unparse(node.value)
                assert "client" not in owner.lower(), f"{path}: {owner}.{node.attr}"


def test_the_asyncapi_operations_are_what_the_agents_declare() -> None:
    from framewire.contract import documents

    ops = json.loads(documents()["asyncapi.json"])["operations"]
    # what capture really does, which a hand-written table once left out
    assert ops["captureReceivesResults"]["channel"]["$ref"] == "#/channels/results"
    assert ops["inferenceReceivesFrames"]["summary"].endswith("(MQTT 5 shared subscription)")
    for spec in SPECS.values():
        for receive in spec.receives:
            assert f"{spec.kind}Receives{receive.channel.name.capitalize()}" in ops
        for send in spec.sends:
            assert f"{spec.kind}Sends{send.channel.name.capitalize()}" in ops


def test_a_batch_runs_once_full_or_once_waited_for() -> None:
    async def main() -> None:
        seen: list[list[int]] = []

        async def run(items: list[int]) -> list[int]:
            seen.append(items)
            await asyncio.sleep(0)
            return [i * 10 for i in items]

        batcher: Batcher[int, int] = Batcher(run, max_size=3, max_wait=60)
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        assert outcomes == [0, 10, 20, 30, 40, 50]
        assert seen == [[0, 1, 2], [3, 4, 5]]  # full batches never wait out max_wait
        await batcher.close()

    asyncio.run(main())


def test_a_group_commit_takes_what_arrived_while_the_last_one_ran() -> None:
    async def main() -> None:
        seen: list[list[int]] = []
        release = asyncio.Event()

        async def commit(items: list[int]) -> list[int]:
            seen.append(items)
            if len(seen) == 1:
                await release.wait()
            return items

        batcher: Batcher[int, int] = Batcher(commit, max_size=100)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        release.set()
        assert await first == 0
        assert await asyncio.gather(*rest) == [1, 2, 3, 4]
        assert seen == [[0], [1, 2, 3, 4]]  # alone when alone, together when they piled up
        await batcher.close()

    asyncio.run(main())


def test_a_failed_batch_fails_each_of_its_items_and_nothing_else() -> None:
    async def main() -> None:
        async def run(items: list[int]) -> list[int]:
            if 3 in items:
                raise OSError("disk full")
            return items

        batcher: Batcher[int, int] = Batcher(run, max_size=2)
        outcomes = await asyncio.gather(
            *(batcher.submit(i) for i in range(6)), return_exceptions=True
        )
        assert outcomes[0:2] == [0, 1]
        assert all(isinstance(o, OSError) for o in outcomes[2:4])
        assert outcomes[4:] == [4, 5]
        await batcher.close()

    asyncio.run(main())


def test_a_request_is_answered_while_frames_wait_in_the_data_lane(pipeline: Pipeline) -> None:
    """Frames that take the OCR a while each fill the inference agent's frames lane; a
    status request goes through the control lane and is answered at once, while more
    frames wait than `queue_size`. With one loop for every message a request waited behind
    every frame already delivered, and so could only ever be answered with at most
    `queue_size` waiting."""
    catalog = str(sample_catalog_path())
    pipeline.agents["inference"].env.update(FRAMEWIRE_CATALOG=catalog, FRAMEWIRE_QUEUE_SIZE="16")
    pipeline.start("ledger", "capture")
    rng = random.Random(3)
    specs = load_specs()
    for i in range(60):
        tmp = pipeline.captures / f".{i}.tmp"
        tmp.write_bytes(card_jpeg(specs[i % len(specs)], rng))
        tmp.rename(pipeline.captures / f"card-{i:02d}.jpg")

    # capture holds them until an inference agent is online, then sends them together: the
    # frames lane fills at once, however fast or slow this machine reads a card
    def recorded() -> int:
        try:
            return len(capture_rows(pipeline.state_db))
        except sqlite3.OperationalError:  # not created yet
            return 0

    wait_until(lambda: recorded() == 60, timeout=120, what="capture recording the 60 photos")
    pipeline.start("inference")
    env = cli_env(pipeline.broker, "operator")

    def waiting() -> int:
        out = subprocess.run(
            [sys.executable, "-m", "framewire", "request", "inference", "status", "--wait", "30"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        depth: int = json.loads(out.stdout)["data"]["queue.frames_waiting"]
        return depth

    wait_until(lambda: waiting() > 16, timeout=300, what="an answer while the lane is full")


def test_agents_outlast_a_long_outage_and_say_online_again(pipeline: Pipeline) -> None:
    """The broker gone for 35 s (a client that gives up after 30 s would be left running,
    connected to nothing) and back without its persistence, so every retained `online`
    is gone: each agent reconnects on its own, says it is online again, and frames flow."""
    from tests.test_faults import restart_broker
    from tests.test_pipeline import ledger_rows, observer, wait_online

    p = pipeline
    for agent in p.agents.values():
        agent.env["FRAMEWIRE_RECONNECT_MAX"] = "2"
    p.start()
    with observer(p) as rec:
        wait_online(rec, p, *USERS.values())
    restart_broker(p, keep_persistence=False, down_for=35)
    with observer(p) as rec:  # a new subscriber: it sees only what is retained now
        wait_online(rec, p, *USERS.values())
        (p.captures / "after-the-outage.jpg").write_bytes(jpeg_bytes(7))
        wait_until(lambda: len(ledger_rows(p.ledger_db)) == 1, timeout=120, what="ledgered")
    for agent in p.agents.values():
        assert agent.proc is not None and agent.proc.poll() is None


def test_there_is_one_rejection_exception() -> None:
    """A file, a frame, an image shape and a message are refused the same way: one class,
    so one `except` in the error boundaries catches every refusal with its kind."""
    from framewire.edge_agents.capture.inspect import FrameRejectedError
    from framewire.edge_agents.runtime.images import ImageShapeError
    from framewire.inference_agent.stages import StageError
    from framewire.schemas import MessageError

    assert FrameRejectedError is StageError is ImageShapeError is MessageError
