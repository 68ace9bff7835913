"""Where this host keeps its secrets: CURVE key pairs, the allow-list, the local CA and
pairing tokens. One directory, mode 0700, for every kind of key (``ornav keys``).

``ORNAV_KEYS`` moves it; the default is ``$XDG_DATA_HOME/ornav/keys`` (``~/.local/share``
when unset), the user's data directory rather than the repository or the run directory, so
keys outlive runs and never end up in a recording or a commit.
"""

from __future__ import annotations

import os
from pathlib import Path

from nav.runtime.private_files import make_private_dir

KEYS_ENV = "ORNAV_KEYS"


def keys_dir(*, create: bool = False) -> Path:
    """The keys directory (``ORNAV_KEYS`` or the user's data dir); made 0700 if ``create``."""
    override = os.environ.get(KEYS_ENV, "").strip()
    if override:
        path = Path(override).expanduser()
    else:
        data_home = os.environ.get("XDG_DATA_HOME", "").strip() or "~/.local/share"
        path = Path(data_home).expanduser() / "ornav" / "keys"
    if create:
        make_private_dir(path)
    return path
