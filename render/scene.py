"""The headset's scene for one instant: structure poses in ``tracker``, overlay state, alerts.

Pure: no sockets, no files, no clock reads (``now_ns`` is an argument everywhere). The
render node (``render/render_node.py``) feeds it the newest ``NavState``, the newest
headset marker pose from the tracker, and asks for a ``SceneUpdate`` at ``now_ns``.

Protocol 2 is world-locked: the update carries ``T_tracker_from_image`` (the nav node's
model pose, pinned to the patient reference) for every structure and ``p_tip_tracker``;
each client places them in its own world with its session's ``T_xr_from_tracker``. A
client that places its view with the headset marker (the simulated headset, the
reference client) composes, right to left::

    T_display_from_image = T_display_from_headset @ inv(T_tracker_from_headset)
                           @ T_tracker_from_image

with its own display calibration and the update's ``T_tracker_from_headset``.

Overlay rule (:func:`overlay_state`). ``age = now - t_sensor``, where ``t_sensor`` is the
older of the drawn nav pose's and the headset pose's sample times; the first row that
applies wins:

=============================  ==============  =============================  =========
navigation status              headset marker  age                            overlay
=============================  ==============  =============================  =========
UNREGISTERED, REFERENCE_LOST   any             any                            HIDDEN
any                            not OK / none   any                            HIDDEN
STALE with no OK pose to draw  OK              any                            HIDDEN
any                            OK              age > hide_after (300 ms)      HIDDEN
STALE                          OK              age <= hide_after              STALE
OK                             OK              stale_after < age <= hide      STALE
OK                             OK              age <= stale_after (100 ms)    CURRENT
=============================  ==============  =============================  =========

The models drawn are those of one case (``SceneState.case_id``, ``nav.navigation.case_id``).
A pose is drawn only under a registration known to be of that case: the render node feeds
every ``RegistrationResult`` to :meth:`SceneState.on_registration`, and a nav state whose
registration is of another case, names none (recorded before case ids) or has not been
seen yet has no pose to draw (HIDDEN, alert CASE_MISMATCH or CASE_UNCONFIRMED): another
case's models are never drawn under it, whatever the table below says. Nor is a
registration whose models could not be built (a deformable field that does not fit the
case: :meth:`SceneState.refuse_models`, alert MODELS_UNAVAILABLE): the undeformed models
are never drawn under a deformable pose.

Boundaries: an age exactly at a limit is still on the better side (``>`` is the test).
When the nav status is STALE (no fresh tracker sample) the nav node sends an identity
pose, so the pose drawn is the last OK ``NavState`` of the same registration, marked
STALE, until the hide limit. A ``SceneUpdate``'s ``status`` is the navigation status *as
seen here*: OK from the nav node but older than ``stale_after`` reads STALE (the nav node
may have died). HIDDEN carries identity poses and NaN tip and distances.

Alerts (:class:`AlertMachine`): see its docstring for codes and the debounce.

Per-sample cost on the phantom (5 structures), measured for protocol 1 (best of 7 x 5000
on a shared 2-core machine): :meth:`SceneState.update` ~8 us, its ``messages.encode``
~8 us (~1.2 KB); protocol 2 drops the per-sample rigid inverse and adds one 4x4 array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from nav.messages import (
    AlertSeverity,
    NavState,
    NavStatus,
    OverlayState,
    RegistrationResult,
    SceneUpdate,
    ToolStatus,
    TrackerFrame,
)
from nav.transforms import Mat4

DEFAULT_STALE_AFTER_NS: Final = 100_000_000
DEFAULT_HIDE_AFTER_NS: Final = 300_000_000
MAX_KNOWN_REGISTRATIONS: Final = 64
"""Registration ids whose case a scene remembers (the oldest is forgotten first)."""

_NAN3 = np.full(3, np.nan)
_NAN3.setflags(write=False)
_EYE4 = np.eye(4)
_EYE4.setflags(write=False)


@dataclass(frozen=True)
class OverlayLimits:
    """Ages (ns) past which a pose is drawn STALE, then not drawn at all."""

    stale_after_ns: int = DEFAULT_STALE_AFTER_NS
    hide_after_ns: int = DEFAULT_HIDE_AFTER_NS

    def __post_init__(self) -> None:
        if not 0 < self.stale_after_ns <= self.hide_after_ns:
            raise ValueError(
                f"need 0 < stale_after ({self.stale_after_ns} ns) <= hide_after "
                f"({self.hide_after_ns} ns)"
            )


@dataclass(frozen=True, eq=False)
class HeadsetSample:
    """The headset marker in one tracker sample: ``T_tracker_from_headset`` (4, 4) mm."""

    T_tracker_from_headset: Mat4
    status: ToolStatus
    t_sensor_ns: int


def headset_sample(frame: TrackerFrame, tool: str) -> HeadsetSample | None:
    """The headset marker ``tool`` of ``frame``; None if the frame does not carry it."""
    try:
        i = frame.tools.index(tool)
    except ValueError:
        return None
    return HeadsetSample(frame.T_tracker_from_tools[i], frame.statuses[i], frame.t_sensor_ns)


def overlay_state(
    status: NavStatus, *, headset_ok: bool, has_pose: bool, age_ns: int, limits: OverlayLimits
) -> OverlayState:
    """The overlay rule of the module docstring (``status`` as seen at ``now``)."""
    if status in (NavStatus.UNREGISTERED, NavStatus.REFERENCE_LOST):
        return OverlayState.HIDDEN
    if not headset_ok or not has_pose or age_ns > limits.hide_after_ns:
        return OverlayState.HIDDEN
    if status is NavStatus.STALE or age_ns > limits.stale_after_ns:
        return OverlayState.STALE
    return OverlayState.CURRENT


@dataclass(eq=False)
class SceneState:
    """The newest inputs and what to draw from them; one per render node.

    ``structure_names`` (S) are the case's asset names, all in the ``image`` frame;
    ``case_id`` the case they belong to (``nav.navigation.case_id``).
    ``headset_marker``: the stack tracks a marker on the headset. False (a Quest with its
    own world tracking, world-locked clients only): the overlay does not depend on one,
    ``headset_ok`` is true, ``T_tracker_from_headset`` identity, and the sample time is
    the nav pose's alone.
    """

    session: str
    scene_version: int
    structure_names: tuple[str, ...]
    case_id: str = ""
    headset_marker: bool = True
    limits: OverlayLimits = field(default_factory=OverlayLimits)
    nav: NavState | None = None
    last_ok_nav: NavState | None = None
    headset: HeadsetSample | None = None

    def __post_init__(self) -> None:
        self.set_case(self.case_id, self.structure_names, self.scene_version)
        self._registration_cases: dict[int, str] = {}
        self._undrawable: set[int] = set()  # registrations whose models could not be built
        if self.headset is not None:
            self.on_headset(self.headset)

    def set_case(self, case_id: str, structure_names: tuple[str, ...], scene_version: int) -> None:
        """Draw another case's models from now on (the render node reloaded its case)."""
        self.case_id, self.structure_names = case_id, tuple(structure_names)
        self.scene_version = scene_version
        self._identities = np.repeat(np.eye(4)[None], len(self.structure_names), axis=0)
        self._identities.setflags(write=False)

    def on_registration(self, result: RegistrationResult) -> None:
        """Remember which case ``result``'s registration is of ("" = it does not say)."""
        cases = self._registration_cases
        cases.pop(result.registration_id, None)
        cases[result.registration_id] = result.case_id
        while len(cases) > MAX_KNOWN_REGISTRATIONS:
            cases.pop(next(iter(cases)))

    def refuse_models(self, registration_id: int) -> None:
        """The models registration ``registration_id`` needs could not be built (a
        deformable field that does not fit the case): nothing is drawn under it."""
        self._undrawable.add(registration_id)
        while len(self._undrawable) > MAX_KNOWN_REGISTRATIONS:
            self._undrawable.discard(min(self._undrawable))

    def case_code(self, registration_id: int) -> str | None:
        """None if registration ``registration_id`` is of the case drawn; else why not.

        CASE_MISMATCH: it is of another case, or the newest nav state says the nav node
        navigates another case (it may reach us before that case's registration does).
        CASE_UNCONFIRMED: not seen yet, or it names no case (a recording made before case
        ids). MODELS_UNAVAILABLE: its models could not be built (:meth:`refuse_models`).
        0 (no registration) is None: nothing is drawn without one anyway.
        """
        if registration_id == 0:
            return None
        if registration_id in self._undrawable:
            return "MODELS_UNAVAILABLE"
        if self.nav is not None and self.nav.case_id and self.nav.case_id != self.case_id:
            return "CASE_MISMATCH"
        registered = self._registration_cases.get(registration_id)
        if not registered:
            return "CASE_UNCONFIRMED"
        return None if registered == self.case_id else "CASE_MISMATCH"

    def on_nav(self, nav: NavState) -> None:
        """Take a new nav state (newer than the last; the caller checks ordering)."""
        self.nav = nav
        if nav.status is NavStatus.OK:
            self.last_ok_nav = nav
        elif nav.status is not NavStatus.STALE:
            # UNREGISTERED / REFERENCE_LOST: the old pose must never come back as STALE.
            self.last_ok_nav = None

    def on_headset(self, sample: HeadsetSample) -> None:
        self.headset = sample

    def _drawn(self) -> NavState | None:
        nav = self.nav
        if nav is None or self.case_code(nav.registration_id) is not None:
            return None  # never another case's models under this registration
        if nav.status is NavStatus.OK:
            return nav
        ok = self.last_ok_nav
        if nav.status is NavStatus.STALE and ok is not None:
            if ok.registration_id == nav.registration_id:
                return ok
        return None

    def update(self, now_ns: int) -> SceneUpdate:
        """The ``SceneUpdate`` for ``now_ns`` (same monotonic clock as ``t_sensor_ns``)."""
        nav, headset = self.nav, self.headset if self.headset_marker else None
        drawn = self._drawn()
        status = nav.status if nav is not None else NavStatus.STALE
        headset_ok = not self.headset_marker or (
            headset is not None and headset.status is ToolStatus.OK
        )
        source = drawn if drawn is not None else nav
        times = [t.t_sensor_ns for t in (source, headset) if t is not None]
        t_sensor_ns = min(times) if times else 0
        age_ns = now_ns - t_sensor_ns
        if status is NavStatus.OK and age_ns > self.limits.stale_after_ns:
            status = NavStatus.STALE  # seen from here: the nav node may be gone
        overlay = overlay_state(
            status,
            headset_ok=headset_ok,
            has_pose=drawn is not None,
            age_ns=age_ns,
            limits=self.limits,
        )
        if overlay is OverlayState.HIDDEN or drawn is None:
            Ts = self._identities
            p_tip = _NAN3
            target_d = np.full(len(nav.target_names) if nav else 0, np.nan)
            critical_d = np.full(len(nav.critical_names) if nav else 0, np.nan)
        else:
            T_tracker_from_image = drawn.T_tracker_from_image
            Ts = np.repeat(T_tracker_from_image[None], len(self.structure_names), axis=0)
            p_tip = T_tracker_from_image[:3, :3] @ drawn.p_tip_image + T_tracker_from_image[:3, 3]
            target_d = drawn.target_distances_mm
            critical_d = drawn.critical_distances_mm
        T_headset = headset.T_tracker_from_headset if headset_ok and headset else _EYE4
        return SceneUpdate(
            session=self.session,
            scene_version=self.scene_version,
            t_sensor_ns=t_sensor_ns,
            frame_number=source.frame_number if source is not None else 0,
            status=status,
            overlay=overlay,
            headset_ok=headset_ok,
            needs_verification=bool(nav.needs_verification) if nav else False,
            registration_id=nav.registration_id if nav else 0,
            structure_names=self.structure_names,
            T_tracker_from_structures=Ts,
            p_tip_tracker=p_tip,
            T_tracker_from_headset=T_headset,
            target_names=nav.target_names if nav else (),
            target_distances_mm=target_d,
            critical_names=nav.critical_names if nav else (),
            critical_distances_mm=critical_d,
            predicted_tre_mm=nav.predicted_tre_mm if nav else math.nan,
            age_ms=age_ns / 1e6,
        )

    def transition_times_ns(self) -> tuple[int, ...]:
        """The instants at which the overlay of the current inputs gets worse by age alone.

        A node wakes at these (plus 1 ns) so STALE and HIDDEN go out on time even when
        no input arrives.
        """
        drawn = self._drawn()
        if drawn is None:
            return ()
        if not self.headset_marker:
            t = drawn.t_sensor_ns
        elif self.headset is None:
            return ()
        else:
            t = min(drawn.t_sensor_ns, self.headset.t_sensor_ns)
        return (t + self.limits.stale_after_ns, t + self.limits.hide_after_ns)


# --- alerts --------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertEvent:
    """An alert to raise: a stable ``code``, its severity and one line for the display."""

    code: str
    severity: AlertSeverity
    text: str


CONDITION_ALERTS: Final[dict[str, AlertEvent]] = {
    "UNREGISTERED": AlertEvent(
        "UNREGISTERED", AlertSeverity.WARNING, "No registration: the overlay is hidden"
    ),
    "REFERENCE_LOST": AlertEvent(
        "REFERENCE_LOST",
        AlertSeverity.CRITICAL,
        "Patient reference not tracked: the overlay is hidden",
    ),
    "CASE_MISMATCH": AlertEvent(
        "CASE_MISMATCH",
        AlertSeverity.CRITICAL,
        "Registration is of another case than the models loaded here: the overlay is hidden",
    ),
    "CASE_UNCONFIRMED": AlertEvent(
        "CASE_UNCONFIRMED",
        AlertSeverity.WARNING,
        "The registration's case is not confirmed: the overlay is hidden",
    ),
    "MODELS_UNAVAILABLE": AlertEvent(
        "MODELS_UNAVAILABLE",
        AlertSeverity.CRITICAL,
        "The registration's deformed models could not be built: the overlay is hidden",
    ),
    "HEADSET_LOST": AlertEvent(
        "HEADSET_LOST", AlertSeverity.WARNING, "Headset not tracked: the overlay is hidden"
    ),
    "HIDDEN": AlertEvent(
        "HIDDEN", AlertSeverity.CRITICAL, "No current tracking data: the overlay is hidden"
    ),
    "STALE": AlertEvent(
        "STALE", AlertSeverity.WARNING, "Tracking data delayed: the overlay is out of date"
    ),
}
RECOVERED: Final = AlertEvent("RECOVERED", AlertSeverity.INFO, "Overlay current again")


def condition_code(update: SceneUpdate, case_code: str | None = None) -> str | None:
    """Why ``update`` is not a current overlay (a ``CONDITION_ALERTS`` key), or None.

    ``case_code``: :meth:`SceneState.case_code` of the update's registration.
    """
    if update.overlay is OverlayState.CURRENT:
        return None
    if update.status is NavStatus.UNREGISTERED:
        return "UNREGISTERED"
    if update.status is NavStatus.REFERENCE_LOST:
        return "REFERENCE_LOST"
    if case_code is not None:
        return case_code
    if not update.headset_ok:
        return "HEADSET_LOST"
    if update.overlay is OverlayState.HIDDEN:
        return "HIDDEN"
    return "STALE"


@dataclass(eq=False)
class AlertMachine:
    """Alerts from the stream of scene updates and registration events, debounced.

    Conditions (one at a time, worst first): UNREGISTERED, REFERENCE_LOST, CASE_MISMATCH,
    CASE_UNCONFIRMED, MODELS_UNAVAILABLE, HEADSET_LOST, HIDDEN (pose too old), STALE; see
    :func:`condition_code`.
    Events: REGISTRATION_ACCEPTED (once per registration id), NEEDS_VERIFICATION (once per
    restored registration id), RECOVERED.

    Debounce, so a flapping marker raises a handful of alerts, not hundreds:

    - an *episode* opens at the first non-current update and closes after the overlay has
      been CURRENT for ``recover_after_ns`` without a break (RECOVERED is raised then, and
      only if the episode raised anything);
    - within and across episodes a condition code is raised again only when it differs
      from the episode's current code *and* it was last raised at least
      ``repeat_after_ns`` ago.

    So a marker flapping faster than ``recover_after_ns`` raises one alert, then one
    reminder per ``repeat_after_ns``; a slower flap raises at most a loss and a RECOVERED
    per ``repeat_after_ns``. The overlay state itself is never debounced: each update
    says exactly what may be drawn.
    """

    recover_after_ns: int = 500_000_000
    repeat_after_ns: int = 10_000_000_000
    _episode_open: bool = False
    _episode_raised: bool = False
    _code: str | None = None
    _clear_since_ns: int | None = None
    _last_raised_ns: dict[str, int] = field(default_factory=dict)
    _accepted_id: int = -1
    _verification_id: int = -1
    _needs_verification: bool = False

    def on_scene(
        self, update: SceneUpdate, now_ns: int, case_code: str | None = None
    ) -> list[AlertEvent]:
        """Alerts due for ``update`` (published at ``now_ns``; ``case_code`` as for
        :func:`condition_code`)."""
        events = self._verification(update.registration_id, update.needs_verification)
        code = condition_code(update, case_code)
        if code is None:
            self._code = None
            if self._episode_open:
                if self._clear_since_ns is None:
                    self._clear_since_ns = now_ns
                if now_ns - self._clear_since_ns >= self.recover_after_ns:
                    self._episode_open = False
                    if self._episode_raised:
                        events.append(RECOVERED)
            return events
        self._clear_since_ns = None
        if not self._episode_open:
            self._episode_open, self._episode_raised = True, False
        if code != self._code:
            self._code = code
            last = self._last_raised_ns.get(code)
            if last is None or now_ns - last >= self.repeat_after_ns:
                self._last_raised_ns[code] = now_ns
                self._episode_raised = True
                events.append(CONDITION_ALERTS[code])
        return events

    def on_registration(self, result: RegistrationResult) -> list[AlertEvent]:
        """Alerts due for a registration event (republished events raise nothing new)."""
        events: list[AlertEvent] = []
        if result.state == "accepted" and result.registration_id != self._accepted_id:
            self._accepted_id = result.registration_id
            events.append(
                AlertEvent(
                    "REGISTRATION_ACCEPTED",
                    AlertSeverity.INFO,
                    f"Registration accepted: FRE {result.fre_mm:.2f} mm",
                )
            )
        if result.state in ("accepted", "restored"):
            events += self._verification(result.registration_id, result.needs_verification)
        return events

    def _verification(self, registration_id: int, needs: bool) -> list[AlertEvent]:
        self._needs_verification = needs
        if not needs or registration_id == self._verification_id:
            return []
        self._verification_id = registration_id
        return [
            AlertEvent(
                "NEEDS_VERIFICATION",
                AlertSeverity.WARNING,
                "Registration restored after a restart: verify it on a landmark",
            )
        ]

    def standing_codes(self) -> tuple[str, ...]:
        """Codes still true now, for a headset that joins late: the episode's condition
        and NEEDS_VERIFICATION while it holds."""
        codes: list[str] = []
        if self._episode_open and self._code is not None:
            codes.append(self._code)
        if self._needs_verification:
            codes.append("NEEDS_VERIFICATION")
        return tuple(codes)
