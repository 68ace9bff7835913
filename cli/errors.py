"""What every ``ornav`` subcommand shares: the bottom of the CLI layer.

Subcommand modules import ``UserError`` from here and ``cli.main`` imports the
subcommands, so nothing in the CLI imports upward (ros2cli keeps its verbs the same way).
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""
