"""Navigation node: registers the case to the patient and publishes the navigation state.

Subscribes: ``TrackerFrame`` on ``tracker_topic`` (default ``pose/``, latest-wins) from the
nodes in its ``subscribe`` list, and ``SurfaceCloud`` on ``surface/`` (a stereo or depth
camera node in that list): during a surface collection a cloud in the reference frame
joins the traced points (``surface_clouds``; ``surface_clouds_unplaced`` for a camera-frame
cloud, ``surface_clouds_idle`` outside a collection).
Publishes:
- ``nav/state`` (``NavState``): one per new tracker frame, and, when frames stop
  arriving, again every ``state_period_ms`` and at the instant the newest frame turns
  stale, so a consumer sees STALE (or REFERENCE_LOST / UNREGISTERED, whichever applies
  first, see ``nav/navigation.py``) within ``stale_after_ms`` + ~1 ms of the last frame;
- ``nav/registration`` (``RegistrationResult``): on every registration event (proposed,
  accepted, rejected, restored, verified), with the facts a consumer must not re-derive:
  the FLE its predicted TRE used, the labels of the fiducials used, and the case id
  (``navigation.case_id``). The bus being PUB/SUB, "reliable" here
  means re-published: every ``REGISTRATION_REPUBLISH_S`` the node publishes the active
  registration again, then the pending proposal if any, so a late joiner has both within
  a second. Consumers key on ``registration_id`` and ``state``;
- ``surface/pointer`` (``SurfaceCloud``, reference frame): when a surface or deformable
  compute starts, the points the pointer traced for it (the cameras' clouds are on their
  own ``surface/<name>``), so a recording holds every surface source in one form;
- ``heartbeat/<name>``: counters ``status_<STATUS>`` (states published by status),
  ``fiducials_collected``, ``surface_points_collected``, ``registrations_proposed``,
  ``registrations_accepted``, ``registrations_refused`` (surface or deformable computes
  refused after they started), ``registration_file_refused``; latency = tracker
  ``t_sensor_ns`` -> receive here.

Control: ``registration.start`` / ``collect`` / ``compute`` / ``accept`` / ``reject`` /
``verify`` / ``status`` and ``case.load``; each request and reply is a typed message of
``nav.messages.control`` (its docstrings say what each does; docs/runtime.md has the
table), the rules are the navigator session's (``nav/session.py``). Each reply is ``ok``
with the reply's result, or a one-line error (an unknown or mistyped argument, a refused
step: nothing changes). A surface ``registration.compute`` runs on a worker thread and
replies at once; its proposal comes on ``nav/registration`` and in ``registration.status``;
so does a deformable one (``deformable_device``, ``deformable_threads``), whose proposal
carries the displacement field and the organ's per-vertex confidence.

Start-up: when ``registration_file`` exists and holds a registration of this case (its
name and targets, and its case id and fiducial labels where the file records them), it is
restored as "restored" with ``needs_verification`` (the patient or the reference may
have moved while the node was down) until ``registration.verify``. A corrupt or foreign
file is logged and ignored: the node starts unregistered.

Per-frame cost: ``navigation.nav_state`` ~50 us on the phantom (see its module), plus a
decode and an encode (~10 us each): ~70 us of the 1000 us between samples at 1 kHz; a
surface collection adds ~1 us. While a surface compute runs, its thread shares the GIL
with the loop: Python releases it every 5 ms at most, so a state may be that much late.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, Self, TypeVar

import numpy as np

from calibration.files import CalibrationFileError, read_tip_offset
from nav.arrays import FloatArray
from nav.case import CaseError, load_case
from nav.collectors import DEFAULT_MAX_POINTS, DEFAULT_SPACING_MM, DwellParams
from nav.frames import REFERENCE, is_valid_tool_name
from nav.messages import (
    AcceptRegistration,
    CollectFiducial,
    Command,
    ComputeRegistration,
    GetRegistrationStatus,
    JsonValue,
    LoadCase,
    NavStatus,
    RejectRegistration,
    Reply,
    StartCollection,
    SurfaceCloud,
    TrackerFrame,
    VerifyRegistration,
)
from nav.navigation import POINTER
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime import bus
from nav.runtime.launchfile import NodeSpec
from nav.runtime.node import POLL_TIMEOUT_S, NodeRuntime, node_main
from nav.session import NavigatorSession, SessionSettings
from nav.sim_deformation import PEAK_RANGE_MM
from nav.transforms import Mat4, is_rigid

log = logging.getLogger(__name__)

R = TypeVar("R", bound="_Request")

STATE_TOPIC: Final = "nav/state"
REGISTRATION_TOPIC: Final = "nav/registration"
SURFACE_TOPIC_PREFIX: Final = "surface/"
POINTER_TRACE_TOPIC: Final = "surface/pointer"
"""The pointer's traced points of a surface or deformable compute, as a ``SurfaceCloud``."""
REGISTRATION_REPUBLISH_S: Final = 1.0
_DEVICE: Final = re.compile(r"cpu|auto|cuda(:[0-9]{1,2})?")
MAX_SURFACE_POINTS: Final = 20_000
"""Upper bound of ``surface_max_points``: 160 kB of residuals in a ``RegistrationResult``
(limit 1 MiB) and ~0.5 MB in the registration file (limit 1 MiB)."""


@dataclass(frozen=True)
class Config:
    """The nav node's launch-file params.

    - ``case``: the case folder; empty = the shipped phantom (``nav/cases/phantom``).
    - ``tracker_topic``: a topic prefix selecting one tracker's ``TrackerFrame``s (the
      default takes every tracker subscribed to; with several, name one: ``pose/sim``).
    - ``p_tip_in_pointer`` (mm, pointer marker frame): the simulator's default unless
      ``tip_calibration`` names a pivot calibration file (ornav TOML, or a PLUS device-set
      XML with a StylusTipToStylus transform), which then wins.
    - ``stale_after_ms``: a frame older than this is STALE; ``state_period_ms``: how often
      ``nav/state`` is re-published while no frames arrive.
    - ``registration_file``: where an accepted registration is written and restored from
      (a launch file gives ``{run_dir}/registration.json``); empty = not persisted.
    - ``fle_mm``: RMS fiducial localisation error (3D) for the predicted TRE: the error
      of one touched fiducial, both spaces together. 0.25 mm is a Polaris-class tracker's
      per-sample figure; the dwell average of ~40 samples is below it (~0.06 mm in the
      simulator), but a real pointer in a real divot and a fiducial picked on a CT are
      not, so it is a floor; raise it for skin markers or coarse images.
    - ``dwell_s``, ``dwell_radius_mm``: the dwell that records a fiducial
      (``navigation.DwellParams.window_s`` and ``radius_mm``).
    - ``truth_T_reference_from_image``: 16 numbers, row-major, the true registration in a
      simulation, so true TRE is reported; empty = unknown (the real world).
    - ``surface_spacing_mm``, ``surface_max_points``: a surface collection records the tip
      every ``surface_spacing_mm`` of motion, at most ``surface_max_points`` points
      (``nav.collectors``; at most ``MAX_SURFACE_POINTS``).
    - ``truth_deformation_seed``: with ``truth_T_reference_from_image``, the simulated
      organ is deformed against the case by ``nav.sim_deformation.organ_deformation``
      with this seed (the demo uses ``nav.sim_deformation.DEMO_SEED``), and the true TRE
      of every registration is measured against the deformed targets; negative (-1) =
      not deformed. ``truth_deformation_peak_mm``: its largest displacement, in [6, 10]
      mm.
    - ``deformable_device``: the torch device of a deformable fit: "cpu", "cuda",
      "cuda:<n>", or "auto" (cuda where torch sees one, else cpu). A device this machine
      lacks refuses the compute with one line (``registration.status``: it is resolved
      on the fit's worker). torch is loaded when the first deformable collection starts
      (``registration.start method=deformable``), never at start: the load holds the GIL
      for up to a second at a time, so ``nav/state`` may pause then, once per process.
    - ``deformable_threads``: torch's threads during a deformable fit (0 = torch's own
      default, one per core; torch runs nowhere else in the node). Measured on a shared
      2-core machine, an 11.5k-point fit (``tests/process/test_nav_deformable.py``): the
      largest ``nav/state`` gap during it was 21 ms with 1 thread and 18-25 ms with 2,
      but one of the two 2-thread fits took 2.5 s instead of 0.19 s (torch's threads
      contending with the loop and the tracker for the cores): 1 by default.
    """

    case: str = ""
    tracker_topic: str = "pose/"
    pointer_tool: str = POINTER
    reference_tool: str = REFERENCE
    p_tip_in_pointer: tuple[float, float, float] = (0.0, 0.0, -160.0)
    tip_calibration: str = ""
    stale_after_ms: float = 100.0
    state_period_ms: float = 50.0
    registration_file: str = ""
    fle_mm: float = 0.25
    dwell_s: float = 0.4
    dwell_radius_mm: float = 0.5
    truth_T_reference_from_image: tuple[float, ...] = ()
    surface_spacing_mm: float = DEFAULT_SPACING_MM
    surface_max_points: int = DEFAULT_MAX_POINTS
    truth_deformation_seed: int = -1
    truth_deformation_peak_mm: float = 8.0
    deformable_device: str = "cpu"
    deformable_threads: int = 1

    def __post_init__(self) -> None:
        for key in ("pointer_tool", "reference_tool"):
            if not is_valid_tool_name(getattr(self, key)):
                raise ValueError(f"key {key!r}: {getattr(self, key)!r} is not a tool name")
        if not self.tracker_topic:
            raise ValueError("key 'tracker_topic': must not be empty")
        tip = self.p_tip_in_pointer
        if len(tip) != 3 or not all(math.isfinite(v) for v in tip) or not any(tip):
            raise ValueError(f"key 'p_tip_in_pointer': expected 3 finite numbers, got {tip}")
        for key in ("stale_after_ms", "state_period_ms", "fle_mm", "surface_spacing_mm"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"key {key!r}: must be finite and > 0, got {value}")
        n = self.surface_max_points
        if isinstance(n, bool) or not isinstance(n, int) or not 3 <= n <= MAX_SURFACE_POINTS:
            raise ValueError(
                f"key 'surface_max_points': expected an integer in [3, {MAX_SURFACE_POINTS}], "
                f"got {n!r}"
            )
        try:
            self.dwell_params()
        except ValueError as error:
            raise ValueError(f"key 'dwell_s' or 'dwell_radius_mm': {error}") from None
        truth = self.truth_T_reference_from_image
        if truth and (len(truth) != 16 or not is_rigid(np.reshape(truth, (4, 4)), tol=1e-6)):
            raise ValueError(
                "key 'truth_T_reference_from_image': expected 16 numbers (row-major) of a "
                "rigid transform, or none"
            )

        seed = self.truth_deformation_seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"key 'truth_deformation_seed': expected an integer, got {seed!r}")
        if seed >= 0 and not truth:
            raise ValueError(
                "key 'truth_deformation_seed': a simulated deformation needs "
                "'truth_T_reference_from_image'"
            )
        low, high = PEAK_RANGE_MM
        peak = self.truth_deformation_peak_mm
        if isinstance(peak, bool) or not isinstance(peak, int | float) or not low <= peak <= high:
            raise ValueError(
                f"key 'truth_deformation_peak_mm': expected a number in [{low:g}, {high:g}] mm, "
                f"got {peak!r}"
            )
        device = self.deformable_device
        if not isinstance(device, str) or not _DEVICE.fullmatch(device):
            raise ValueError(
                f"key 'deformable_device': expected 'cpu', 'cuda', 'cuda:<n>' or 'auto', "
                f"got {device!r}"
            )
        threads = self.deformable_threads
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 256:
            raise ValueError(
                f"key 'deformable_threads': expected an integer in [0, 256], got {threads!r}"
            )

    def dwell_params(self) -> DwellParams:
        return DwellParams(window_s=self.dwell_s, radius_mm=self.dwell_radius_mm)

    def truth(self) -> Mat4 | None:
        if not self.truth_T_reference_from_image:
            return None
        return np.reshape(np.array(self.truth_T_reference_from_image, dtype=np.float64), (4, 4))

    def session_settings(self, p_tip_in_pointer: FloatArray) -> SessionSettings:
        """The navigator session's settings, with the tip offset actually used."""
        return SessionSettings(
            pointer_tool=self.pointer_tool,
            reference_tool=self.reference_tool,
            p_tip_in_pointer=p_tip_in_pointer,
            stale_after_ns=int(self.stale_after_ms * 1e6),
            fle_mm=self.fle_mm,
            dwell=self.dwell_params(),
            surface_spacing_mm=self.surface_spacing_mm,
            surface_max_points=self.surface_max_points,
            registration_file=self.registration_file,
            truth_T_reference_from_image=self.truth(),
            truth_deformation_seed=self.truth_deformation_seed,
            truth_deformation_peak_mm=float(self.truth_deformation_peak_mm),
            deformable_device=self.deformable_device,
            deformable_threads=self.deformable_threads,
        )


def _tip(cfg: Config) -> FloatArray:
    if cfg.tip_calibration:
        return np.asarray(read_tip_offset(cfg.tip_calibration), dtype=np.float64)
    return np.array(cfg.p_tip_in_pointer, dtype=np.float64)


# --- wiring ------------------------------------------------------------------------------


class _Request(Protocol):
    NAME: ClassVar[str]

    @classmethod
    def from_args(cls, args: Mapping[str, JsonValue]) -> Self: ...


class _Result(Protocol):
    def to_result(self) -> dict[str, JsonValue]: ...


def _serve(
    runtime: NodeRuntime,
    request_type: type[R],
    handler: Callable[[R], _Result],
) -> None:
    """Answer ``request_type.NAME``: its args read by ``from_args``, ``handler``'s reply as
    the result.

    A ValueError (bad arguments, a refused step) becomes the Reply's one-line error in
    ``NodeRuntime``.
    """

    def handle(command: Command) -> Reply:
        return Reply(ok=True, result=handler(request_type.from_args(command.args)).to_result())

    runtime.on(request_type.NAME, handle)


def _serve_session(runtime: NodeRuntime, session: NavigatorSession) -> None:
    """The control commands: each a typed request to the session; times read here."""
    _serve(runtime, StartCollection, session.start)
    _serve(runtime, CollectFiducial, lambda r: session.collect(r, now_ns=time.monotonic_ns()))
    _serve(runtime, ComputeRegistration, lambda r: session.compute(r, now_unix_ns=time.time_ns()))
    _serve(runtime, AcceptRegistration, lambda r: session.accept(r, now_unix_s=time.time()))
    _serve(runtime, RejectRegistration, session.reject)
    _serve(runtime, VerifyRegistration, session.verify)
    _serve(runtime, GetRegistrationStatus, session.status)
    _serve(runtime, LoadCase, session.load)


# --- per tick ----------------------------------------------------------------------------


class _Ticker:
    """One loop pass: the frames received in, states and registrations out.

    A state goes out for every new frame and, while none arrive, every
    ``state_period_ms`` and at the instant the newest OK frame turns stale.
    """

    def __init__(self, cfg: Config, session: NavigatorSession, runtime: NodeRuntime) -> None:
        pub = runtime.pub
        assert pub is not None
        self.pub = pub
        self.session = session
        self.counters = runtime.counters
        self.latency = runtime.latency
        self.state_period_ns = int(cfg.state_period_ms * 1e6)
        self.republish_ns = int(REGISTRATION_REPUBLISH_S * 1e9)
        self.last_status: NavStatus | None = None
        self.last_state_ns = 0
        self.next_registration_ns = 0
        self.last_epoch = -1  # the tracker epoch of session.last_frame

    def due_ns(self) -> int:
        """When the next timed state is due: the period, or the instant an OK frame goes
        stale, whichever is first."""
        due_ns = self.last_state_ns + self.state_period_ns
        last = self.session.last_frame
        if self.last_status is NavStatus.OK and last is not None:
            due_ns = min(due_ns, last.t_sensor_ns + self.session.settings.stale_after_ns + 1)
        return due_ns

    def publish_state(self, now_ns: int) -> None:
        state = self.session.state(now_ns)
        self.pub.publish(STATE_TOPIC, state)
        self.counters[f"status_{state.status.value}"] += 1
        self.last_state_ns = now_ns
        if state.status is not self.last_status:
            level = logging.WARNING if state.status is NavStatus.STALE else logging.INFO
            log.log(
                level,
                "navigation %s -> %s",
                self.last_status and self.last_status.value,
                state.status.value,
            )
            self.last_status = state.status

    def tick(self, received: list[bus.Received], due_ns: int) -> None:
        frames = sorted(
            (r for r in received if isinstance(r.message, TrackerFrame)),
            key=lambda r: r.message.t_sensor_ns,  # type: ignore[union-attr]
        )
        for r in frames:
            frame = r.message
            assert isinstance(frame, TrackerFrame)
            last = self.session.last_frame
            # Order holds within one tracker process; a restarted tracker (new epoch) may
            # map its clock anew, so its first sample is taken as is.
            if (
                last is not None
                and r.envelope.epoch == self.last_epoch
                and frame.t_sensor_ns <= last.t_sensor_ns
            ):
                self.counters["frames_out_of_order"] += 1
                continue
            self.last_epoch = r.envelope.epoch
            self.latency.add(r.t_recv_ns - frame.t_sensor_ns)
            self.session.on_frame(frame)
            self.publish_state(time.monotonic_ns())
        for r in received:
            if isinstance(r.message, SurfaceCloud):
                self.session.on_surface_cloud(r.message)
        now_ns = time.monotonic_ns()
        if not frames and now_ns >= due_ns:
            self.publish_state(now_ns)
        self.session.finish_compute()
        if now_ns >= self.next_registration_ns:
            self.next_registration_ns = now_ns + self.republish_ns
            for registration in self.session.registrations():
                self.pub.publish(REGISTRATION_TOPIC, registration.to_message())


# --- setup and run -----------------------------------------------------------------------


def run(cfg: Config, spec: NodeSpec, stop: threading.Event) -> int:
    try:
        case = load_case(cfg.case or SHIPPED_PHANTOM_DIR)
        p_tip = _tip(cfg)
    except (CaseError, CalibrationFileError) as error:
        log.error("%s: %s", spec.name, error)
        return 2
    with NodeRuntime(spec, stop) as runtime:
        pub = runtime.pub
        if pub is None:
            raise ValueError(f"node {spec.name!r}: the nav node needs a pub endpoint")
        session = NavigatorSession(
            cfg.session_settings(p_tip),
            case,
            emit=lambda registration: pub.publish(REGISTRATION_TOPIC, registration.to_message()),
            counters=runtime.counters,
            emit_trace=lambda cloud: pub.publish(POINTER_TRACE_TOPIC, cloud),
        )
        _serve_session(runtime, session)
        session.restore()
        # Surface clouds (a stereo or depth camera, tracking.stereo_node) join a surface
        # collection; latest-wins like the poses: a cloud superseded meanwhile is no loss.
        sub = bus.LatestSubscriber(
            spec.subscribe_endpoints, (cfg.tracker_topic, SURFACE_TOPIC_PREFIX)
        )
        runtime.watch(sub.counters)
        ticker = _Ticker(cfg, session, runtime)
        runtime.ready()
        try:
            while not stop.is_set():
                due_ns = ticker.due_ns()
                wait_s = min(POLL_TIMEOUT_S, max(0.0, (due_ns - time.monotonic_ns()) / 1e9))
                ticker.tick(sub.poll(wait_s), due_ns)
                runtime.service()
        finally:
            sub.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return node_main(argv, run=run, description=__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
