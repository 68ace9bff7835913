"""``ornav headset --connect ENDPOINT``: the reference headset client on a terminal.

Joins a running render node's session (``render.headset_client``), prints a status line
about once a second (session, overlay state, latency from tracker sample to this client,
pose age, frames, reconnects), and at the end of ``--duration`` (or on Ctrl-C / SIGTERM)
renders what the headset shows (``--snapshot out.png``, ``render.snapshot``) and writes
``--summary FILE`` JSON:

    latency_ms      {p50, p99, max, n}  tracker sample -> client receive (ms)
    pose_age_ms     {p50, p99, max, n}  age of the newest pose at each 60 Hz display refresh
    frames, lost, superseded            scene updates received; seq gaps; skipped (latest-wins)
    stale_events, hidden_events         the client's own overlay transitions
    overlay                             the overlay state at the end
    reconnects                          joins after the first
    join_refusals                       "sessions full" answers (retried, 0.25 s doubling to 5 s)
    sessions_lost                       sessions the render node closed (evicted): rejoined
    alerts, alert_acks                  alert codes shown (once each), acks sent
    assets          {count, bytes, fetch_ms, fetched, fetched_bytes}
    snapshot        {path, renderer, overlay, banner} or null
    clock_offset_ns, clock_rtt_ns       server minus client clock; its best round trip

Bad input (endpoint, calibration file, duration) is one line ``ornav: ...``, exit 2. A run
that never joined a session writes its summary and exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from calibration.files import CalibrationFileError
from cli.errors import UserError
from render.headset_client import ClientConfig, HeadsetClient, HeadsetError
from render.snapshot import (
    RENDERERS,
    DisplayCamera,
    load_display_camera,
    meshes_from_assets,
    render_view,
    volume_or_none,
    write_png,
)

log = logging.getLogger("ornav.headset")


def _snapshot(
    client: HeadsetClient, path: Path, camera: DisplayCamera, renderer: str
) -> dict[str, Any]:
    view = client.view()
    meshes = meshes_from_assets(view.assets)
    snapshot = render_view(
        update=view.update,
        overlay=view.overlay,
        reason=view.reason,
        meshes=meshes,
        camera=camera,
        renderer=renderer,
        volume=volume_or_none(view.volume),
        deformed=view.deformed,
    )
    write_png(path, snapshot)
    log.info("snapshot %s (%s renderer): %s", path, snapshot.renderer, snapshot.banner)
    return {
        "path": str(path),
        "renderer": snapshot.renderer,
        "overlay": snapshot.overlay.value,
        "banner": snapshot.banner,
        "volume_ms": snapshot.volume_ms,
    }


def cmd_headset(args: argparse.Namespace) -> int:
    if args.duration is not None and not args.duration > 0:
        raise UserError(f"--duration must be > 0, got {args.duration}")
    try:
        camera = load_display_camera(args.display_calibration)
    except CalibrationFileError as error:
        raise UserError(f"--display-calibration: {error}") from None
    snapshot_path = Path(args.snapshot) if args.snapshot else None
    summary_path = Path(args.summary) if args.summary else None
    for path, flag in ((snapshot_path, "--snapshot"), (summary_path, "--summary")):
        if path is not None and not path.parent.is_dir():
            raise UserError(f"{flag} {path}: folder {path.parent} does not exist")
    try:
        client = HeadsetClient(
            ClientConfig(
                endpoint=args.connect,
                name=args.name,
                cache_dir=Path(args.cache_dir) if args.cache_dir else None,
            )
        )
    except HeadsetError as error:
        raise UserError(str(error)) from None

    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    def report(c: HeadsetClient) -> None:
        print(c.status_line(), flush=True)

    failed: str | None = None
    try:
        client.run(stop, duration_s=args.duration, on_second=report)
    except HeadsetError as failure:
        failed = str(failure)
    summary = client.summary()
    summary["duration_s"] = args.duration
    summary["snapshot"] = None
    try:
        if snapshot_path is not None:
            summary["snapshot"] = _snapshot(client, snapshot_path, camera, args.renderer)
    finally:
        client.close()
    if summary_path is not None:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(client.status_line(), flush=True)
    if failed is not None:
        raise UserError(failed)
    if client.stats.joins == 0:
        print(f"ornav: no render node answered at {args.connect}", file=sys.stderr)
        return 1
    return 0


def add_headset_parser(commands: Any) -> None:
    """Register ``ornav headset`` on ``commands`` (an argparse subparsers object)."""
    parser = commands.add_parser(
        "headset",
        help="the reference headset client: join a stack, measure, snapshot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--connect",
        required=True,
        metavar="ENDPOINT",
        help="the render node's headset_endpoint, e.g. ipc:///tmp/ornav-x/render.headset",
    )
    parser.add_argument("--duration", type=float, help="run this many seconds (default: until ^C)")
    parser.add_argument(
        "--snapshot", metavar="PNG", help="render the headset's view here at the end"
    )
    parser.add_argument("--summary", metavar="FILE", help="write the measured figures as JSON")
    parser.add_argument(
        "--display-calibration",
        metavar="FILE",
        help="display calibration (kind 'display'); default: the simulated headset's",
    )
    parser.add_argument("--name", default=f"ornav-headset-{int(time.time()) % 100000}")
    parser.add_argument(
        "--renderer",
        choices=RENDERERS,
        default="auto",
        help="snapshot renderer: auto (Open3D offscreen, CPU ray casting if it fails or "
        "takes over 5 s), open3d, raycast",
    )
    parser.add_argument("--cache-dir", help="keep fetched assets here, by hash, across runs")
    parser.set_defaults(func=cmd_headset)
