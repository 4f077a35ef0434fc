"""Prometheus metrics of one agent, served on its own port.

Counters and queue depths are read from the runtime at scrape time (one source of truth with
the status message); histograms are observed where the work happens. The metric names are
declared here once: the alerting rules (alerts.py) are built from the same names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from framewire.edge_agents.runtime.memory import memory_ceiling, resident_bytes

if TYPE_CHECKING:
    from framewire.edge_agents.runtime.agent import AgentRuntime

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

# Names as declared; as exported, counters end in `_total`, the info in `_info` and each
# histogram is `_bucket`, `_sum` and `_count` (see `exported`).
AGENT_INFO = "framewire_agent"  # an info: kind and version
EVENTS = "framewire_events"  # counter, by event (the runtime's counters)
DEAD_LETTERS = "framewire_dead_letters"  # counter, by kind
QUEUE_DEPTH = "framewire_queue_depth"  # gauge, by queue (the runtime's gauges)
CONNECTED = "framewire_connected"
DEGRADED = "framewire_degraded"
UPTIME = "framewire_uptime_seconds"
MEMORY = "framewire_memory_bytes"  # resident memory of the agent's process
MEMORY_CEILING = "framewire_memory_ceiling_bytes"  # by limit: hard (MemoryMax), soft
INFERENCE_ONLINE = "framewire_inference_agents_online"  # as a capture station sees them
# histograms and a gauge the inference and ledger agents observe
INFERENCE_SECONDS = "framewire_inference_seconds"
STAGE_SECONDS = "framewire_stage_seconds"
CAPTURE_TO_LEDGER_SECONDS = "framewire_capture_to_ledger_seconds"
MODEL_LOAD_SECONDS = "framewire_model_load_seconds"

COUNTERS = (EVENTS, DEAD_LETTERS)
INFOS = (AGENT_INFO,)
HISTOGRAMS = (INFERENCE_SECONDS, STAGE_SECONDS, CAPTURE_TO_LEDGER_SECONDS)


def exported(name: str, series: str = "") -> str:
    """The name a series of metric `name` has on /metrics (`series`: a histogram's
    "bucket", "sum" or "count")."""
    if name in COUNTERS:
        return f"{name}_total"
    if name in INFOS:
        return f"{name}_info"
    if name in HISTOGRAMS:
        if series not in ("bucket", "sum", "count"):
            raise ValueError(f"histogram {name} has bucket, sum and count series, not {series!r}")
        return f"{name}_{series}"
    return name


class _RuntimeCollector(Collector):
    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        rt = self.runtime
        agent = rt.agent_id
        info = InfoMetricFamily(AGENT_INFO, "framewire agent", labels=["agent"])
        info.add_metric([agent], {"kind": rt.kind, "version": rt.version})
        yield info
        events = CounterMetricFamily(
            EVENTS, "Things the agent did, by event", labels=["agent", "event"]
        )
        letters = CounterMetricFamily(
            DEAD_LETTERS, "Input refused, by kind", labels=["agent", "kind"]
        )
        for name, value in sorted(rt.counters.items()):
            if name.startswith("dead_letters."):
                letters.add_metric([agent, name.removeprefix("dead_letters.")], value)
            else:
                events.add_metric([agent, name], value)
        yield events
        yield letters
        depth = GaugeMetricFamily(QUEUE_DEPTH, "Current queue depths", labels=["agent", "queue"])
        for name, read in rt.gauges().items():
            depth.add_metric([agent, name], read())
        yield depth
        connected = GaugeMetricFamily(
            CONNECTED, "1 while connected to the broker", labels=["agent"]
        )
        connected.add_metric([agent], 1.0 if rt.connected.is_set() else 0.0)
        yield connected
        degraded = GaugeMetricFamily(
            DEGRADED,
            "1 while the agent is up but cannot do its work (status says why)",
            labels=["agent"],
        )
        degraded.add_metric([agent], 1.0 if rt.state == "degraded" else 0.0)
        yield degraded
        uptime = GaugeMetricFamily(UPTIME, "Agent uptime", labels=["agent"])
        uptime.add_metric([agent], rt.uptime())
        yield uptime


class MemoryCollector(Collector):
    """The process's resident memory and its cgroup's ceiling, read at scrape time."""

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        resident = resident_bytes()
        if resident is not None:
            memory = GaugeMetricFamily(
                MEMORY, "Resident memory of the agent's process", labels=["agent"]
            )
            memory.add_metric([self.agent], resident)
            yield memory
        ceiling = memory_ceiling()
        limits = {"hard": ceiling.hard, "soft": ceiling.soft}
        if any(value is not None for value in limits.values()):
            family = GaugeMetricFamily(
                MEMORY_CEILING,
                "Memory ceiling of the agent's cgroup: hard (MemoryMax, the kernel ends the "
                "agent there), soft (MemoryHigh, the kernel slows it down past it)",
                labels=["agent", "limit"],
            )
            for limit, value in limits.items():
                if value is not None:
                    family.add_metric([self.agent, limit], value)
            yield family


class AgentMetrics:
    def __init__(self, runtime: AgentRuntime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RuntimeCollector(runtime))
        self.registry.register(MemoryCollector(runtime.agent_id))
        self.agent = runtime.agent_id
        self._server: Any = None

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(
            name, doc, ("agent", *labels), registry=self.registry, buckets=LATENCY_BUCKETS
        )

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, ("agent", *labels), registry=self.registry)

    def inference_online(self, read: Callable[[], int], *, station: str) -> None:
        """Report `read()`, the inference agents taking frames (primaries, and a fallback
        while it stands in) as capture station `station` sees them (while there are none,
        its frames wait)."""
        gauge = self.gauge(
            INFERENCE_ONLINE,
            "Inference agents taking frames, as this capture station sees them",
            ("station",),
        )
        gauge.labels(agent=self.agent, station=station).set_function(read)

    def serve(self, host: str, port: int) -> None:
        if port == 0:
            return
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as err:
            logger.error(
                "metrics endpoint not started on %s:%d (%s); set metrics_port", host, port, err
            )
            return
        logger.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def observe_seconds(histogram: Histogram, agent: str) -> Callable[[float], None]:
    child = histogram.labels(agent=agent)
    return child.observe
