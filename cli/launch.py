"""``ornav launch``: run a stack from a launch file with a live status table.

``--host NAME`` runs one host's share of a multi-host launch file (its ``[hosts]``): that
host's nodes here, the others watched by their heartbeats (``nav.runtime.supervisor``).

``python -m cli.launch ...`` is ``ornav launch ...`` without loading every other verb
(seconds, not tens of seconds, on a busy machine): for a host's service unit, and tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler

from cli.errors import UserError
from nav.runtime import status as stack_status
from nav.runtime.launchfile import LaunchSpec, load
from nav.runtime.private_files import write_private_text
from nav.runtime.supervisor import StartupError, Supervisor

log = logging.getLogger("ornav")


def add_launch_parser(commands: Any) -> None:
    launch = commands.add_parser("launch", help="run a stack from a launch file")
    launch.add_argument("launch_file", help="e.g. launch/sim.toml")
    launch.add_argument("--duration", type=float, help="run this many seconds, then stop")
    launch.add_argument("--summary", help="write the final status as JSON here")
    launch.add_argument("--run-dir", help="logs and recordings (default runs/<stack>-<time>)")
    launch.add_argument("--no-table", action="store_true", help="no status table")
    launch.add_argument("--host", help="run this [hosts] entry's nodes (a multi-host stack)")
    launch.set_defaults(func=cmd_launch)


def _default_run_dir(stack: str) -> Path:
    return Path("runs") / f"{stack}-{datetime.now():%Y%m%d-%H%M%S}"


def cmd_launch(args: argparse.Namespace) -> int:
    launch_path = Path(args.launch_file)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(launch_path.stem)
    if args.duration is not None and args.duration <= 0:
        raise UserError(f"--duration must be > 0, got {args.duration}")
    # Short (Unix socket paths <= 107 bytes) and 0700; it holds the sockets and the roster
    # of this run only, so it goes on every way out: refused, Ctrl-C, a crash, the end.
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-"))
    try:
        launch = load(launch_path, run_dir=run_dir.resolve(), ipc_dir=ipc_dir)
        return _run_stack(launch, args)
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _run_stack(launch: LaunchSpec, args: argparse.Namespace) -> int:
    """Start, watch and stop ``launch``; the summary is written even if a node never started."""
    # Off a terminal (CI, logs) the final table goes to stderr at a width that fits it.
    console = Console(stderr=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 110)
    show_live = sys.stdout.isatty() and not args.no_table
    if show_live:
        # Log lines must go through the live display's console, or they tear the table.
        logging.getLogger().handlers[:] = [
            RichHandler(console=console, show_path=False, log_time_format="%H:%M:%S")
        ]
    supervisor = Supervisor(launch, host=args.host)

    stop_requested: list[str] = []

    def request_stop(signum: int, _frame: object) -> None:
        stop_requested.append(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    log.info(
        "starting %s (%d nodes), run dir %s, ipc sockets in %s",
        launch.path,
        len(launch.nodes),
        launch.run_dir,
        launch.ipc_dir,
    )
    live = Live(console=console, refresh_per_second=4, transient=False) if show_live else None
    startup_error = ""
    try:
        try:
            supervisor.start()
        except StartupError as error:  # start() has stopped what it started
            startup_error = str(error)
            raise
        # --duration counts from a running stack, not from the first start.
        deadline = time.monotonic() + args.duration if args.duration is not None else None
        if live is not None:
            live.start()
        while not stop_requested and (deadline is None or time.monotonic() < deadline):
            supervisor.tick()
            if live is not None:
                live.update(
                    stack_status.render(stack_status.snapshot(supervisor, time.monotonic_ns()))
                )
    finally:
        final = stack_status.snapshot(supervisor, time.monotonic_ns())
        healthy = not startup_error and supervisor.all_running()
        if live is not None:
            live.update(stack_status.render(final))
            live.stop()
        if stop_requested:
            log.info("%s received: stopping", stop_requested[0])
        supervisor.stop()
        if args.summary:
            report = stack_status.summary(final)
            for name, node in supervisor.nodes.items():
                report["nodes"][name]["final_state"] = node.state
                report["nodes"][name]["exit_code"] = node.exit_code
            report["healthy"] = healthy
            if startup_error:
                report["startup_error"] = startup_error
            write_private_text(Path(args.summary), json.dumps(report, indent=2) + "\n")
            log.info("summary written to %s", args.summary)
    if live is None and not args.no_table:
        console.print(stack_status.render(final))
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    """``ornav launch`` alone: the same arguments, one-line errors and exit codes."""
    from nav.runtime.launchfile import LaunchError

    parser = argparse.ArgumentParser(prog="ornav")
    add_launch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["launch", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(
        stream=sys.stderr,
        level="INFO",
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except (UserError, LaunchError) as error:
        print(f"ornav: {error}", file=sys.stderr)
        return 2
    except StartupError as error:
        print(f"ornav: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
