"""Prometheus alerting rules for a framewire station, built from the metric names in
metrics.py (a renamed metric renames what its alerts ask for) and written as a rule file
by `framewire metrics rules`.

What an operator must hear about: frames slow to process or to reach the ledger, input
dead-lettered, a queue backing up, an agent down, off the broker or degraded, no inference
agent for a station, an agent at its memory ceiling. Every alert says what to look at.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Literal

from framewire.edge_agents.runtime.metrics import (
    CAPTURE_TO_LEDGER_SECONDS,
    CONNECTED,
    DEAD_LETTERS,
    DEGRADED,
    EVENTS,
    INFERENCE_ONLINE,
    INFERENCE_SECONDS,
    MEMORY,
    MEMORY_CEILING,
    QUEUE_DEPTH,
    UPTIME,
    exported,
)

GROUP = "framewire"
SLOW_FRAME_SECONDS = 10  # processing time per frame, and capture to ledger
DEAD_LETTER_RATIO = 0.05
QUEUE_DEPTH_LIMIT = 100
HARD_MEMORY_FRACTION = 0.9  # of MemoryMax: the kernel ends the agent at 1.0
GONE_WINDOW = "1d"  # an agent not scraped for longer stops being reported down
RATE_WINDOW = "5m"

# The counter each kind of agent counts its work with (`count_throughput`): inputs handled
# are these plus what was dead-lettered.
WORK_EVENTS = ("frames.published", "frames.received", "results.ledgered")
# Runtime gauges that count work waiting; other gauges (a cache's size) are not queues.
PENDING_QUEUES = ("watcher_pending", "pending", "in_flight", "frames_waiting")
NOT_PENDING = ("cache_entries",)

_BY = "job, instance, agent"
_LOGS = "`journalctl -u 'framewire-*'` on its box"


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Literal["warning", "critical"]
    summary: str
    description: str

    def rule(self) -> dict[str, object]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


def _mean_seconds(histogram: str) -> str:
    total = f"rate({exported(histogram, 'sum')}[{RATE_WINDOW}])"
    count = f"rate({exported(histogram, 'count')}[{RATE_WINDOW}])"
    return f"sum by ({_BY}) ({total})\n  / sum by ({_BY}) ({count})\n> {SLOW_FRAME_SECONDS}"


def _literal(name: str) -> str:
    """`name` as a regular expression matching only itself, with nothing to escape in a
    PromQL string (a dot becomes `[.]`)."""
    if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
        raise ValueError(f"{name!r} is not a counter or queue name")
    return name.replace(".", "[.]")


def _dead_letter_ratio() -> str:
    dead = f"sum by ({_BY}) (rate({exported(DEAD_LETTERS)}[{RATE_WINDOW}]))"
    events = "|".join(_literal(e) for e in WORK_EVENTS)
    work = f'sum by ({_BY}) (rate({exported(EVENTS)}{{event=~"{events}"}}[{RATE_WINDOW}]))'
    # with no work counted at all (every file refused), the work is 0, not missing
    return f"{dead}\n  / ({dead}\n    + ({work}\n       or {dead} * 0))\n> {DEAD_LETTER_RATIO}"


def alerts() -> list[Alert]:
    queues = "|".join(_literal(q) for q in PENDING_QUEUES)
    return [
        Alert(
            "FramewireSlowInference",
            _mean_seconds(INFERENCE_SECONDS),
            "5m",
            "warning",
            "{{ $labels.agent }} takes {{ $value | humanizeDuration }} per frame",
            f"Inference agent {{{{ $labels.agent }}}} has taken more than "
            f"{SLOW_FRAME_SECONDS} s per frame on average for 5 minutes; frames wait for it "
            "and capture stations resend them. Look at the load of its box and at "
            "`framewire status --json` (the model in use): a busy box, a new model or large frames "
            "(max_pixels) are the usual causes. More `workers`, or another inference box in "
            "the same share_group, spread the work.",
        ),
        Alert(
            "FramewireFramesLedgeredLate",
            _mean_seconds(CAPTURE_TO_LEDGER_SECONDS),
            "10m",
            "warning",
            "frames reach {{ $labels.agent }} {{ $value | humanizeDuration }} after capture",
            f"{{{{ $labels.agent }}}} has stored frames in the ledger more than "
            f"{SLOW_FRAME_SECONDS} s after the camera wrote them, on average, for 10 "
            "minutes. While a folder of older files is imported this is expected. Otherwise "
            "see whether FramewireSlowInference, FramewireQueueDeep or "
            "FramewireNoInferenceOnline fire, and `framewire status` for a paused, degraded "
            "or offline agent.",
        ),
        Alert(
            "FramewireDeadLetters",
            _dead_letter_ratio(),
            "5m",
            "warning",
            "{{ $labels.agent }} refuses {{ $value | humanizePercentage }} of its input",
            f"More than {DEAD_LETTER_RATIO:.0%} of what {{{{ $labels.agent }}}} handled in the "
            f"last 5 minutes was dead-lettered; {exported(DEAD_LETTERS)} by kind says why, "
            "and each dead letter is on <prefix>/deadletter/{{ $labels.agent }} with its "
            "reason. For a capture station, `framewire capture quarantine` lists the files "
            "with the reason; fix the cause (the camera's output, a limit such as "
            f"max_frame_bytes) and `framewire capture retry`. Otherwise see {_LOGS}.",
        ),
        Alert(
            "FramewireQueueDeep",
            f'{QUEUE_DEPTH}{{queue=~"{queues}"}} > {QUEUE_DEPTH_LIMIT}',
            "5m",
            "warning",
            "{{ $labels.queue }} of {{ $labels.agent }} holds {{ $value }} items",
            f"Queue {{{{ $labels.queue }}}} of {{{{ $labels.agent }}}} has held more than "
            f"{QUEUE_DEPTH_LIMIT} items for 5 minutes: work arrives faster than it leaves. "
            "watcher_pending is files the capture agent has seen and not yet taken; pending "
            "is frames it recorded and the ledger has not yet acknowledged; in_flight "
            "is frames sent and not yet acknowledged by the ledger (is the inference agent "
            "or the ledger slow or down?); frames_waiting is frames an inference agent has "
            "taken and not yet processed (add workers or an inference box). "
            "`framewire status` shows every queue.",
        ),
        Alert(
            "FramewireAgentDown",
            f"max_over_time({UPTIME}[{GONE_WINDOW}])\nunless {UPTIME}",
            "2m",
            "critical",
            "{{ $labels.agent }} is down",
            "Prometheus can no longer scrape {{ $labels.agent }} ({{ $labels.instance }}): "
            "the agent is not running, or its metrics endpoint cannot be reached. On its box, "
            "`systemctl status 'framewire-*'` and `journalctl -u 'framewire-*'` say why "
            "(exit 2 is a configuration error, named in the log). An agent removed for good "
            f"stops being reported {GONE_WINDOW} after its last scrape.",
        ),
        Alert(
            "FramewireAgentOffline",
            f"{CONNECTED} == 0",
            "2m",
            "critical",
            "{{ $labels.agent }} is not connected to the broker",
            "{{ $labels.agent }} runs but has had no connection to the MQTT broker for 2 "
            "minutes, so no frames pass through it. Is the broker up (`systemctl status "
            "framewire-broker` on the capture box) and reachable from the agent's box? "
            f"{_LOGS} names a refused login or an untrusted certificate.",
        ),
        Alert(
            "FramewireAgentDegraded",
            f"{DEGRADED} == 1",
            "2m",
            "critical",
            "{{ $labels.agent }} is degraded",
            "{{ $labels.agent }} is up but cannot do its work (a full or read-only disk under "
            "its database, say) and has been for 2 minutes. `framewire status --json` shows "
            "the reason (degraded_reason), as do `systemctl status` and its log; it goes on by "
            "itself once the cause is fixed, and nothing is lost meanwhile: frames are held "
            "and resent.",
        ),
        Alert(
            "FramewireNoInferenceOnline",
            f"{INFERENCE_ONLINE} == 0\nand on ({_BY}) {CONNECTED} == 1",
            "2m",
            "critical",
            "no inference agent is online for station {{ $labels.station }}",
            "Capture agent {{ $labels.agent }} of station {{ $labels.station }} has seen no "
            "inference agent online for 2 minutes: its frames wait, and none reach the ledger. "
            "Start one (`systemctl status framewire-inference` on an inference box says why "
            "it is not running); `framewire status` lists the agents online.",
        ),
        Alert(
            "FramewireMemoryCeiling",
            f'{MEMORY}\n  > ignoring (limit) {MEMORY_CEILING}{{limit="soft"}}\n'
            f"or {MEMORY}\n  > ignoring (limit) {HARD_MEMORY_FRACTION} * "
            f'{MEMORY_CEILING}{{limit="hard"}}',
            "5m",
            "warning",
            "{{ $labels.agent }} holds {{ $value | humanize1024 }}B, at its memory ceiling",
            "{{ $labels.agent }} has held more memory than its soft ceiling (MemoryHigh: the "
            f"kernel slows it down) or over {HARD_MEMORY_FRACTION:.0%} of its hard one "
            "(MemoryMax: the kernel ends it) for 5 minutes. More workers and larger frames "
            "(max_pixels) take more memory; raise MemoryHigh and MemoryMax in the agent's "
            "systemd unit (`systemctl edit framewire-<kind>`) or lower those settings.",
        ),
    ]


def rules() -> dict[str, object]:
    """The rule file's document."""
    return {"groups": [{"name": GROUP, "rules": [a.rule() for a in alerts()]}]}


# --- YAML ------------------------------------------------------------------------------------
# A rule file holds mappings, lists and strings only; a small writer does, with no YAML
# library to depend on. Long texts are folded and expressions kept as written, so the file
# reads well; anything else is a JSON string, which YAML reads as the same string.
_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+[smhdwy]")
_NOT_PLAIN = frozenset({"true", "false", "yes", "no", "on", "off", "null", "y", "n"})
_WIDTH = 88


def _scalar(text: str) -> str:
    if _PLAIN.fullmatch(text) and text.lower() not in _NOT_PLAIN:
        return text
    return json.dumps(text, ensure_ascii=False)


def _block(text: str, indent: str) -> str | None:
    """`text` as a literal block (several lines) or a folded one (a long line), where
    reading it back gives `text` again; None where it would not."""
    lines = text.split("\n")
    if not lines[0] or lines[0][0] == " " or not lines[-1]:
        return None
    if any(line != line.rstrip() or not line.isprintable() for line in lines):
        return None
    if len(lines) > 1:
        return "|-\n" + "\n".join(indent + line if line else "" for line in lines)
    if len(text) <= _WIDTH or "  " in text:
        return None
    folded = textwrap.wrap(text, _WIDTH, break_long_words=False, break_on_hyphens=False)
    return ">-\n" + "\n".join(indent + line for line in folded)


def to_yaml(value: object, indent: str = "") -> str:
    """`value` (dicts, lists, strings) as YAML, block style."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{indent}{_scalar(str(key))}:"
            if isinstance(item, dict | list):
                out.append(f"{head}\n{to_yaml(item, indent + '  ')}" if item else f"{head} []")
            else:
                text = str(item)
                out.append(f"{head} {_block(text, indent + '  ') or _scalar(text)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict | list) and item:
                out.append(f"{indent}- {to_yaml(item, indent + '  ').removeprefix(indent + '  ')}")
            else:
                out.append(f"{indent}- {_scalar(str(item))}")
    else:
        out.append(indent + _scalar(str(value)))
    return "\n".join(out)


def render() -> str:
    """The rule file, as `framewire metrics rules` writes it."""
    return (
        "# Prometheus alerting rules for framewire, written by `framewire metrics rules`.\n"
        "# Load them with `rule_files:` in prometheus.yml; `promtool check rules` checks "
        "them.\n" + to_yaml(rules()) + "\n"
    )
