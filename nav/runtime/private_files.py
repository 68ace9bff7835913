"""Files and directories for patient session data: 0600 files in 0700 directories.

Logs, summaries, recordings, rosters and registration files name a case and a run: they
are not for other users of the machine, whatever the umask.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_private_dir(path: str | Path) -> None:
    """Create the directory ``path`` and its missing parents, each mode 0700.

    Directories that exist are left as they are (their owner chose their mode).
    """
    missing: list[Path] = []
    at = Path(path)
    while not at.exists():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by someone else meanwhile: theirs
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask


def open_private(path: Path, *, append: bool = False) -> int:
    """Open ``path`` for writing as mode 0600 (also an existing file); returns the fd.

    Missing parent directories are created 0700.
    """
    make_private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # an older file of that name may have been world-readable
    return fd


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, mode 0600 (see ``open_private``)."""
    with os.fdopen(open_private(path), "w", encoding="utf-8") as out:
        out.write(text)
