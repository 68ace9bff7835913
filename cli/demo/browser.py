"""The demo's browser side: the monitor page's URL from the web bridge, and the figures
browsers reported (``HeadsetTelemetry`` republished on ``headset/telemetry``, recorded).

A launch file without a web bridge node (``render.web.bridge_node``) has no URL; a run
where no browser connected has no browser figures (None): the summary then says nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from nav.messages import HeadsetTelemetry
from nav.messages import decode as decode_message
from nav.runtime.launchfile import LaunchSpec
from nav.runtime.recording import RecordingError, iter_recording

BRIDGE_MODULE = "render.web.bridge_node"
TELEMETRY_TOPIC = "headset/telemetry"


def monitor_url_file(launch: LaunchSpec) -> Path | None:
    """Where the launch file's web bridge writes its URL (with a pairing token), or None."""
    for spec in launch.nodes:
        if spec.module == BRIDGE_MODULE:
            url_file = spec.params.get("url_file")
            return Path(url_file) if isinstance(url_file, str) and url_file else None
    return None


def wait_for_url(path: Path, timeout_s: float) -> str | None:
    """The URL once the bridge has written it (it does so before READY), or None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if text.startswith("https://"):
            return text
        time.sleep(0.05)
    return None


def _ms(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, np.float64)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
    }


def browser_figures(recording: Path, *, exclude_client: str) -> dict[str, Any] | None:
    """Latency figures of the browsers in ``recording``: tracker sample -> page receive
    and -> applied in a drawn frame (``t + clock_offset - t_sensor``), ms; None if no
    browser reported. ``exclude_client``: the Python reference client's name."""
    receive: list[float] = []
    display: list[float] = []
    clients: set[str] = set()
    try:
        for recorded in iter_recording(recording, topics=(TELEMETRY_TOPIC,)):
            message = decode_message(recorded.payload, max_bytes=1 << 22).message
            if not isinstance(message, HeadsetTelemetry) or message.client == exclude_client:
                continue
            if message.client.startswith("clock-"):
                continue  # the page's clock worker session draws nothing
            clients.add(message.client)
            # int64 until the difference: epoch-ns client times lose precision in float64
            to_server = message.clock_offset_ns - message.t_sensor_ns
            receive += ((message.t_receive_ns + to_server) / 1e6).tolist()
            display += ((message.t_display_ns + to_server) / 1e6).tolist()
    except (RecordingError, ValueError):
        return None
    if not clients or not receive:
        return None
    return {
        "clients": sorted(clients),
        "updates_applied": len(display),
        "receive_latency_ms": _ms(receive),
        "applied_latency_ms": _ms(display),
    }
