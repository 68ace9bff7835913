"""The alerts a render node raises: numbered ``Alert`` messages from the alert machine's events.

Pure: no sockets, no clock reads (``now_ns`` is an argument). ``render.scene.AlertMachine``
decides *when* an alert is due (its codes and debounce); :class:`AlertLog` turns each due
event into an ``Alert`` of this node's session, numbered from 1 in the order raised, and
keeps the last one per code so that a headset joining late gets those still standing.
The render node publishes each on ``scene/alert`` and sends it to every headset session.
"""

from __future__ import annotations

import logging
from collections import Counter

from nav.messages import Alert, RegistrationResult, SceneUpdate
from render.scene import AlertEvent, AlertMachine

log = logging.getLogger(__name__)


class AlertLog:
    """Alerts of one render node ``session`` (32 hex); counts ``alerts_raised``."""

    def __init__(self, session: str, counters: Counter[str]) -> None:
        self.session = session
        self.counters = counters
        self.machine = AlertMachine()
        self.last_by_code: dict[str, Alert] = {}
        self._next_id = 1

    def on_scene(self, update: SceneUpdate, now_ns: int, case_code: str | None) -> list[Alert]:
        """The alerts due for a scene update published at ``now_ns`` (see
        ``AlertMachine.on_scene``)."""
        return self._raise(self.machine.on_scene(update, now_ns, case_code), now_ns)

    def on_registration(self, result: RegistrationResult, now_ns: int) -> list[Alert]:
        """The alerts due for a registration event received at ``now_ns``."""
        return self._raise(self.machine.on_registration(result), now_ns)

    def standing(self) -> list[Alert]:
        """The last alert of each condition still true now: what a late joiner is sent."""
        return [
            self.last_by_code[code]
            for code in self.machine.standing_codes()
            if code in self.last_by_code
        ]

    def _raise(self, events: list[AlertEvent], now_ns: int) -> list[Alert]:
        alerts = []
        for event in events:
            alert = Alert(
                session=self.session,
                alert_id=self._next_id,
                severity=event.severity,
                code=event.code,
                text=event.text,
                t_ns=now_ns,
            )
            self._next_id += 1
            self.counters["alerts_raised"] += 1
            self.last_by_code[event.code] = alert
            log.log(
                logging.INFO if event.severity.value == "INFO" else logging.WARNING,
                "alert %d %s: %s",
                alert.alert_id,
                event.code,
                event.text,
            )
            alerts.append(alert)
        return alerts
