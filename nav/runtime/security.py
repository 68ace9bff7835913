"""A stack's security settings: decided once by the supervisor, handed to every node.

``resolve`` reads the launch file and this host's keys directory:
- no tcp endpoint: nothing to secure (ipc lives in the run's 0700 directory);
- tcp and ``insecure = true``: in the clear, with a red banner on every status table;
- tcp otherwise: this host's key pair must exist (``ornav keys init``), else the stack
  refuses to start with one line. Servers let in this host's own key, the stack's
  ``[hosts]`` keys (the launch file is as trusted as the code it runs) and the keys
  directory's allow-list; clients present this host's key and expect, at each tcp host,
  the public key the launch file gives for it (this host's own where none is given).

The supervisor passes the decision to its nodes as JSON in ``ORNAV_SECURITY`` (no secret
in it: each node reads the secret key from the 0700 keys directory itself), and a node
applies it before it opens a socket (``apply_environment``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from nav.runtime import bus
from nav.runtime.bus_auth import allow_list_for
from nav.runtime.keys import KeysError, KeyStore
from nav.runtime.keys_dir import keys_dir as default_keys_dir
from nav.runtime.launchfile import LaunchSpec

SECURITY_ENV = "ORNAV_SECURITY"
MODES = ("none", "insecure", "curve")


@dataclass(frozen=True)
class StackSecurity:
    """``mode``: none (no tcp), insecure (tcp in the clear), curve (tcp secured)."""

    mode: str
    keys_dir: str = ""
    # tcp host address -> the public key (Z85) of the host serving there
    server_keys: dict[str, str] = field(default_factory=dict)
    # name -> public key (Z85) allowed in besides the keys directory's allow-list
    fixed_allowed: dict[str, str] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(
            {
                "mode": self.mode,
                "keys_dir": self.keys_dir,
                "server_keys": self.server_keys,
                "fixed_allowed": self.fixed_allowed,
            }
        )

    @staticmethod
    def from_env(text: str) -> StackSecurity:
        """Parse ``ORNAV_SECURITY``; ValueError on anything else."""
        try:
            raw = json.loads(text)
            security = StackSecurity(
                mode=raw["mode"],
                keys_dir=raw["keys_dir"],
                server_keys={str(k): str(v) for k, v in raw["server_keys"].items()},
                fixed_allowed={str(k): str(v) for k, v in raw["fixed_allowed"].items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{SECURITY_ENV}: not a stack security setting: {error}") from None
        if security.mode not in MODES:
            raise ValueError(f"{SECURITY_ENV}: mode {security.mode!r} is not one of {MODES}")
        return security

    def bus_security(self) -> bus.Security | None:
        """The bus's ``Security`` (loads this host's pair); None unless mode is curve."""
        if self.mode != "curve":
            return None
        store = KeyStore(Path(self.keys_dir))
        own = store.load()
        fixed = [(HOST_SELF, own.public)]
        fixed += [(name, key.encode("ascii")) for name, key in self.fixed_allowed.items()]
        return bus.Security(
            own=bus.CurveKeys(own.public, own.secret),
            allow=allow_list_for(store.directory, fixed),
            server_keys={host: key.encode("ascii") for host, key in self.server_keys.items()},
        )


HOST_SELF = "this-host"


def resolve(
    launch: LaunchSpec, *, host: str | None = None, keys_dir: Path | None = None
) -> StackSecurity:
    """The stack's security; KeysError (one line) when tcp needs keys that are missing.

    ``host``: the [hosts] entry this machine is (its public key in the file must be ours).
    """
    if not launch.uses_tcp():
        return StackSecurity("none")
    if launch.insecure:
        return StackSecurity("insecure")
    directory = keys_dir if keys_dir is not None else default_keys_dir()
    store = KeyStore(directory)
    try:
        own = store.load()
    except KeysError as error:
        raise KeysError(
            f"{launch.path}: tcp endpoints need CurveZMQ keys ({error}); "
            "or set insecure = true in [stack] to run in the clear"
        ) from None
    if host is not None:
        listed = launch.hosts[host].public_key
        if listed != own.public.decode("ascii"):
            raise KeysError(
                f"{launch.path}: host {host!r} lists public key {listed[:8]}..., but this "
                f"machine's key ({directory}) is {own.public.decode('ascii')[:8]}...: "
                "wrong --host, or the file needs this host's new key"
            )
    return StackSecurity(
        "curve",
        keys_dir=str(directory),
        server_keys={h.address: h.public_key for h in launch.hosts.values()},
        fixed_allowed={name: h.public_key for name, h in launch.hosts.items()},
    )


def apply_environment() -> StackSecurity | None:
    """Apply ``ORNAV_SECURITY`` to this process's bus (a node under a supervisor).

    None when unset (a node run by hand or by a test: tcp without keys only warns).
    ValueError/KeysError when it is set but unusable: the node must not start.
    """
    text = os.environ.get(SECURITY_ENV)
    if text is None:
        return None
    security = StackSecurity.from_env(text)
    bus.use_security(security.bus_security(), insecure=security.mode == "insecure")
    return security
