"""A node that misbehaves on request, for supervisor tests (never shipped in a launch file).

Params: ``ready_delay_s`` before READY (< 0: never), ``exit_after_s`` after READY (< 0:
never) with ``exit_code``, ``ignore_signals`` (e.g. ["SIGINT", "SIGTERM"]) and
``journal``: a file where it appends ``start <name> <pid>`` and ``stop <name> <pid>``;
``fail_before_ready`` raises at start-up.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main


@dataclass(frozen=True)
class Config:
    ready_delay_s: float = 0.0
    exit_after_s: float = -1.0
    exit_code: int = 1
    ignore_signals: tuple[str, ...] = ()
    journal: str = ""
    fail_before_ready: bool = False


def _journal(cfg: Config, line: str) -> None:
    if cfg.journal:
        with Path(cfg.journal).open("a") as f:
            f.write(line + "\n")


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    for name in cfg.ignore_signals:
        signal.signal(signal.Signals[name], signal.SIG_IGN)
    _journal(cfg, f"start {spec.name} {os.getpid()}")
    if cfg.fail_before_ready:
        raise RuntimeError("deliberate failure before READY")
    if cfg.ready_delay_s < 0:
        while not stop.wait(POLL_TIMEOUT_S):
            pass
        return 0
    stop.wait(cfg.ready_delay_s)
    with NodeRuntime(spec, stop) as runtime:
        runtime.ready()
        t_ready = time.monotonic()
        while not stop.wait(POLL_TIMEOUT_S):
            runtime.service()
            if 0 <= cfg.exit_after_s <= time.monotonic() - t_ready:
                _journal(cfg, f"exit {spec.name} {os.getpid()}")
                return cfg.exit_code
    _journal(cfg, f"stop {spec.name} {os.getpid()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
