"""Typed control requests and replies: round trips through args/result and the wire, refusals.

Each type is what one side builds a ``Command``'s args or a ``Reply``'s result from and
the other reads back; a round trip through msgpack (the real envelope) must give the same
object, and anything that is not the type's shape is one ValueError line.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.messages import (
    AcceptRegistration,
    CaseLoaded,
    CollectFiducial,
    Command,
    ComputeRegistration,
    FiducialCollected,
    FiducialProgress,
    FiducialsProposed,
    GetRegistrationStatus,
    LoadCase,
    OccludeTool,
    PointerRest,
    PointerTouch,
    PointerTrace,
    RegistrationAccepted,
    RegistrationRef,
    RegistrationStatus,
    RegistrationSummary,
    RejectRegistration,
    Reply,
    Residuals,
    ScriptStarted,
    StartCollection,
    SurfaceCompute,
    SurfaceComputeStarted,
    ToolOccluded,
    TraceProgress,
    VerifyRegistration,
    compute_reply_from_result,
    decode,
    encode,
    progress_from_result,
)
from nav.messages.control import (
    MAX_OCCLUDE_S,
    MAX_POSITION_MM,
    MAX_SCRIPT_S,
    MAX_SPEED_MM_S,
    MIN_SPEED_MM_S,
    MIN_STEP_S,
    REQUESTS,
    SIM_REQUESTS,
)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12)
labels = st.lists(names, max_size=10, unique=True).map(tuple)
counts = st.integers(min_value=0, max_value=1 << 62)
mm = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
maybe_mm = st.none() | mm
ids = st.integers(min_value=0, max_value=(1 << 63) - 1)


def _over_the_wire(result: dict[str, Any]) -> dict[str, Any]:
    """The result as the other side reads it: through a Reply, msgpack and decode."""
    reply = decode(encode(Reply(ok=True, result=result), seq=0, t_pub_ns=0)).message
    assert isinstance(reply, Reply)
    return reply.result


@st.composite
def fiducial_progress(draw: st.DrawFn) -> FiducialProgress:
    all_labels = draw(labels)
    k = draw(st.integers(min_value=0, max_value=len(all_labels)))
    return FiducialProgress(
        collected=k,
        total=len(all_labels),
        labels=all_labels,
        next_label=all_labels[k] if k < len(all_labels) else None,
    )


trace_progress = st.builds(
    TraceProgress,
    collected=counts,
    max_points=counts,
    path_length_mm=mm,
    full=st.booleans(),
)
progress = fiducial_progress() | trace_progress


@st.composite
def summaries(draw: st.DrawFn) -> RegistrationSummary:
    method = draw(st.sampled_from(["points", "surface"]))
    targets = draw(labels)
    fiducials = draw(labels)
    return RegistrationSummary(
        registration_id=draw(ids),
        state=draw(st.sampled_from(["proposed", "accepted", "rejected", "restored"])),
        method=method,
        needs_verification=draw(st.booleans()),
        fre_mm=draw(mm),
        fle_mm=draw(mm),
        predicted_tre_mm={t: draw(maybe_mm) for t in targets},
        true_tre_mm={t: draw(maybe_mm) for t in targets},
        fiducial_errors_mm=tuple(draw(mm) for _ in fiducials) if method == "points" else (),
        fiducial_labels=fiducials if method == "points" else (),
        residuals_mm=(
            draw(st.builds(Residuals, count=counts, median=maybe_mm, p95=maybe_mm, max=maybe_mm))
            if method == "surface"
            else None
        ),
    )


surface_computes = st.builds(
    SurfaceCompute,
    registration_id=ids,
    state=st.sampled_from(["running", "proposed", "refused", "discarded"]),
    n_points=counts,
    start=names,
    error=st.none() | names,
    time_s=maybe_mm,
    fitness=st.none() | st.floats(min_value=0.0, max_value=1.0),
    iterations=st.none() | counts,
    initialisation=st.none() | names,
)

replies = st.one_of(
    progress,
    st.builds(FiducialCollected, progress=fiducial_progress(), label=names),
    st.builds(FiducialsProposed, summary=summaries(), n_fiducials=counts),
    st.builds(
        SurfaceComputeStarted, registration_id=ids, n_points=counts, path_length_mm=mm, start=names
    ),
    st.builds(RegistrationAccepted, registration_id=ids, saved_to=st.none() | names),
    st.builds(RegistrationRef, registration_id=ids),
    st.builds(
        RegistrationStatus,
        case=names,
        case_id=names,
        collecting=st.booleans(),
        method=st.sampled_from([None, "points", "surface"]),
        dwell=st.booleans(),
        progress=st.none() | progress,
        active=st.none() | summaries(),
        proposal=st.none() | summaries(),
        compute=st.none() | surface_computes,
    ),
    st.builds(
        CaseLoaded,
        case=names,
        case_id=names,
        fiducials=labels,
        targets=labels,
        critical=labels,
        restored=st.booleans(),
    ),
)


@settings(max_examples=300, deadline=None)
@given(replies)
def test_every_reply_reads_back_as_itself_after_the_wire(reply: Any) -> None:
    assert type(reply).from_result(_over_the_wire(reply.to_result())) == reply


@settings(max_examples=100, deadline=None)
@given(progress)
def test_a_progress_is_read_back_by_its_method(value: FiducialProgress | TraceProgress) -> None:
    assert progress_from_result(_over_the_wire(value.to_result())) == value


@settings(max_examples=100, deadline=None)
@given(
    st.builds(FiducialsProposed, summary=summaries(), n_fiducials=counts)
    | st.builds(
        SurfaceComputeStarted, registration_id=ids, n_points=counts, path_length_mm=mm, start=names
    )
)
def test_a_compute_reply_is_read_back_as_a_proposal_or_a_started_compute(
    reply: FiducialsProposed | SurfaceComputeStarted,
) -> None:
    assert compute_reply_from_result(_over_the_wire(reply.to_result())) == reply


@settings(max_examples=100, deadline=None)
@given(
    st.builds(StartCollection, method=st.sampled_from(["points", "surface"]), dwell=st.booleans())
    | st.builds(LoadCase, path=names)
    | st.sampled_from(
        [
            CollectFiducial(),
            ComputeRegistration(),
            AcceptRegistration(),
            RejectRegistration(),
            VerifyRegistration(),
            GetRegistrationStatus(),
        ]
    )
)
def test_every_request_reads_back_as_itself_from_a_command(request: Any) -> None:
    command = decode(encode(Command(request.NAME, request.to_args()), seq=0, t_pub_ns=0)).message
    assert isinstance(command, Command) and command.name == request.NAME
    assert type(request).from_args(command.args) == request


def test_the_requests_cover_the_nav_nodes_commands_once_each() -> None:
    assert [r.NAME for r in REQUESTS] == [
        "registration.start",
        "registration.collect",
        "registration.compute",
        "registration.accept",
        "registration.reject",
        "registration.verify",
        "registration.status",
        "case.load",
    ]


def test_a_start_without_arguments_collects_fiducials_on_dwell() -> None:
    assert StartCollection.from_args({}) == StartCollection(method="points", dwell=True)
    assert StartCollection.from_args({"method": "surface"}).method == "surface"


@pytest.mark.parametrize(
    ("request_type", "args", "message"),
    [
        (StartCollection, {"method": "elastic"}, "unknown method 'elastic'"),
        (StartCollection, {"method": 3}, "unknown method 3"),
        (StartCollection, {"dwell": "yes"}, "'dwell' must be true or false"),
        (StartCollection, {"dwell": 1}, "'dwell' must be true or false"),
        (StartCollection, {"method": "points", "dwel": False}, "unknown argument 'dwel'"),
        (CollectFiducial, {"now": True}, "unknown argument 'now'"),
        (ComputeRegistration, {"method": "points"}, "unknown argument 'method'"),
        (AcceptRegistration, {"x": None}, "unknown argument 'x'"),
        (GetRegistrationStatus, {"verbose": True}, "unknown argument 'verbose'"),
        (LoadCase, {}, "'path' must name a case folder"),
        (LoadCase, {"path": ""}, "'path' must name a case folder"),
        (LoadCase, {"path": 7}, "'path' must name a case folder"),
        (LoadCase, {"path": "/x", "reload": True}, "unknown argument 'reload'"),
    ],
)
def test_a_bad_request_is_refused_in_one_line_naming_the_argument(
    request_type: Any, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        request_type.from_args(args)
    assert "\n" not in str(refused.value)


_PROGRESS = FiducialProgress(collected=1, total=3, labels=("A", "B", "C"), next_label="B")
_SUMMARY = RegistrationSummary(
    registration_id=5,
    state="proposed",
    method="points",
    needs_verification=False,
    fre_mm=0.2,
    fle_mm=0.25,
    predicted_tre_mm={"t": 0.4},
    true_tre_mm={"t": None},
    fiducial_errors_mm=(0.1, 0.2, 0.3),
    fiducial_labels=("A", "B", "C"),
)


def _without(result: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != key}


@pytest.mark.parametrize(
    ("read", "result", "message"),
    [
        (FiducialProgress.from_result, _without(_PROGRESS.to_result(), "total"), "missing"),
        (FiducialProgress.from_result, {**_PROGRESS.to_result(), "extra": 1}, "unknown"),
        (FiducialProgress.from_result, {**_PROGRESS.to_result(), "collected": True}, "integer"),
        (FiducialProgress.from_result, {**_PROGRESS.to_result(), "collected": -1}, "integer"),
        (FiducialProgress.from_result, {**_PROGRESS.to_result(), "method": "surface"}, "points"),
        (progress_from_result, {"collected": 1}, "unknown method None"),
        (progress_from_result, [1, 2], "expected a map"),
        (RegistrationSummary.from_result, {**_SUMMARY.to_result(), "fre_mm": "0.2"}, "fre_mm"),
        (RegistrationSummary.from_result, {**_SUMMARY.to_result(), "state": "maybe"}, "state"),
        (
            RegistrationSummary.from_result,
            {**_SUMMARY.to_result(), "predicted_tre_mm": [0.4]},
            "predicted_tre_mm",
        ),
        (
            RegistrationSummary.from_result,
            {**_SUMMARY.to_result(), "residuals_mm": None},
            "unknown argument 'residuals_mm'",
        ),
        (FiducialsProposed.from_result, _SUMMARY.to_result(), "n_fiducials"),
        (RegistrationAccepted.from_result, {"registration_id": 1}, "saved_to"),
        (RegistrationRef.from_result, {"registration_id": 1.5}, "integer"),
        (SurfaceCompute.from_result, {"registration_id": 1}, "missing"),
    ],
)
def test_a_malformed_result_is_refused_in_one_line(read: Any, result: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        read(result)
    assert "\n" not in str(refused.value)


def test_an_unknown_tre_travels_as_null_not_nan() -> None:
    summary = RegistrationSummary(**{**_SUMMARY.__dict__, "true_tre_mm": {"t": math.nan}})
    assert summary.to_result()["true_tre_mm"] == {"t": None}
    assert RegistrationSummary.from_result(_over_the_wire(summary.to_result())).true_tre_mm == {
        "t": None
    }


def test_a_surface_summary_carries_its_residuals_and_no_fiducial_errors() -> None:
    residuals = Residuals(count=3, median=0.2, p95=0.4, max=0.5)
    surface = RegistrationSummary(
        **{
            **_SUMMARY.__dict__,
            "method": "surface",
            "fiducial_errors_mm": (),
            "fiducial_labels": (),
            "residuals_mm": residuals,
        }
    )
    result = surface.to_result()
    assert result["residuals_mm"] == {"count": 3, "median": 0.2, "p95": 0.4, "max": 0.5}
    assert "fiducial_errors_mm" not in result and "fiducial_labels" not in result
    with pytest.raises(ValueError, match="residuals_mm"):
        RegistrationSummary(**{**_SUMMARY.__dict__, "residuals_mm": residuals})


def test_a_compute_record_names_the_fit_only_once_it_is_known() -> None:
    running = SurfaceCompute(registration_id=9, state="running", n_points=300, start="global")
    assert running.to_result() == {
        "registration_id": 9,
        "method": "surface",
        "state": "running",
        "n_points": 300,
        "start": "global",
        "error": None,
    }
    with pytest.raises(ValueError, match="unknown compute state"):
        SurfaceCompute(registration_id=9, state="done", n_points=300, start="global")


# --- the simulated tracker's commands ------------------------------------------------------

coord = st.floats(min_value=-MAX_POSITION_MM, max_value=MAX_POSITION_MM, allow_nan=False)
script_points = st.lists(st.tuples(coord, coord, coord), min_size=1, max_size=20).map(tuple)
step_s = st.floats(min_value=MIN_STEP_S, max_value=MAX_SCRIPT_S)
sim_requests = st.one_of(
    st.builds(PointerTouch, points=script_points, dwell_s=step_s, travel_s=step_s),
    st.builds(
        PointerTrace,
        polyline=script_points,
        speed_mm_s=st.floats(min_value=MIN_SPEED_MM_S, max_value=MAX_SPEED_MM_S),
        travel_s=step_s,
    ),
    st.just(PointerRest()),
    st.builds(
        OccludeTool,
        tool=names,
        duration_s=st.floats(min_value=0.0, max_value=MAX_OCCLUDE_S, exclude_min=True),
    ),
)
seconds = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(sim_requests)
def test_every_sim_request_reads_back_as_itself_from_a_command(request: Any) -> None:
    command = decode(encode(Command(request.NAME, request.to_args()), seq=0, t_pub_ns=0)).message
    assert isinstance(command, Command) and command.name == request.NAME
    assert type(request).from_args(command.args) == request


@settings(max_examples=200, deadline=None)
@given(
    st.builds(ScriptStarted, start_s=seconds, duration_s=seconds)
    | st.builds(ToolOccluded, tool=names, start_s=seconds, end_s=seconds)
)
def test_every_sim_reply_reads_back_as_itself_after_the_wire(reply: Any) -> None:
    assert type(reply).from_result(_over_the_wire(reply.to_result())) == reply


def test_the_sim_requests_cover_the_sim_trackers_commands_once_each() -> None:
    assert [r.NAME for r in SIM_REQUESTS] == [
        "pointer.touch",
        "pointer.trace",
        "pointer.rest",
        "tool.occlude",
    ]


def test_sim_requests_take_the_trackers_defaults_and_keep_points_as_tuples() -> None:
    touch = PointerTouch.from_args({"points": [[1, 2, 3]]})
    assert touch == PointerTouch(points=((1.0, 2.0, 3.0),), dwell_s=1.0, travel_s=1.5)
    assert PointerTouch(points=[[1.0, 2.0, 3.0]]) == touch  # a list is kept as tuples
    trace = PointerTrace.from_args({"polyline": [[0, 0, 0], [1, 0, 0]]})
    assert (trace.speed_mm_s, trace.travel_s) == (20.0, 1.5)
    assert OccludeTool.from_args({"tool": "reference"}).duration_s == 1.0
    assert PointerRest.from_args({}) == PointerRest()


_POLY = [[0.0, 0.0, 0.0], [50.0, 0.0, 0.0]]


@pytest.mark.parametrize(
    ("request_type", "args", "message"),
    [
        (PointerTrace, {"polyline": _POLY, "duration_s": 5.0}, "unknown argument 'duration_s'"),
        (PointerTrace, {"polyline": _POLY, "speed_mm_s": 1e-320}, r"'speed_mm_s' must be in \["),
        (PointerTrace, {"polyline": _POLY, "speed_mm_s": 1e6}, r"'speed_mm_s' must be in \["),
        (PointerTrace, {"polyline": _POLY, "speed_mm_s": True}, "'speed_mm_s' must be a number"),
        (PointerTrace, {"polyline": _POLY, "travel_s": 1e308}, r"'travel_s' must be in \["),
        (PointerTrace, {"polyline": [[0, 0, 0], [1e300, 0, 0]]}, "1e\\+300 mm, beyond"),
        (PointerTrace, {"polyline": [[0, 0, 0], [math.nan, 0, 0]]}, "nan mm, beyond"),
        (PointerTrace, {"polyline": [[0.0, 0.0, float(i)] for i in range(10_001)]}, "at most"),
        (PointerTrace, {}, "'polyline' must be a list of"),
        (PointerTouch, {"points": [[0, 0, 0]], "dwell_s": 1e308}, r"'dwell_s' must be in \["),
        (PointerTouch, {"points": [[0, 0, 0]], "dwell_s": math.nan}, r"'dwell_s' must be in \["),
        (PointerTouch, {"points": [[0, 0, 0]], "travel_s": 1e-320}, r"'travel_s' must be in \["),
        (PointerTouch, {"points": [[0, 0, "x"]]}, r"'points' must be a list of \[x, y, z\]"),
        (PointerTouch, {"points": [[1.0, 2.0]]}, r"'points' must be a list of \[x, y, z\]"),
        (PointerTouch, {"points": "0 0 0"}, r"'points' must be a list of \[x, y, z\]"),
        (
            PointerTouch,
            {"points": [[0, 0, 0]], "pts": 1},
            "unknown argument 'pts'; pointer.touch takes points, dwell_s, travel_s",
        ),
        (PointerRest, {"for_s": 1.0}, "unknown argument 'for_s'; pointer.rest takes no arguments"),
        (OccludeTool, {"tool": "reference", "duration_s": 1e308}, r"'duration_s' must be in \["),
        (OccludeTool, {"tool": "reference", "duration_s": 0.0}, r"'duration_s' must be in \(0"),
        (OccludeTool, {"tool": "reference", "duration_s": -1.0}, r"'duration_s' must be in \["),
        (OccludeTool, {"duration_s": 1.0}, "'tool' must be a tool's name, got None"),
    ],
)
def test_a_bad_sim_request_is_refused_in_one_line_naming_the_argument(
    request_type: Any, args: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        request_type.from_args(args)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("read", "result", "message"),
    [
        (ScriptStarted.from_result, {"start_s": 0.0}, "missing 'duration_s'"),
        (ScriptStarted.from_result, {"start_s": 0.0, "duration_s": "1"}, "'duration_s' must be"),
        (ToolOccluded.from_result, {"tool": 1, "start_s": 0.0, "end_s": 1.0}, "'tool' must be"),
    ],
)
def test_a_malformed_sim_reply_is_refused_in_one_line(read: Any, result: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        read(result)
    assert "\n" not in str(refused.value)
