"""Playing a recording or a PLUS file in this process: shared by ``replay`` and ``convert``."""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.errors import UserError
from nav.runtime.bus import CommandClient
from nav.runtime.launchfile import NodeSpec, check_endpoint

log = logging.getLogger("ornav")


def check_playback_args(args: argparse.Namespace) -> None:
    """``--speed`` and ``--pub`` of ``ornav replay``; UserError names the bad one."""
    if not args.speed > 0:
        raise UserError(f"--speed must be > 0, got {args.speed}")
    problem = check_endpoint(args.pub)
    if problem:
        raise UserError(f"--pub {args.pub}: {problem}")


def run_playback(
    run: Callable[[Any, Any, threading.Event], int],
    cfg: Any,
    *,
    module: str,
    pub: str,
    status_command: str,
    describe: Callable[[dict[str, Any]], str],
) -> int:
    """Run a playback node (replay, PLUS file) in this process until it ends or Ctrl-C.

    The node runs in a thread with its own control socket; this thread asks it
    ``status_command`` once a second and logs ``describe(result)`` as progress.
    """
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-"))
    spec = NodeSpec(name="replay", module=module, pub=pub, control=f"ipc://{ipc_dir}/replay.ctl")
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(run(cfg, spec, stop)), daemon=True)
    worker.start()
    client = CommandClient(spec.control or "")
    try:
        while worker.is_alive():
            worker.join(1.0)
            if not worker.is_alive():
                break
            try:
                state = client.call(status_command, timeout_s=1.0).result
            except TimeoutError:
                continue
            log.info("%s", describe(state))
    finally:
        stop.set()
        worker.join(5.0)
        client.close()
        shutil.rmtree(ipc_dir, ignore_errors=True)  # only this run's control socket
    return result[0] if result else 1
