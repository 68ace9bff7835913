"""Relay node: forwards the newest pose messages, decoded and re-encoded, one hop downstream.

Subscribes (latest-wins) to ``topics`` on every node in its ``subscribe`` list and publishes
each newest message again on its own pub socket under the same topic, with its own seq and
``t_pub_ns``; ``t_sensor_ns`` inside the message is kept, so a consumer downstream measures
sensor-to-receive latency across every hop. It stands in for the nav and render nodes in
latency benchmarks and bus tests: one real decode, validate and encode per hop.

Subscribes: ``pose/*`` (configurable) from ``subscribe``.
Publishes: the same topics; ``heartbeat/<name>``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from nav.messages import ToolPose, TrackerFrame
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main


@dataclass(frozen=True)
class Config:
    topics: tuple[str, ...] = ("pose/",)


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    with NodeRuntime(spec, stop) as runtime:
        if runtime.pub is None:
            raise ValueError(f"node {spec.name!r}: a relay needs a pub endpoint")
        sub = bus.LatestSubscriber(spec.subscribe_endpoints, cfg.topics)
        runtime.watch(sub.counters)
        runtime.ready()
        try:
            while not stop.is_set():
                for received in sub.poll(POLL_TIMEOUT_S):
                    message = received.message
                    if isinstance(message, TrackerFrame | ToolPose):
                        runtime.latency.add(received.t_recv_ns - message.t_sensor_ns)
                    runtime.pub.publish(received.topic, message)
                runtime.service()
        finally:
            sub.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
