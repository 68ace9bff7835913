"""``ornav``: the one command-line entry point.

Every subcommand prints progress on long work and, on bad input, one line
``ornav: <what is wrong>`` on stderr with exit code 2 (no traceback). This module is the
top of the CLI: it imports every subcommand module; they import only ``cli.errors``
and the layers below.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cli.calibrate import add_calibrate_parser
from cli.case import add_case_parser
from cli.convert import add_convert_parser
from cli.demo.command import add_demo_parser
from cli.errors import EXIT_BAD_INPUT, UserError
from cli.headset import add_headset_parser
from cli.keys import add_keys_parser
from cli.launch import add_launch_parser
from cli.recordings import add_recording_parsers
from cli.register import add_register_parser
from cli.validate.command import add_validate_parser
from nav.runtime.launchfile import LaunchError
from nav.runtime.recording import RecordingError
from nav.runtime.supervisor import StartupError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ornav", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_launch_parser(commands)
    add_recording_parsers(commands)
    add_calibrate_parser(commands)
    add_case_parser(commands)
    add_convert_parser(commands)
    add_headset_parser(commands)
    add_keys_parser(commands)
    add_demo_parser(commands)
    add_register_parser(commands)
    add_validate_parser(commands)
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
    raise SystemExit(main())
