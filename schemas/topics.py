"""The topic tree, defined once.

    <prefix>/frames/<station>                 image bytes, metadata in MQTT 5 user properties
    <prefix>/announce/<station>               FrameAnnouncement (JSON), before a frame is sent
    <prefix>/results/<station>                InferenceResult (JSON)
    <prefix>/shadow/<station>                 Opinion (JSON): a shadow agent's reading, never
                                              inventory
    <prefix>/escalate/<station>               a frame read below the confidence threshold,
                                              for the escalation agents (as on frames/, with
                                              an MQTT 5 response topic under escalated/)
    <prefix>/escalated/<agent>                InferenceResult (JSON): an escalation agent's
                                              reading, to the agent that asked for it
    <prefix>/acks/<station>                   LedgerAck (JSON), once a result is committed
    <prefix>/agents/<agent>/availability      "online" / "offline", retained, Last Will
    <prefix>/agents/<agent>/status            AgentStatus (JSON), retained
    <prefix>/agents/<agent>/thumbnail         JPEG of the last frame it handled, retained
    <prefix>/deadletter/<agent>               DeadLetter (JSON): what an agent refused, and why
    <prefix>/agents/<agent>/request           CommandRequest (JSON), answered on the request's
                                              MQTT 5 response topic, under <prefix>/responses/
    <prefix>/bridges/<station>/state          "1" / "0": the station's own broker is bridged to
                                              this one (Mosquitto's notification, retained)

Agents never format topics themselves; they call these functions, which validate every
identifier that becomes a segment.
"""

from __future__ import annotations

from dataclasses import dataclass

from framewire.schemas.ids import check_identifier

DEFAULT_PREFIX = "framewire"


def check_prefix(prefix: str) -> str:
    """A prefix is one or more identifier segments joined by '/'."""
    if not prefix:
        raise ValueError("topic prefix is empty")
    for segment in prefix.split("/"):
        check_identifier(segment, "topic prefix segment")
    return prefix


@dataclass(frozen=True)
class TopicTree:
    """All topics under one prefix. Tests use their own prefix so they never meet."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # --- frames -----------------------------------------------------------------------
    def frames(self, station: str) -> str:
        return f"{self.prefix}/frames/{check_identifier(station, 'station id')}"

    def all_frames(self) -> str:
        return f"{self.prefix}/frames/+"

    def shared_frames(self, group: str) -> str:
        """MQTT 5 shared subscription: each frame goes to one member of `group`."""
        return shared(group, self.all_frames())

    def escalations(self, station: str) -> str:
        """Frames an inference agent read below its threshold, for a second reading."""
        return f"{self.prefix}/escalate/{check_identifier(station, 'station id')}"

    def escalated(self, agent: str) -> str:
        """Where an escalation agent answers the agent that sent it a frame."""
        return f"{self.prefix}/escalated/{check_identifier(agent, 'agent id')}"

    def shadow(self, station: str) -> str:
        """Shadow agents' readings of a station's frames (they never count)."""
        return f"{self.prefix}/shadow/{check_identifier(station, 'station id')}"

    def announcements(self, station: str) -> str:
        """Where a station vouches for its frames, for the ledger (only its user may write)."""
        return f"{self.prefix}/announce/{check_identifier(station, 'station id')}"

    def all_announcements(self) -> str:
        return f"{self.prefix}/announce/+"

    # --- results and acknowledgements -------------------------------------------------
    def results(self, station: str) -> str:
        return f"{self.prefix}/results/{check_identifier(station, 'station id')}"

    def all_results(self) -> str:
        return f"{self.prefix}/results/+"

    def acks(self, station: str) -> str:
        return f"{self.prefix}/acks/{check_identifier(station, 'station id')}"

    # --- agents -------------------------------------------------------------------------
    def availability(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_identifier(agent, 'agent id')}/availability"

    def status(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_identifier(agent, 'agent id')}/status"

    def thumbnail(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_identifier(agent, 'agent id')}/thumbnail"

    def all_availability(self) -> str:
        return f"{self.prefix}/agents/+/availability"

    def all_status(self) -> str:
        return f"{self.prefix}/agents/+/status"

    def requests(self, agent: str) -> str:
        return f"{self.prefix}/agents/{check_identifier(agent, 'agent id')}/request"

    def responses(self, client: str) -> str:
        """Where a client asks for its replies (its MQTT 5 response topic)."""
        return f"{self.prefix}/responses/{check_identifier(client, 'client id')}"

    def dead_letters(self, agent: str) -> str:
        return f"{self.prefix}/deadletter/{check_identifier(agent, 'agent id')}"

    def all_dead_letters(self) -> str:
        return f"{self.prefix}/deadletter/+"

    def bridge_state(self, station: str) -> str:
        """Mosquitto's retained notification from a station's bridge: "1" connected, "0" not
        (its Last Will on the central broker)."""
        return f"{self.prefix}/bridges/{check_identifier(station, 'station id')}/state"

    def everything(self) -> str:
        return f"{self.prefix}/#"

    def segment(self, topic: str, index: int) -> str:
        """The `index`-th segment after the prefix (0 = kind, 1 = station or agent)."""
        rest = topic.removeprefix(self.prefix + "/")
        parts = rest.split("/")
        if rest == topic or index >= len(parts):
            raise ValueError(f"topic {topic!r} is not under prefix {self.prefix!r}")
        return parts[index]


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription to `topic_filter`: each message to one member."""
    return f"$share/{check_identifier(group, 'share group')}/{topic_filter}"


# --- Home Assistant, under its own discovery prefix --------------------------------------
def ha_status_topic(ha_prefix: str) -> str:
    """Where Home Assistant announces itself (its birth message, `online`)."""
    return f"{check_prefix(ha_prefix)}/status"


def ha_discovery_topic(ha_prefix: str, agent_id: str) -> str:
    """An agent's device discovery message."""
    agent = check_identifier(agent_id, "agent id")
    return f"{check_prefix(ha_prefix)}/device/framewire_{agent}/config"
