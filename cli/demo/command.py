"""``ornav demo``: the whole chain on simulated data, scripted, with a summary at the end.

Runs a launch file's stack (default ``launch/sim.toml``) in this process's supervisor, as
``ornav launch`` does, plus the reference headset client ``ornav headset`` as a process
of its own (a real headset is another device) joined to the render node's session
socket, and drives the scenario of ``cli.demo.script`` over the nodes' control sockets:
the simulated pointer touches the fiducials (registration by dwell), the registration is
computed and accepted (FRE; true TRE at each target from the simulation's truth), then
the pointer comes down on a target while the reference breathes, is occluded once on cue
(``tool.occlude``) and now and then at random (the launch file's dropouts), and the
overlay follows in the headset.

While it runs: a live panel (phase, time, registration figures, the stack's status
table) on a terminal, one log line per phase otherwise. At the end: a summary table and,
with ``--summary``, the JSON of ``cli.demo.script.build_summary``. Exit code 0 only when
the registration was accepted, every node ran to the end without a restart, and the
headset client wrote its summary; 1 otherwise; 130 after Ctrl-C (everything is stopped
and the summary still written); 2 for bad input (one line).

The run directory holds ``logs/`` (each node's and the headset client's), the recording,
``registration.json``, ``snapshot.png`` and ``headset.json``. A demo run directory is
reusable: the outputs of a previous demo in it are deleted first (and listed in the log),
since the recorder never overwrites a file and the nav node would restore the previous
registration.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.logging import RichHandler
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cli.demo.browser import browser_figures, monitor_url_file, wait_for_url
from cli.demo.case_option import with_case
from cli.demo.deformable import (
    DEFORMABLE_DURATION_S,
    DEFORMABLE_PHASE_S,
    RIGID_MAX_FRE_DEFORMED_MM,
    SCENARIOS,
    DeformableStep,
    models_at_headset_ms,
    stack_deformation,
    trace_in_reference,
    tre_figures,
    with_deformation,
)
from cli.demo.script import (
    DEFAULT_DURATION_S,
    MAX_ACCEPT_FRE_MM,
    MIN_FIDUCIALS,
    OCCLUSION_S,
    NavPlan,
    RegistrationOutcome,
    ScenarioPlan,
    build_summary,
    count_episodes,
    min_duration_s,
    nav_plan,
    plan_scenario,
)
from cli.demo.sim_registration import (
    Commands,
    RegistrationFigures,
    ScriptedRegistrationError,
    SimRegistration,
    send,
)
from cli.demo.sim_xr import SimXrWorld, XrRegistrationRun, with_xr_registration
from cli.errors import UserError
from nav.case import Case, CaseError, load_case
from nav.messages import NavState, NavStatus, OccludeTool, PointerRest, PointerTouch
from nav.messages import decode as decode_message
from nav.phantom import SHIPPED_PHANTOM_DIR
from nav.runtime import bus
from nav.runtime import status as stack_status
from nav.runtime.launchfile import LaunchError, LaunchSpec, NodeSpec, load
from nav.runtime.private_files import write_private_text
from nav.runtime.process import ChildProcess
from nav.runtime.recording import RecordingError, inspect_recording, iter_recording
from nav.runtime.supervisor import Supervisor
from nav.sim_deformation import OrganDeformation
from nav.transforms import apply

log = logging.getLogger("ornav.demo")

# The shipped stack, found next to the nav package (the repository or the install), not in
# the current directory: `ornav demo` run from elsewhere must not read another sim.toml.
DEFAULT_LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "sim.toml"
SNAPSHOT_NAME = "snapshot.png"
HEADSET_SUMMARY_NAME = "headset.json"
HEADSET_LOG_NAME = "headset.log"
HEADSET_NAME = "demo-headset"
NAV_FIRST_STATE_TIMEOUT_S = 10.0
STEP_PERIOD_S = 0.1  # how often the scenario polls the nav node (an operator's UI rate)
# After its --duration, the client renders the snapshot (Open3D offscreen, or CPU ray
# casting if that takes over 5 s) and writes its summary: ~6 s on a 2-core machine without
# a GPU. Past its duration plus this, it is stopped.
HEADSET_EXIT_GRACE_S = 60.0
XR_COLLECTION_S = 8.0  # --xr-registration: the controller waved this long
MONITOR_URL_TIMEOUT_S = 5.0  # the bridge writes it before READY: this is only a margin
# Stopping it: SIGINT asks it to finish (snapshot and summary: the time above), SIGTERM
# again, SIGKILL as a last resort.
HEADSET_SIGINT_TIMEOUT_S = 30.0
HEADSET_SIGTERM_TIMEOUT_S = 5.0

MODULES = {
    "tracker": "tracking.sim_node",
    "nav": "nav.nav_node",
    "recorder": "nav.runtime.recorder_node",
    "render": "render.render_node",
}
"""The nodes the demo drives or reads, by role; found in the launch file by module."""


# --- the stack the demo needs -----------------------------------------------------------


@dataclass(frozen=True)
class DemoStack:
    """What the demo takes from the launch file: its nodes by role, the case, the truth."""

    launch: LaunchSpec
    nodes: dict[str, NodeSpec]
    case: Case
    truth_T_reference_from_image: np.ndarray
    headset_endpoint: str
    deformation: OrganDeformation | None = None
    """The simulated organ's deformation (the nav node's ``truth_deformation_seed``)."""

    def control(self, role: str) -> str:
        endpoint = self.nodes[role].control
        if not endpoint:
            raise UserError(f"{self.launch.path}: node {self.nodes[role].name!r} has no control")
        return endpoint


def _headset_endpoint(launch: LaunchSpec, render: NodeSpec) -> str:
    endpoint = render.params.get("headset_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise UserError(f"{launch.path}: node {render.name!r} has no headset_endpoint")
    return endpoint


def demo_stack(launch: LaunchSpec) -> DemoStack:
    """Check that ``launch`` has what the demo drives; UserError naming what is missing."""
    nodes: dict[str, NodeSpec] = {}
    for role, module in MODULES.items():
        found = [spec for spec in launch.nodes if spec.module == module]
        if not found:
            raise UserError(f"{launch.path}: the demo needs a {module} node ({role}); none found")
        nodes[role] = found[0]
    for role in ("tracker", "nav", "recorder"):
        if not nodes[role].control:
            raise UserError(f"{launch.path}: node {nodes[role].name!r} needs a control endpoint")
    params = nodes["nav"].params
    truth = params.get("truth_T_reference_from_image")
    if not isinstance(truth, list) or len(truth) != 16:
        raise UserError(
            f"{launch.path}: node {nodes['nav'].name!r} needs truth_T_reference_from_image "
            "(where the simulation placed the case): the demo touches the fiducials there"
        )
    case_path = params.get("case") or SHIPPED_PHANTOM_DIR
    try:
        case = load_case(case_path)
    except CaseError as error:
        raise UserError(str(error)) from None
    return DemoStack(
        launch=launch,
        nodes=nodes,
        case=case,
        truth_T_reference_from_image=np.reshape(np.array(truth, dtype=np.float64), (4, 4)),
        headset_endpoint=_headset_endpoint(launch, nodes["render"]),
        deformation=stack_deformation(case, dict(params)),
    )


def previous_outputs(stack: DemoStack) -> list[Path]:
    """Files a previous demo left in the run directory that this one would trip over.

    The recording (and ``<stem>-<n>`` siblings: the recorder never overwrites), the
    registration file (the nav node would restore it), the snapshot, the headset summary
    and the logs. Only files inside the run directory are ever listed.
    """
    run_dir = stack.launch.run_dir.resolve()
    candidates: list[Path] = [run_dir / SNAPSHOT_NAME, run_dir / HEADSET_SUMMARY_NAME]
    recording = stack.nodes["recorder"].params.get("path")
    if isinstance(recording, str) and recording:
        path = Path(recording)
        candidates += [path, *path.parent.glob(f"{path.stem}-*{path.suffix}")]
    registration = stack.nodes["nav"].params.get("registration_file")
    if isinstance(registration, str) and registration:
        candidates.append(Path(registration))
    candidates += sorted((run_dir / "logs").glob("*.log"))
    inside = []
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_file() and resolved.is_relative_to(run_dir) and resolved not in inside:
            inside.append(resolved)
    return inside


# --- the headset client -----------------------------------------------------------------


class HeadsetProcess:
    """``ornav headset`` as a child process in its own session (Ctrl-C reaches only us)."""

    def __init__(
        self, *, endpoint: str, duration_s: float, run_dir: Path, display_calibration: str = ""
    ) -> None:
        self.snapshot = run_dir / SNAPSHOT_NAME
        self.summary_path = run_dir / HEADSET_SUMMARY_NAME
        self.log_path = run_dir / "logs" / HEADSET_LOG_NAME
        self.duration_s = duration_s
        command = [
            sys.executable,
            "-m",
            "cli.main",
            "headset",
            "--connect",
            endpoint,
            "--duration",
            f"{duration_s:.3f}",
            "--snapshot",
            str(self.snapshot),
            "--summary",
            str(self.summary_path),
            "--name",
            HEADSET_NAME,
        ]
        if display_calibration:  # the render node's, so the snapshot uses the same display
            command += ["--display-calibration", display_calibration]
        self.child = ChildProcess(
            name="headset client",
            argv=command,
            env={"OPENBLAS_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=self.log_path,
            stderr="stdout",
            new_session=True,  # a Ctrl-C at the terminal reaches only the demo
            sigint_timeout_s=HEADSET_SIGINT_TIMEOUT_S,
            sigterm_timeout_s=HEADSET_SIGTERM_TIMEOUT_S,
        )
        self.t_start = 0.0

    def start(self) -> None:
        self.child.start()
        self.t_start = time.monotonic()
        log.info("headset client started (pid %d), log %s", self.child.pid, self.log_path)

    @property
    def pid(self) -> int | None:
        """Its pid once started; None before."""
        return self.child.pid

    @property
    def exit_code(self) -> int | None:
        return self.child.poll()

    @property
    def running(self) -> bool:
        return self.child.pid is not None and self.child.poll() is None

    def overdue(self, now: float) -> bool:
        """Still running well past its own ``--duration`` (and the time to write out)."""
        return self.running and now > self.t_start + self.duration_s + HEADSET_EXIT_GRACE_S

    def stop(self) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL; the exit code (None if never started)."""
        if self.child.pid is None:
            return None
        return self.child.stop()

    def read_summary(self) -> tuple[dict[str, Any] | None, str]:
        """The client's summary JSON, or None and why."""
        try:
            document = json.loads(self.summary_path.read_text())
        except FileNotFoundError:
            return None, f"{self.summary_path} not written (log: {self.log_path})"
        except (OSError, ValueError) as error:
            return None, f"{self.summary_path}: {error}"
        if not isinstance(document, dict):
            return None, f"{self.summary_path}: not a JSON object"
        return document, ""


# --- the scenario -----------------------------------------------------------------------


class Scenario:
    """The scripted operator: registration, then navigation to a target (see demo_script).

    ``step(elapsed_s)`` is called from the main loop with the time since the scenario
    started; it polls or commands the nodes at most every ``STEP_PERIOD_S``.
    """

    def __init__(
        self,
        *,
        plan: ScenarioPlan,
        stack: DemoStack,
        nav: Commands,
        tracker: Commands,
        on_phase: Callable[[str], None],
        deformable: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.stack = stack
        self.tracker = tracker
        self.on_phase = on_phase
        truth = stack.truth_T_reference_from_image
        # Where the fiducials and the target really are: on and in the deformed organ.
        moved = stack.deformation.deformed if stack.deformation is not None else np.asarray
        self.registration = SimRegistration(
            nav=nav,
            tracker=tracker,
            p_reference_fiducials=apply(truth, moved(stack.case.fiducials.points_lps)),
            plan=plan.touch,
            clock=clock,
        )
        self.target_name = stack.case.targets.labels[0]
        self.p_target_reference = apply(truth, moved(stack.case.targets.points_lps[:1]))[0]
        self.deformable = (
            DeformableStep(
                nav=nav,
                tracker=tracker,
                path_reference=trace_in_reference(stack.case, stack.deformation, truth),
            )
            if deformable and stack.deformation is not None
            else None
        )
        self.phase = "starting"
        self.detail = ""
        self.outcome = RegistrationOutcome(planned=plan.n_fiducials, collected=0, retries=0)
        self.figures: RegistrationFigures | None = None
        self.nav_plan: NavPlan | None = None
        self.t_nav_s = 0.0
        self.t_nav_ns: int | None = None  # monotonic, when the approach started
        self.occluded = False
        self.command_timeouts = 0
        self._next_step_s = 0.0

    def _set_phase(self, phase: str, detail: str) -> None:
        self.phase, self.detail = phase, detail
        self.on_phase(f"{phase}: {detail}")

    def step(self, elapsed_s: float) -> None:
        if elapsed_s < self._next_step_s:
            return
        self._next_step_s = elapsed_s + STEP_PERIOD_S
        try:
            if self.phase == "starting":
                self._start_registration()
            elif self.phase == "registration":
                self._registration_step(elapsed_s)
            elif self.phase == "deformable":
                self._deformable_step(elapsed_s)
            elif self.phase == "navigation":
                self._navigation_step(elapsed_s)
        except TimeoutError as error:  # a node busy or restarting: try again next step
            self.command_timeouts += 1
            log.warning("%s", error)
        except ScriptedRegistrationError as error:  # e.g. the nav node restarted meanwhile
            if self.phase in ("starting", "registration", "deformable"):
                self._fail(str(error), elapsed_s)
            else:
                log.warning("%s", error)

    def _start_registration(self) -> None:
        n = self.plan.n_fiducials
        self.registration.start(count=n)
        labels = self.stack.case.fiducials.labels
        self._set_phase(
            "registration",
            f"touching fiducials {labels[0]}..{labels[n - 1]} ({n} of {len(labels)}), by dwell",
        )

    def _registration_step(self, elapsed_s: float) -> None:
        try:
            progress = self.registration.step()
        except ScriptedRegistrationError as error:
            self._fail(str(error), elapsed_s)
            return
        self.outcome = RegistrationOutcome(
            planned=self.plan.n_fiducials,
            collected=progress.collected,
            retries=self.registration.retries,
        )
        self.detail = (
            f"{progress.collected} of {progress.total} fiducials collected"
            + (f", next {progress.next_label}" if progress.next_label else "")
            + (f", {self.registration.retries} touched again" if self.registration.retries else "")
        )
        if progress.done:
            self._compute(elapsed_s)
        elif elapsed_s >= self.plan.registration_deadline_s:
            if progress.collected >= MIN_FIDUCIALS:
                log.warning(
                    "only %d of %d fiducials in time: registering with those",
                    progress.collected,
                    progress.total,
                )
                self._compute(elapsed_s)
            else:
                self._fail(
                    f"{progress.collected} of {progress.total} fiducials collected in "
                    f"{self.plan.registration_deadline_s:.1f} s ({MIN_FIDUCIALS} needed)",
                    elapsed_s,
                )

    def _compute(self, elapsed_s: float) -> None:
        try:
            figures = self.registration.compute()
        except ScriptedRegistrationError as error:
            self._fail(str(error), elapsed_s)
            return
        self.figures = figures
        computed = RegistrationOutcome(
            planned=self.plan.n_fiducials,
            collected=figures.n_fiducials,
            retries=self.registration.retries,
            figures=figures,
        )
        max_fre_mm = MAX_ACCEPT_FRE_MM if self.deformable is None else RIGID_MAX_FRE_DEFORMED_MM
        if not figures.fre_mm <= max_fre_mm:
            self.registration.reject()
            why = f"FRE {figures.fre_mm:.2f} mm is over {max_fre_mm:g} mm: rejected"
            self.outcome = replace(computed, failure=why)
            self._fail(why, elapsed_s, keep_outcome=True)
            return
        try:
            self.registration.accept()
        except ScriptedRegistrationError as error:
            self.outcome = replace(computed, failure=str(error))
            self._fail(str(error), elapsed_s, keep_outcome=True)
            return
        self.outcome = replace(computed, accepted=True)
        log.info(
            "registration accepted: %d fiducials, FRE %.3f mm, true TRE mean %.3f max %.3f mm, "
            "predicted TRE max %.3f mm",
            figures.n_fiducials,
            figures.fre_mm,
            figures.true_tre_mean_mm or math.nan,
            figures.true_tre_max_mm or math.nan,
            figures.predicted_tre_max_mm or math.nan,
        )
        if self.deformable is not None:
            self._start_deformable(elapsed_s)
        else:
            self._start_navigation(elapsed_s)

    def _start_deformable(self, elapsed_s: float) -> None:
        step = self.deformable
        assert step is not None
        try:
            step.start()
        except ScriptedRegistrationError as error:
            self._fail(str(error), elapsed_s, keep_outcome=True)
            return
        self._set_phase(
            "deformable",
            f"tracing the organ's surface ({step.outcome.path_length_mm:.0f} mm, "
            f"{step.trace_s:.0f} s), then the deformable fit",
        )

    def _deformable_step(self, elapsed_s: float) -> None:
        step = self.deformable
        assert step is not None
        outcome = step.step()
        self.detail = {
            "tracing": "tracing the organ's surface",
            "computing": f"deformable fit of {outcome.n_points} points",
        }.get(outcome.state, outcome.state)
        if outcome.state == "failed":
            self._fail(outcome.failure, elapsed_s, keep_outcome=True)
            return
        if outcome.state != "accepted":
            return
        summary = outcome.summary
        assert summary is not None
        self.outcome = replace(
            self.outcome,
            method=summary.method,
            deformable={
                "registration_id": summary.registration_id,
                "tre_mm": tre_figures(summary),
                "true_tre_mm": _rounded(summary.true_tre_mm),
                "predicted_tre_mm": _rounded(summary.predicted_tre_mm),
                "rms_residual_mm": round(summary.fre_mm, 3),
                "n_points": outcome.n_points,
                "path_length_mm": round(outcome.path_length_mm, 1),
                "fit_time_s": outcome.fit_time_s,
                "t_compute_ns": outcome.t_compute_ns,
            },
        )
        self._start_navigation(elapsed_s)

    def _fail(self, why: str, elapsed_s: float, *, keep_outcome: bool = False) -> None:
        if keep_outcome:
            self.outcome = replace(self.outcome, failure=self.outcome.failure or why)
        else:
            self.outcome = RegistrationOutcome(
                planned=self.plan.n_fiducials,
                collected=self.registration.progress.collected,
                retries=self.registration.retries,
                figures=self.figures,
                failure=why,
            )
        log.error("registration failed: %s", why)
        try:
            send(self.tracker, PointerRest())
        except TimeoutError:
            pass
        self._set_phase("failed", f"registration failed at {elapsed_s:.1f} s: {why}")

    def _start_navigation(self, elapsed_s: float) -> None:
        self.t_nav_s = elapsed_s
        self.nav_plan = nav_plan(self.plan.duration_s - elapsed_s)
        self._set_phase(
            "navigation",
            f"pointer coming down on target {self.target_name} in {self.nav_plan.approach_s:.1f} s",
        )
        self._navigation_step(elapsed_s)

    def _navigation_step(self, elapsed_s: float) -> None:
        plan = self.nav_plan
        assert plan is not None
        if self.t_nav_ns is None:  # sent here, so a timed-out command is sent again
            t_sent_ns = time.monotonic_ns()
            try:
                touch = PointerTouch(
                    points=[self.p_target_reference.tolist()],
                    travel_s=plan.approach_s,
                    dwell_s=plan.hold_s,
                )
                reply = send(self.tracker, touch)
                error = None if reply.ok else reply.error
            except ValueError as bad:  # as the tracker would have refused it
                error = str(bad)
            self.t_nav_ns = t_sent_ns
            if error is not None:
                log.warning("%s refused: %s", PointerTouch.NAME, error)
        t = elapsed_s - self.t_nav_s
        if t >= plan.approach_s:
            self.detail = f"pointer on target {self.target_name}"
        if not self.occluded and plan.occlusion_at_s is not None and t >= plan.occlusion_at_s:
            self.occluded = True
            occlude = OccludeTool(tool="reference", duration_s=OCCLUSION_S)
            reply = send(self.tracker, occlude)
            if reply.ok:
                log.info("reference occluded for %g s (REFERENCE_LOST on cue)", OCCLUSION_S)
            else:  # an older simulator: the random dropouts still happen
                log.warning("%s refused: %s", occlude.NAME, reply.error)


def _rounded(values: dict[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in values.items()}


# --- the display ------------------------------------------------------------------------


def _fmt_mm(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} mm"


def progress_panel(
    *,
    scenario: Scenario,
    elapsed_s: float,
    total_s: float,
    headset: HeadsetProcess,
    status: stack_status.StackStatus,
) -> Group:
    """The live display: phase and time, registration figures, headset, the stack table."""
    lines = Text()
    lines.append(f"{scenario.phase}", style="bold")
    lines.append(f"  {scenario.detail}\n")
    figures = scenario.figures
    if figures is not None:
        lines.append(
            f"registration: {figures.n_fiducials} fiducials, FRE {_fmt_mm(figures.fre_mm)}, "
            f"true TRE mean {_fmt_mm(figures.true_tre_mean_mm)} max "
            f"{_fmt_mm(figures.true_tre_max_mm)}, predicted TRE max "
            f"{_fmt_mm(figures.predicted_tre_max_mm)}"
            + ("" if scenario.outcome.accepted else " (not accepted)")
            + "\n"
        )
    code = headset.exit_code
    lines.append(
        "headset client: "
        + ("not started" if headset.pid is None else "running" if code is None else f"exit {code}")
    )
    bar = ProgressBar(total=total_s, completed=min(elapsed_s, total_s), width=40)
    time_line = Table.grid(padding=(0, 1))
    time_line.add_row(bar, Text(f"{min(elapsed_s, total_s):5.1f} / {total_s:g} s"))
    return Group(
        Panel(Group(time_line, lines), title="ornav demo", title_align="left"),
        stack_status.render(status),
    )


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: the figures of the JSON summary a person looks at first."""
    table = Table(title="ornav demo summary", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value")
    ok = summary["ok"]
    table.add_row("result", "[green]OK[/]" if ok else "[red]FAILED[/]")
    for problem in summary["problems"]:
        table.add_row("", f"[red]{problem}[/]")
    reg = summary["registration"]
    if "fre_mm" in reg:
        table.add_row(
            "registration",
            f"{reg['n_fiducials']} fiducials ({reg['retries']} touched again), "
            f"FRE {reg['fre_mm']:.3f} mm, "
            f"{'accepted' if reg['accepted'] else 'not accepted'}",
        )
        tre = reg["tre_mm"]
        if tre["max"] is not None:
            table.add_row("true TRE", f"mean {tre['mean']:.3f} mm, max {tre['max']:.3f} mm")
        predicted = reg["predicted_tre_mm"]["max"]
        if predicted is not None:
            table.add_row("predicted TRE", f"max {predicted:.3f} mm")
    else:
        table.add_row("registration", f"[red]{reg.get('failure', 'none')}[/]")
    latency = summary["latency_ms"] or {}
    if latency.get("p50") is not None:
        table.add_row(
            "latency tracker -> headset",
            f"p50 {latency['p50']:.2f} ms, p99 {latency['p99']:.2f} ms (n {latency.get('n')})",
        )
    age = summary["pose_age_ms"] or {}
    if age.get("p50") is not None:
        table.add_row("pose age at headset", f"p50 {age['p50']:.2f} ms, p99 {age['p99']:.2f} ms")
    table.add_row(
        "overlay events",
        f"stale {summary['stale_events']}, hidden {summary['hidden_events']}, "
        f"reference lost {summary['reference_lost_events']}",
    )
    approach = summary.get("approach") or {}
    if approach.get("min_distance_mm") is not None:
        table.add_row(
            f"distance to {approach['target']}",
            f"{approach['start_distance_mm']:.1f} mm -> {approach['min_distance_mm']:.2f} mm",
        )
    nodes = summary["nodes"]
    table.add_row(
        "nodes",
        ", ".join(
            f"{name} {node.get('final_state')}"
            + (f" ({node['restarts']} restarts)" if node.get("restarts") else "")
            for name, node in nodes.items()
        ),
    )
    browser = summary.get("browser")
    if browser:
        receive, drawn = browser["receive_latency_ms"], browser["applied_latency_ms"]
        table.add_row(
            "latency tracker -> browser",
            f"receive p50 {receive['p50']:.1f} / p99 {receive['p99']:.1f} ms, drawn p50 "
            f"{drawn['p50']:.1f} / p99 {drawn['p99']:.1f} ms ({len(browser['clients'])} pages)",
        )
    xr = summary.get("xr_registration")
    if xr:
        table.add_row(
            "headset registration",
            f"{xr['outcome']}: residual {xr['rms_mm']:.2f} mm, {xr['error_at_patient_mm']:.1f} mm "
            f"from the simulated truth ({xr['poses']} poses)"
            if xr.get("outcome") == "accepted"
            else f"[red]{xr.get('outcome')}: {xr.get('reason', '')}[/]",
        )
    if summary.get("monitor_url"):
        table.add_row("monitor page", str(summary["monitor_url"]))
    table.add_row("recording", str(summary["recording"]))
    table.add_row("snapshot", str(summary["snapshot"]))
    table.add_row("duration", f"{summary['duration_s']:.1f} s")
    return table


# --- reading back the recording ---------------------------------------------------------


@dataclass(frozen=True)
class RecordingFacts:
    """What the demo reads back from its recording once the recorder has closed it."""

    topics: dict[str, int]
    nav_episodes: dict[str, int]
    approach: dict[str, Any] | None
    problem: str = ""


def read_recording(
    path: Path, *, approach_from_ns: int | None, target_index: int, target: str
) -> RecordingFacts:
    """Topic counts, navigation episodes, and the tip-to-target distance while approaching.

    ``approach_from_ns``: monotonic time the approach started (None: it never did); the
    distances are those of OK states from then on: the first and the smallest.
    """
    try:
        summary = inspect_recording(path)
        statuses: list[str] = []
        distances: list[float] = []
        for recorded in iter_recording(path, topics=("nav/state",)):
            state = decode_message(recorded.payload).message
            if not isinstance(state, NavState):
                continue
            statuses.append(state.status.value)
            if (
                approach_from_ns is not None
                and state.t_sensor_ns >= approach_from_ns
                and state.status is NavStatus.OK
            ):
                d = float(state.target_distances_mm[target_index])
                if math.isfinite(d):
                    distances.append(d)
    except (RecordingError, ValueError) as error:
        return RecordingFacts({}, {}, None, problem=str(error))
    topics: dict[str, int] = {}
    for topic in summary.topics:
        topics[topic.topic] = topics.get(topic.topic, 0) + topic.message_count
    approach = (
        {
            "target": target,
            "start_distance_mm": round(distances[0], 2),
            "min_distance_mm": round(min(distances), 2),
        }
        if distances
        else None
    )
    return RecordingFacts(topics, count_episodes(statuses), approach)


# --- the command ------------------------------------------------------------------------


def _default_run_dir() -> Path:
    return Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"


def _node_report(supervisor: Supervisor, running: Iterable[str]) -> dict[str, dict[str, Any]]:
    alive = set(running)
    return {
        name: {
            "final_state": "running" if name in alive else node.state,
            "exit_code": node.exit_code,
            "restarts": node.restarts,
            "pid": node.pid,
        }
        for name, node in supervisor.nodes.items()
    }


def cmd_demo(args: argparse.Namespace) -> int:
    launch_path = Path(args.launch)
    run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir()
    # Short (Unix socket paths <= 107 bytes) and 0700; removed on every way out.
    ipc_dir = Path(tempfile.mkdtemp(prefix="ornav-"))
    try:
        try:
            launch = load(launch_path, run_dir=run_dir.resolve(), ipc_dir=ipc_dir)
            if getattr(args, "xr_registration", False):  # cli/demo/sim_xr.py
                launch = with_xr_registration(launch)
            if args.case:  # another case bundle, e.g. one built from a CT (cli/demo/case_option.py)
                launch = with_case(launch, args.case)
            deformable = getattr(args, "scenario", "default") == "deformable"
            if deformable:  # the organ deformed against its model (cli/demo/deformable.py)
                launch = with_deformation(launch)
            stack = demo_stack(launch)
            plan = _plan(args, stack, deformable=deformable)
        except LaunchError:  # one line from cli.main; nothing was started
            raise
        except ValueError as error:  # the plan: a duration too short for the scenario
            raise UserError(str(error)) from None
        stale = previous_outputs(stack)
        if stale:
            log.info(
                "clearing the previous demo's outputs in %s: %s",
                run_dir,
                ", ".join(str(p.relative_to(stack.launch.run_dir.resolve())) for p in stale),
            )
            for path in stale:
                path.unlink()
        return DemoRun(stack=stack, plan=plan, args=args).run()
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)  # the sockets and roster of this run only


def _plan(args: argparse.Namespace, stack: DemoStack, *, deformable: bool) -> ScenarioPlan:
    """The scenario's plan; the deformable one keeps ``DEFORMABLE_PHASE_S`` for the trace
    and the fit between the fiducials and navigation. ValueError (one line) if it cannot fit."""
    n = len(stack.case.fiducials)
    if not deformable:
        duration = DEFAULT_DURATION_S if args.duration is None else args.duration
        return plan_scenario(duration, fiducials_available=n)
    duration = DEFORMABLE_DURATION_S if args.duration is None else args.duration
    shortest = min_duration_s() + DEFORMABLE_PHASE_S
    if not (math.isfinite(duration) and duration >= shortest - 1e-9):
        raise ValueError(
            f"--duration {duration:g} s is too short for --scenario deformable: it needs "
            f"{shortest:g} s at least (the fiducials and navigation, and "
            f"{DEFORMABLE_PHASE_S:g} s more for the surface trace and the fit)"
        )
    plan = plan_scenario(duration - DEFORMABLE_PHASE_S, fiducials_available=n)
    return replace(plan, duration_s=duration)


class DemoRun:
    """One run of the demo: the stack, the headset client, the scenario, the summary."""

    def __init__(self, *, stack: DemoStack, plan: ScenarioPlan, args: argparse.Namespace) -> None:
        self.stack = stack
        self.plan = plan
        self.deformable = getattr(args, "scenario", "default") == "deformable"
        self.summary_path = Path(args.summary) if args.summary else None
        tty = sys.stdout.isatty()
        self.console = Console(stderr=not tty, width=None if tty else 110)
        self.live_display = tty and not args.no_progress
        self.stop_requested: list[str] = []
        self.open_browser = bool(getattr(args, "open", False))
        tracker_pub = stack.nodes["tracker"].pub
        self.xr_registration = (
            XrRegistrationRun(
                tracker_pub=tracker_pub,
                headset_endpoint=stack.headset_endpoint,
                seconds=XR_COLLECTION_S,
                world=SimXrWorld(),
            )
            if getattr(args, "xr_registration", False) and tracker_pub
            else None
        )
        self.monitor_url = ""
        self.supervisor = Supervisor(stack.launch)
        self.headset = HeadsetProcess(
            endpoint=stack.headset_endpoint,
            duration_s=plan.duration_s,
            run_dir=stack.launch.run_dir,
            display_calibration=str(stack.nodes["render"].params.get("display_calibration", "")),
        )

    def _request_stop(self, signum: int, _frame: object) -> None:
        self.stop_requested.append(signal.Signals(signum).name)

    def run(self) -> int:
        if self.live_display:
            logging.getLogger().handlers[:] = [
                RichHandler(console=self.console, show_path=False, log_time_format="%H:%M:%S")
            ]
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        launch = self.stack.launch
        log.info(
            "demo: %s (%d nodes) for %g s, run dir %s; %d fiducials by dwell, %snavigation",
            launch.path,
            len(launch.nodes),
            self.plan.duration_s,
            launch.run_dir,
            self.plan.n_fiducials,
            "a surface trace and a deformable fit, then " if self.deformable else "then ",
        )
        nav = bus.CommandClient(self.stack.control("nav"))
        tracker = bus.CommandClient(self.stack.control("tracker"))
        recorder = bus.CommandClient(self.stack.control("recorder"))
        scenario = Scenario(
            plan=self.plan,
            stack=self.stack,
            nav=nav,
            tracker=tracker,
            on_phase=lambda line: None if self.live_display else log.info("%s", line),
            deformable=self.deformable,
        )
        live: Live | None = None
        recording: str | None = None
        t_begin = t0 = time.monotonic()
        scenario_s: float | None = None  # how long the scenario ran (Ctrl-C: until then)
        running: list[str] = []
        try:
            self.supervisor.start()
            self._wait_for_navigation()
            self._announce_monitor()
            recording = self._recording_path(recorder)
            self.headset.start()
            if self.xr_registration is not None:
                self.xr_registration.start()
            if self.live_display:
                live = Live(console=self.console, refresh_per_second=4, transient=False)
                live.start()
            t0 = time.monotonic()
            while not self.stop_requested:
                elapsed = time.monotonic() - t0
                if elapsed >= self.plan.duration_s:
                    break
                self.supervisor.tick(0.05)
                scenario.step(time.monotonic() - t0)
                if live is not None:
                    live.update(self._panel(scenario, elapsed))
            scenario_s = time.monotonic() - t0
            if not self.stop_requested:
                scenario.phase, scenario.detail = "finishing", "waiting for the headset client"
                scenario.on_phase("finishing: waiting for the headset client's snapshot")
            while not self.stop_requested and self.headset.running:
                if self.headset.overdue(time.monotonic()):
                    log.warning("the headset client overran its --duration: stopping it")
                    break
                self.supervisor.tick(0.05)
                if live is not None:
                    live.update(self._panel(scenario, time.monotonic() - t0))
        finally:
            elapsed_s = time.monotonic() - t0 if scenario_s is None else scenario_s
            running = [n for n, node in self.supervisor.nodes.items() if node.state == "running"]
            healthy = self.supervisor.all_running()
            if live is not None:
                live.update(self._panel(scenario, elapsed_s))
                live.stop()
            if self.stop_requested:
                log.info("%s received: stopping", self.stop_requested[0])
            headset_code = self.headset.stop()
            self.supervisor.stop()
            for client in (nav, tracker, recorder):
                client.close()
            shutil.rmtree(launch.ipc_dir, ignore_errors=True)  # the sockets of this run only
        return self._report(
            scenario=scenario,
            elapsed_s=elapsed_s,
            wall_s=time.monotonic() - t_begin,
            healthy=healthy,
            running=running,
            headset_code=headset_code,
            recording=recording,
        )

    def _panel(self, scenario: Scenario, elapsed_s: float) -> Group:
        return progress_panel(
            scenario=scenario,
            elapsed_s=elapsed_s,
            total_s=self.plan.duration_s,
            headset=self.headset,
            status=stack_status.snapshot(self.supervisor, time.monotonic_ns()),
        )

    def _announce_monitor(self) -> None:
        """Print the monitor page's URL (the web bridge's, with a pairing token); --open
        opens it in this machine's browser (which must trust the local CA: README)."""
        url_file = monitor_url_file(self.stack.launch)
        if url_file is None:
            return
        url = wait_for_url(url_file, MONITOR_URL_TIMEOUT_S)
        if url is None:
            log.warning("the web bridge wrote no URL to %s", url_file)
            return
        self.monitor_url = url
        log.info("monitor page (and the headset's, scan the QR code there): %s", url)
        if self.open_browser:
            import webbrowser

            if not webbrowser.open(url):
                log.warning("no local browser could be opened: open the URL above by hand")

    def _wait_for_navigation(self) -> None:
        """Tick until the nav node's state arrives: the tracker and nav are talking."""
        deadline = time.monotonic() + NAV_FIRST_STATE_TIMEOUT_S
        while self.supervisor.nav_state is None and not self.stop_requested:
            if time.monotonic() > deadline:
                log.warning("no nav/state within %g s; going on", NAV_FIRST_STATE_TIMEOUT_S)
                return
            self.supervisor.tick(0.05)

    def _recording_path(self, recorder: bus.CommandClient) -> str | None:
        """Where the recorder really writes (it may have moved aside of an existing file)."""
        try:
            reply = recorder.call("recording", timeout_s=5.0)
        except TimeoutError as error:
            log.warning("%s", error)
            return None
        path = reply.result.get("path") if reply.ok else None
        return str(path) if isinstance(path, str) else None

    def _report(
        self,
        *,
        scenario: Scenario,
        elapsed_s: float,
        wall_s: float,
        healthy: bool,
        running: list[str],
        headset_code: int | None,
        recording: str | None,
    ) -> int:
        headset_summary, headset_problem = self.headset.read_summary()
        if headset_code is None:
            headset_problem = "the client was never started"
        facts = (
            read_recording(
                Path(recording),
                approach_from_ns=scenario.t_nav_ns,
                target_index=0,
                target=scenario.target_name,
            )
            if recording
            else RecordingFacts({}, {}, None, problem="the recorder gave no path")
        )
        if facts.problem:
            log.warning("recording %s: %s", recording, facts.problem)
        snapshot = self.headset.snapshot
        summary = build_summary(
            plan=self.plan,
            elapsed_s=elapsed_s,
            registration=scenario.outcome,
            headset=headset_summary,
            headset_exit_code=headset_code,
            headset_problem=headset_problem,
            nodes=_node_report(self.supervisor, running),
            stack_healthy=healthy,
            nav_episodes=facts.nav_episodes,
            recording=recording if recording and not facts.problem else None,
            recorded_topics=facts.topics,
            snapshot=str(snapshot) if snapshot.is_file() and snapshot.stat().st_size else None,
            interrupted=self.stop_requested[0] if self.stop_requested else "",
        )
        summary["approach"] = facts.approach
        deformable = summary["registration"].get("deformable")
        if isinstance(deformable, dict):
            t_compute_ns = deformable.pop("t_compute_ns", None)
            deformable["compute_to_headset_ms"] = models_at_headset_ms(
                headset_summary, t_compute_ns
            )
        browser = (
            browser_figures(Path(recording), exclude_client=HEADSET_NAME) if recording else None
        )
        if browser is not None:  # a browser was connected: its figures too
            summary["browser"] = browser
            log.info(
                "browser %s: sample -> page receive p50 %.1f / p99 %.1f ms, -> drawn p50 %.1f ms",
                ", ".join(browser["clients"]),
                browser["receive_latency_ms"]["p50"],
                browser["receive_latency_ms"]["p99"],
                browser["applied_latency_ms"]["p50"],
            )
        if self.xr_registration is not None:
            summary["xr_registration"] = self.xr_registration.join(XR_COLLECTION_S + 25.0)
        if self.monitor_url:
            summary["monitor_url"] = self.monitor_url.split("#", 1)[0]  # never the token
        if self.headset.pid is not None:
            summary["headset"]["pid"] = self.headset.pid
        summary["wall_s"] = round(wall_s, 3)  # with start-up and the headset's snapshot
        summary["run_dir"] = str(self.stack.launch.run_dir)
        summary["launch_file"] = str(self.stack.launch.path)
        self.console.print(summary_table(summary))
        if self.summary_path is not None:
            write_private_text(self.summary_path, json.dumps(summary, indent=2) + "\n")
            log.info("summary written to %s", self.summary_path)
        if self.stop_requested:
            return 130
        return 0 if summary["ok"] else 1


def add_demo_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``ornav demo`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "demo", help="the simulated stack, a headset client and a scripted registration"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help=f"seconds of scenario once the stack is up (default {DEFAULT_DURATION_S:g}; "
        f"{DEFORMABLE_DURATION_S:g} for --scenario deformable)",
    )
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="default",
        help="default: register by fiducials and navigate; deformable: the sim organ is "
        "deformed against its model, the pointer traces it after the fiducials and a "
        "deformable fit is computed live and accepted (cli/demo/deformable.py)",
    )
    parser.add_argument("--run-dir", help="logs, recording, snapshot (default runs/demo-<time>)")
    parser.add_argument("--summary", help="write the summary as JSON here")
    parser.add_argument(
        "--launch",
        default=str(DEFAULT_LAUNCH_FILE),
        help="the stack to run (default: the shipped %(default)s)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no live display: one log line per phase"
    )
    parser.add_argument(
        "--xr-registration",
        action="store_true",
        help="also run the headset registration, simulated: a headset world that drifts, its "
        "controller marker waved (cli/demo/sim_xr.py); the summary reports it",
    )
    parser.add_argument(
        "--open",
        action="store_true",
        help="open the monitor page (the web bridge's URL, printed anyway) in this machine's "
        "browser",
    )
    parser.add_argument(
        "--case",
        help="run on this case bundle (e.g. from `ornav case build`) instead of the launch "
        "file's; the simulation places it where that case was",
    )
    parser.set_defaults(func=cmd_demo)
