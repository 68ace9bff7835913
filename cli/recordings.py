"""``ornav inspect`` and ``ornav replay``: what a recording holds, and playing it back."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from cli.convert import cmd_inspect_plus, cmd_replay_plus
from cli.errors import UserError
from cli.playback import check_playback_args, run_playback
from nav.runtime import replay_node
from nav.runtime.recording import RECOVERY_METADATA, RESTART_METADATA, inspect_recording
from tracking.plus_sequence import is_plus_path

log = logging.getLogger("ornav")


def add_recording_parsers(commands: Any) -> None:
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


def cmd_inspect(args: argparse.Namespace) -> int:
    if is_plus_path(args.file):
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


def cmd_replay(args: argparse.Namespace) -> int:
    if is_plus_path(args.file):
        return cmd_replay_plus(args)

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
