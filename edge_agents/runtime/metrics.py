"""Prometheus metrics of one agent, served on its own port.

Counters and queue depths are read from the runtime at scrape time (one source of truth with
the status message); histograms are observed where the work happens.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge_agents.runtime.agent import AgentRuntime

logger = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _RuntimeCollector(Collector):
    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        rt = self.runtime
        agent = rt.agent_id
        info = InfoMetricFamily("framewire_agent", "framewire agent", labels=["agent"])
        info.add_metric([agent], {"kind": rt.kind, "version": rt.version})
        yield info
        events = CounterMetricFamily(
            "framewire_events", "Things the agent did, by event", labels=["agent", "event"]
        )
        letters = CounterMetricFamily(
            "framewire_dead_letters", "Input refused, by kind", labels=["agent", "kind"]
        )
        for name, value in sorted(rt.counters.items()):
            if name.startswith("dead_letters."):
                letters.add_metric([agent, name.removeprefix("dead_letters.")], value)
            else:
                events.add_metric([agent, name], value)
        yield events
        yield letters
        depth = GaugeMetricFamily(
            "framewire_queue_depth", "Current queue depths", labels=["agent", "queue"]
        )
        for name, read in rt.gauges().items():
            depth.add_metric([agent, name], read())
        yield depth
        connected = GaugeMetricFamily(
            "framewire_connected", "1 while connected to the broker", labels=["agent"]
        )
        connected.add_metric([agent], 1.0 if rt.connected.is_set() else 0.0)
        yield connected
        degraded = GaugeMetricFamily(
            "framewire_degraded",
            "1 while the agent is up but cannot do its work (status says why)",
            labels=["agent"],
        )
        degraded.add_metric([agent], 1.0 if rt.state == "degraded" else 0.0)
        yield degraded
        uptime = GaugeMetricFamily("framewire_uptime_seconds", "Agent uptime", labels=["agent"])
        uptime.add_metric([agent], rt.uptime())
        yield uptime


class AgentMetrics:
    def __init__(self, runtime: AgentRuntime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RuntimeCollector(runtime))
        self.agent = runtime.agent_id
        self._server: Any = None

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Histogram:
        return Histogram(
            name, doc, ("agent", *labels), registry=self.registry, buckets=LATENCY_BUCKETS
        )

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, ("agent", *labels), registry=self.registry)

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
