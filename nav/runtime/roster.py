"""Which publisher epochs the supervisor vouches for: the roster file of a running stack.

Every message carries its publisher's ``epoch`` (see ``nav.messages``). The supervisor
draws a fresh epoch for each start of each node, hands it to the child in
``ORNAV_EPOCH``, and lists the epochs of the processes it runs *now* in a roster file
(``ORNAV_ROSTER``) inside the run's 0700 ipc directory, written before the child starts.

A subscriber in that stack trusts a stream only while its epoch is on the roster. So a
process that took a crashed node's tcp port, or an orphan from an earlier start, is not
taken for the node the supervisor restarted: its messages are counted as ``untrusted``
and dropped. A node started by hand (no ``ORNAV_ROSTER``) trusts every epoch, as before.

File format (JSON, mode 0600, replaced atomically):
``{"format": "ornav-roster", "version": 1, "epochs": {"tracker": 123, ...}}``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "ornav-roster"
VERSION = 1
EPOCH_ENV = "ORNAV_EPOCH"
ROSTER_ENV = "ORNAV_ROSTER"
TRUSTED_NODES_ENV = "ORNAV_TRUSTED_NODES"
MAX_EPOCH = (1 << 63) - 1
RELOAD_INTERVAL_NS = 20_000_000  # an unknown epoch re-reads the file at most every 20 ms
WARN_INTERVAL_NS = 5_000_000_000

EpochTrust = Callable[[int], bool]


def new_epoch() -> int:
    """A random epoch in [1, 2**63): 0 is reserved for "unknown" (old recordings)."""
    return secrets.randbelow(MAX_EPOCH) + 1


def own_epoch() -> int:
    """This process's epoch: the supervisor's ``ORNAV_EPOCH`` if valid, else a new one."""
    text = os.environ.get(EPOCH_ENV, "")
    try:
        epoch = int(text)
    except ValueError:
        return new_epoch()
    return epoch if 1 <= epoch <= MAX_EPOCH else new_epoch()


def write_roster(path: Path, epochs: Mapping[str, int]) -> None:
    """Replace the roster at ``path`` with ``epochs`` (node name -> epoch), mode 0600."""
    text = json.dumps({"format": FORMAT, "version": VERSION, "epochs": dict(epochs)})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)  # readers see the old roster or the new one, never half a file


def read_roster(path: Path) -> dict[str, int]:
    """The roster's node -> epoch map; ValueError naming the file if it is not a roster."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the roster: {error}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise ValueError(f"{path}: not an {FORMAT} v{VERSION} file")
    epochs = raw.get("epochs")
    if not isinstance(epochs, dict) or not all(
        isinstance(k, str) and type(v) is int and 1 <= v <= MAX_EPOCH for k, v in epochs.items()
    ):
        raise ValueError(f"{path}: 'epochs' must map node names to epochs in [1, 2**63)")
    return dict(epochs)


class RosterTrust:
    """``trusted(epoch)``: is ``epoch`` on the roster now? Re-reads the file when needed.

    ``nodes``: trust only the epochs of these nodes (the ones this subscriber reads;
    ``ORNAV_TRUSTED_NODES`` under a supervisor); None trusts any node on the roster. So a
    stranger who copies the epoch of a node this subscriber does not read is refused.
    Epochs travel in the clear on tcp without CurveZMQ: one copied from a node this
    subscriber does read is still taken, until the streams are authenticated.

    The file is re-read when it changed, at most every ``RELOAD_INTERVAL_NS``: the
    supervisor may just have restarted a node. An epoch that left the roster (its process
    was replaced) is no longer trusted after that re-read. A roster that cannot be read
    trusts nothing (fail closed) and says so at most every ``WARN_INTERVAL_NS``.
    """

    def __init__(
        self,
        path: Path,
        *,
        nodes: Collection[str] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.path = path
        self.nodes = None if nodes is None else frozenset(nodes)
        self._clock_ns = clock_ns
        self._trusted: frozenset[int] = frozenset()
        self._stamp: tuple[int, int] = (-1, -1)  # (inode, mtime): a replace gives a new inode
        self._next_reload_ns = 0
        self._next_warning_ns = 0
        self._reload(force=True)

    def _reload(self, *, force: bool = False) -> None:
        now_ns = self._clock_ns()
        if not force and now_ns < self._next_reload_ns:
            return
        self._next_reload_ns = now_ns + RELOAD_INTERVAL_NS
        try:
            stat = self.path.stat()
            stamp = (stat.st_ino, stat.st_mtime_ns)
            if stamp == self._stamp and not force:
                return
            epochs = read_roster(self.path)
        except (OSError, ValueError) as error:
            self._trusted, self._stamp = frozenset(), (-1, -1)
            if now_ns >= self._next_warning_ns:
                self._next_warning_ns = now_ns + WARN_INTERVAL_NS
                log.warning("roster unreadable, trusting no publisher: %s", error)
            return
        self._stamp = stamp
        self._trusted = frozenset(
            epoch for node, epoch in epochs.items() if self.nodes is None or node in self.nodes
        )

    def __call__(self, epoch: int) -> bool:
        self._reload()  # rate-limited: a clock read per message, a stat every 20 ms at most
        return epoch in self._trusted


def trust_from_environment() -> EpochTrust | None:
    """The stack's roster check if this process runs under a supervisor, else None.

    ``ORNAV_TRUSTED_NODES`` (comma-separated node names, set by the supervisor from the
    node's ``subscribe``) narrows the trust to the nodes this process reads.
    """
    path = os.environ.get(ROSTER_ENV)
    if not path:
        return None
    names = os.environ.get(TRUSTED_NODES_ENV)
    nodes = None if names is None else [n for n in names.split(",") if n]
    return RosterTrust(Path(path), nodes=nodes)
