"""``ornav``: the one command-line entry point.

Every subcommand prints progress on long work and, on bad input, one line
``ornav: <what is wrong>`` on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from nav.runtime import status as stack_status
from nav.runtime.launchfile import LaunchError, LaunchSpec, load
from nav.runtime.recording import RecordingError, inspect_recording
from nav.runtime.supervisor import StartupError, Supervisor, write_private_text
from tracking.plus_sequence import is_plus_path

log = logging.getLogger("ornav")

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


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
    supervisor = Supervisor(launch)

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


def cmd_inspect(args: argparse.Namespace) -> int:
    if is_plus_path(args.file):
        from nav.convert import cmd_inspect_plus

        return cmd_inspect_plus(args)
    summary = inspect_recording(args.file)
    table = Table(title=f"{summary.path}", title_justify="left")
    for column in ("topic", "schema", "messages", "rate Hz"):
        table.add_column(column, justify="left" if column in ("topic", "schema") else "right")
    for topic in summary.topics:
        table.add_row(
            topic.topic, topic.schema_name, str(topic.message_count), f"{topic.rate_hz:.1f}"
        )
    start = summary.start_wall.isoformat(timespec="seconds") if summary.start_wall else "-"
    table.caption = f"{summary.message_count} messages, {summary.duration_s:.2f} s from {start}"
    if summary.message_count == 0 and summary.damage:
        raise UserError(f"{summary.path}: no readable message ({summary.damage})")
    console = Console(width=120)
    console.print(table)
    # Not in the caption: rich wraps that to the table's width, and these must read whole.
    notes = [f"DAMAGED: {summary.damage}"] if summary.damage else []
    for line in notes + _recording_notes(summary.notes):
        console.print(line, soft_wrap=True, highlight=False)
    return 0


def _recording_notes(notes: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Caption lines for a recording recovered after a crash, or recorded after one."""
    from nav.runtime.recording import RECOVERY_METADATA, RESTART_METADATA

    def gap(values: Mapping[str, str]) -> str:
        text = values.get("gap_ns", "")
        return f"{int(text) / 1e9:.2f} s" if text.lstrip("-").isdigit() else "unknown"

    lines = []
    if RECOVERY_METADATA in notes:
        recovery = notes[RECOVERY_METADATA]
        then = recovery.get("continued_in") or "the next file"
        lines.append(
            f"recovered after a crash: {recovery.get('recovered_messages', '?')} messages; "
            f"{gap(recovery)} gap before recording resumed in {then}"
        )
    if RESTART_METADATA in notes:
        restart = notes[RESTART_METADATA]
        lines.append(
            f"continues {restart.get('previous', '?')} after a {gap(restart)} gap (a crash)"
        )
    return lines


def check_playback_args(args: argparse.Namespace) -> None:
    """``--speed`` and ``--pub`` of ``ornav replay``; UserError names the bad one."""
    from nav.runtime.launchfile import check_endpoint

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
    from nav.runtime.bus import CommandClient
    from nav.runtime.launchfile import NodeSpec

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


def cmd_replay(args: argparse.Namespace) -> int:
    if is_plus_path(args.file):
        from nav.convert import cmd_replay_plus

        return cmd_replay_plus(args)
    from nav.runtime import replay_node  # only this command needs the replay node

    check_playback_args(args)
    summary = inspect_recording(args.file)  # also refuses a non-MCAP file
    total = summary.message_count
    if total == 0:
        damage = f" ({summary.damage})" if summary.damage else ""
        raise UserError(f"{args.file}: no readable message to replay{damage}")
    if summary.damage:
        log.warning("%s: %s", args.file, summary.damage)
    log.info("replaying %s (%d messages) on %s at %gx", args.file, total, args.pub, args.speed)
    cfg = replay_node.Config(
        path=str(args.file), speed=args.speed, loop=args.loop, start_delay_s=args.start_delay
    )
    return run_playback(
        replay_node.run,
        cfg,
        module="nav.runtime.replay_node",
        pub=args.pub,
        status_command="replay",
        describe=lambda s: f"{s['state']}: {s['replayed']} messages, pass {s['passes']}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ornav", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    launch = commands.add_parser("launch", help="run a stack from a launch file")
    launch.add_argument("launch_file", help="e.g. launch/sim.toml")
    launch.add_argument("--duration", type=float, help="run this many seconds, then stop")
    launch.add_argument("--summary", help="write the final status as JSON here")
    launch.add_argument("--run-dir", help="logs and recordings (default runs/<stack>-<time>)")
    launch.add_argument("--no-table", action="store_true", help="no status table")
    launch.set_defaults(func=cmd_launch)

    inspect = commands.add_parser("inspect", help="topics, counts, rates of a recording")
    inspect.add_argument("file", help="an MCAP recording or a PLUS sequence (.mha, .nrrd)")
    inspect.set_defaults(func=cmd_inspect)

    replay = commands.add_parser("replay", help="republish a recording with its timing")
    replay.add_argument("file", help="an MCAP recording or a PLUS sequence (.mha, .nrrd)")
    replay.add_argument("--pub", default="ipc:///tmp/ornav-replay.pub", help="endpoint to bind")
    replay.add_argument("--speed", type=float, default=1.0, help="2.0 plays twice as fast")
    replay.add_argument("--loop", action="store_true", help="start again at the end")
    replay.add_argument(
        "--start-delay", type=float, default=0.5, help="seconds for subscribers to join"
    )
    replay.set_defaults(func=cmd_replay)

    # Imported here: calibration.cli imports UserError from this module.
    from calibration.cli import add_calibrate_parser

    add_calibrate_parser(commands)

    from nav.case_cli import add_case_parser  # here for the same reason

    add_case_parser(commands)

    from nav.convert import add_convert_parser  # here for the same reason

    add_convert_parser(commands)

    from render.headset_cli import add_headset_parser  # here for the same reason

    add_headset_parser(commands)

    from nav.demo import add_demo_parser  # here for the same reason

    add_demo_parser(commands)

    from nav.register_cli import add_register_parser  # here for the same reason

    add_register_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=str(args.log_level).upper(),
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args))
    except (UserError, LaunchError, RecordingError) as error:
        print(f"ornav: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StartupError as error:
        print(f"ornav: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run the importable nav.cli, not this __main__ copy of it: subcommand modules raise
    # nav.cli.UserError, and that must be the class main() catches.
    from nav.cli import main as _main

    raise SystemExit(_main())
