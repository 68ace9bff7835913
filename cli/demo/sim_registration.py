"""Registration on a running simulated stack, scripted: the sim's pointer touches the fiducials.

A test or the demo drives two nodes over their control sockets, as an operator would with
a real pointer:

1. ``registration.start`` on the nav node (dwell collection, case order);
2. ``pointer.touch`` on the simulated tracker, with the fiducials where the simulation's
   truth puts them: ``p_reference = truth_T_reference_from_image @ p_image`` (reference
   frame, so the touches ride on the breathing patient);
3. the nav node records each fiducial when the tip dwells; this module polls
   ``registration.status`` and, when a fiducial's hold has passed without it being
   recorded (an occlusion of the pointer or the reference during the hold), touches the
   fiducials again from the first one missing. The nav node collects in case order, so
   carrying on to the next fiducial would record it under the missed one's label;
4. ``registration.compute`` (FRE, predicted and, in simulation, true TRE per target), then
   ``registration.accept`` or ``registration.reject``.

Timing (``TouchPlan``): a touch script of n points takes ``n * (travel_s + dwell_s)``; the
k-th hold (0-based, from the script's first point) ends ``(k + 1) * (travel_s + dwell_s)``
after the script starts. A fiducial not recorded ``margin_s`` after its hold ended is
missed: the nav node sees a sample within milliseconds, and the next touch cannot dwell
sooner than ``travel_s + window`` (the nav node's ``dwell_s``, 0.4 s) after that hold.

Talks to the nodes only through ``nav.runtime.bus.CommandClient`` (``Commands``), with the
nav node's typed requests and replies (``nav.messages.control``): a reply that does not
read as its type is a ``ScriptedRegistrationError``, like a refusal. The clock is
injectable, so the retry logic is tested without processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from nav.case import load_case
from nav.messages import (
    AcceptRegistration,
    ComputeRegistration,
    FiducialProgress,
    FiducialsProposed,
    GetRegistrationStatus,
    JsonValue,
    PointerTouch,
    RegistrationAccepted,
    RegistrationRef,
    RegistrationStatus,
    RejectRegistration,
    Reply,
    ScriptStarted,
    StartCollection,
)
from nav.navigation import Registration
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.registration_store import save_registration
from nav.transforms import Mat4, axis_angle_to_matrix, make_rigid

COMMAND_TIMEOUT_S = 2.0

SIM_T_REFERENCE_FROM_IMAGE: Mat4 = make_rigid(
    axis_angle_to_matrix([0.0, 0.0, 1.0], math.radians(15.0))
    @ axis_angle_to_matrix([1.0, 0.0, 0.0], math.radians(-90.0)),
    [160.0, -30.0, -70.0],
)
"""Where ``launch/sim.toml`` places the shipped phantom on the simulated patient reference
(its ``truth_T_reference_from_image``, there rounded to 9 digits), mm."""


def write_true_registration(path: str | Path, *, registration_id: int = 1) -> None:
    """A registration file, as the nav node stores one, holding the simulation's truth.

    A nav node started with it restores the registration (needing verification) and
    navigates at once: for tests and benchmarks that are not about registering.
    """
    case = load_case(SHIPPED_PHANTOM_DIR)
    n = len(case.targets)
    registration = Registration(
        registration_id=registration_id,
        state="accepted",
        method="points",
        T_reference_from_image=SIM_T_REFERENCE_FROM_IMAGE,
        fre_mm=0.1,
        fiducial_errors_mm=np.full(len(case.fiducials), 0.1),
        fle_mm=0.25,
        target_names=case.targets.labels,
        predicted_tre_mm=np.full(n, 0.2),
        true_tre_mm=np.full(n, np.nan),
        fiducial_labels=case.fiducials.labels,
    )
    save_registration(path, registration, case_name=case.name, created_unix_s=time.time())


class Commands(Protocol):
    """What this module needs of a node's control socket (``nav.runtime.bus.CommandClient``)."""

    def call(self, name: str, *, timeout_s: float = ..., **args: object) -> Reply: ...


class _Request(Protocol):
    """A typed control request (``nav.messages.control``)."""

    @property
    def NAME(self) -> str: ...  # noqa: N802 (the request types' ClassVar)

    def to_args(self) -> dict[str, JsonValue]: ...


class ScriptedRegistrationError(RuntimeError):
    """A node refused a registration step; the message names the command and the reason."""


T = TypeVar("T")


def ok_result(reply: Reply, what: str) -> dict[str, JsonValue]:
    if not reply.ok:
        raise ScriptedRegistrationError(f"{what}: {reply.error}")
    return dict(reply.result)


def send(commands: Commands, request: _Request, *, timeout_s: float = COMMAND_TIMEOUT_S) -> Reply:
    """Send a typed request (``nav.messages.control``) as its ``Command``; the Reply."""
    return commands.call(request.NAME, timeout_s=timeout_s, **request.to_args())


def read_reply(reply: Reply, what: str, from_result: Callable[[dict[str, JsonValue]], T]) -> T:
    """The reply's result read as its type; a refusal or a malformed result raises."""
    result = ok_result(reply, what)
    try:
        return from_result(result)
    except ValueError as error:
        raise ScriptedRegistrationError(f"{what}: unexpected reply: {error}") from None


@dataclass(frozen=True, kw_only=True)
class TouchPlan:
    """How the simulated pointer touches each fiducial (seconds of sim time)."""

    travel_s: float = 0.8
    dwell_s: float = 1.0
    margin_s: float = 0.3

    def __post_init__(self) -> None:
        for name in ("travel_s", "dwell_s", "margin_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"TouchPlan.{name} must be finite and > 0, got {value!r}")

    @property
    def per_fiducial_s(self) -> float:
        return self.travel_s + self.dwell_s

    def duration_s(self, n: int) -> float:
        """Length of a script touching ``n`` points."""
        return n * self.per_fiducial_s

    def overdue(self, *, first: int, collected: int, elapsed_s: float) -> bool:
        """Whether fiducial ``collected`` (the next one wanted) was missed.

        ``first``: the fiducial the current script started with; ``elapsed_s``: time since
        that script started. True once its hold in that script ended ``margin_s`` ago.
        """
        k = collected - first
        return k >= 0 and elapsed_s > (k + 1) * self.per_fiducial_s + self.margin_s


@dataclass(frozen=True)
class Progress:
    """``collected`` of ``total`` fiducials; ``next_label`` None when all are in."""

    collected: int
    total: int
    next_label: str | None

    @property
    def done(self) -> bool:
        return self.collected >= self.total


@dataclass(frozen=True, kw_only=True)
class RegistrationFigures:
    """What ``registration.compute`` reported; mm. A None TRE is unknown (no truth)."""

    registration_id: int
    n_fiducials: int
    fre_mm: float
    fiducial_errors_mm: tuple[float, ...]
    predicted_tre_mm: dict[str, float | None]
    true_tre_mm: dict[str, float | None]

    @staticmethod
    def from_proposal(proposed: FiducialsProposed) -> RegistrationFigures:
        summary = proposed.summary
        return RegistrationFigures(
            registration_id=summary.registration_id,
            n_fiducials=proposed.n_fiducials,
            fre_mm=summary.fre_mm,
            fiducial_errors_mm=summary.fiducial_errors_mm,
            predicted_tre_mm=dict(summary.predicted_tre_mm),
            true_tre_mm=dict(summary.true_tre_mm),
        )

    def _known(self, values: dict[str, float | None]) -> list[float]:
        return [v for v in values.values() if v is not None]

    @property
    def true_tre_mean_mm(self) -> float | None:
        known = self._known(self.true_tre_mm)
        return float(np.mean(known)) if known else None

    @property
    def true_tre_max_mm(self) -> float | None:
        known = self._known(self.true_tre_mm)
        return max(known) if known else None

    @property
    def predicted_tre_max_mm(self) -> float | None:
        known = self._known(self.predicted_tre_mm)
        return max(known) if known else None


class SimRegistration:
    """Registers the case on a running stack with the simulated pointer (see the module).

    ``nav`` and ``tracker``: command clients of the nav node and the ``tracking.sim_node``.
    ``p_reference_fiducials`` (N, 3) mm: the case's fiducials, in case order, where the
    simulation's truth puts them in the reference frame. Drive it with :meth:`start`, then
    :meth:`step` in the caller's loop (or :meth:`wait_collected`), :meth:`compute` and
    :meth:`accept`. Not thread-safe.
    """

    def __init__(
        self,
        *,
        nav: Commands,
        tracker: Commands,
        p_reference_fiducials: npt.ArrayLike,
        plan: TouchPlan | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        points = np.asarray(p_reference_fiducials, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or len(points) < 3:
            raise ValueError(f"p_reference_fiducials must be (N >= 3, 3), got {points.shape}")
        self.nav = nav
        self.tracker = tracker
        self.points = points
        self.plan = plan or TouchPlan()
        self.clock = clock
        self.count = len(points)
        self.retries = 0  # touch scripts sent again after a missed fiducial
        self.progress = Progress(0, len(points), None)
        self._first = 0  # the fiducial the current touch script starts with
        self._t_script = 0.0  # when it was sent (clock)

    def _call(self, request: _Request, from_result: Callable[[dict[str, JsonValue]], T]) -> T:
        return read_reply(send(self.nav, request), request.NAME, from_result)

    def start(self, *, count: int | None = None) -> FiducialProgress:
        """Start collecting and touch the first ``count`` fiducials (default: all).

        Returns the nav node's ``registration.start`` reply (its progress).
        """
        if count is not None:
            if not 3 <= count <= len(self.points):
                raise ValueError(f"count must be in [3, {len(self.points)}], got {count}")
            self.count = count
        started = self._call(
            StartCollection(method="points", dwell=True), FiducialProgress.from_result
        )
        self.retries = 0
        self.progress = Progress(0, self.count, started.next_label)
        self._touch_from(0)
        return started

    def _touch_from(self, first: int) -> None:
        points = self.points[first : self.count]
        try:
            touch = PointerTouch(
                points=points.tolist(), dwell_s=self.plan.dwell_s, travel_s=self.plan.travel_s
            )
        except ValueError as error:  # as the tracker would have refused it
            raise ScriptedRegistrationError(f"{PointerTouch.NAME}: {error}") from None
        read_reply(send(self.tracker, touch), touch.NAME, ScriptStarted.from_result)
        self._first = first
        self._t_script = self.clock()

    def step(self) -> Progress:
        """Poll the nav node's progress; touch again from a missed fiducial. Returns it."""
        status = self._call(GetRegistrationStatus(), RegistrationStatus.from_result)
        progress = status.progress
        if not isinstance(progress, FiducialProgress):
            raise ScriptedRegistrationError(
                "registration.status: no fiducial collection is running"
            )
        collected = min(progress.collected, self.count)
        next_label = None if collected >= self.count else progress.next_label
        self.progress = Progress(collected, self.count, next_label)
        if not self.progress.done and self.plan.overdue(
            first=self._first, collected=collected, elapsed_s=self.clock() - self._t_script
        ):
            self.retries += 1
            self._touch_from(collected)
        return self.progress

    def wait_collected(
        self, *, timeout_s: float, between: Callable[[], object] = lambda: time.sleep(0.1)
    ) -> Progress:
        """Call :meth:`step` until all are collected or ``timeout_s`` passes; the progress.

        ``between`` runs between two polls (a test pumps its subscribers there).
        """
        deadline = self.clock() + timeout_s
        while not self.step().done and self.clock() < deadline:
            between()
        return self.progress

    def compute(self) -> RegistrationFigures:
        """``registration.compute`` from the fiducials collected so far."""
        proposed = self._call(ComputeRegistration(), FiducialsProposed.from_result)
        return RegistrationFigures.from_proposal(proposed)

    def accept(self) -> RegistrationAccepted:
        """``registration.accept``: the registration accepted and where it was saved."""
        return self._call(AcceptRegistration(), RegistrationAccepted.from_result)

    def reject(self) -> RegistrationRef:
        return self._call(RejectRegistration(), RegistrationRef.from_result)
