"""`ornav register` end to end on synthetic files: methods, outputs, and one-line refusals.

The case: the synthetic organ of test_registration_surface (a bumpy, liver-sized
ellipsoid) as the model mesh, a noisy 40 % patch of its surface in a tracker-like
patient frame as the points, five fiducials, and two targets inside the organ.
The commands run in-process through ``cli.main.main`` (one through a real process,
to show exit code and stderr as a user sees them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from cli.main import main
from cli.register import read_points
from nav.phantom import ply_ascii
from nav.transforms import apply, make_rigid
from tests.conftest import REPO
from tests.unit.test_registration_surface import organ, partial_view

FloatArray = npt.NDArray[np.float64]

T_TRUE = make_rigid(Rotation.from_rotvec([0.2, -0.4, 0.5]).as_matrix(), [120.0, -60.0, 850.0])
FIDUCIAL_VERTICES = (0, 300, 900, 1500, 2100)  # spread over the organ's surface
TARGETS_MODEL = {"tumour": (20.0, 10.0, 5.0), "vessel": (-35.0, 15.0, -10.0)}


def _write_mrk_json(path: Path, points: dict[str, tuple[float, ...]], system: str = "LPS") -> Path:
    flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)
    control_points = [
        {"label": label, "position": (np.asarray(p) * flip).tolist(), "positionStatus": "defined"}
        for label, p in points.items()
    ]
    document = {
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "controlPoints": control_points,
            }
        ]
    }
    path.write_text(json.dumps(document))
    return path


def _write_fcsv(path: Path, points: dict[str, tuple[float, ...]]) -> Path:
    lines = [
        "# Markups fiducial file version = 4.11",
        "# CoordinateSystem = LPS",
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID",
    ]
    for i, (label, (x, y, z)) in enumerate(points.items()):
        lines.append(
            f"vtkMRMLMarkupsFiducialNode_{i},{x:.17g},{y:.17g},{z:.17g},0,0,0,1,1,1,0,{label},,"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model, points, fiducials and targets as files, and what they should register to."""
    root = tmp_path_factory.mktemp("register")
    rng = np.random.default_rng(4)
    vertices, faces = organ()
    trimesh.Trimesh(vertices, faces, process=False).export(root / "organ.ply")
    p_model = partial_view(rng, fraction=0.4, n=2000, direction=np.array([0.5, 1.0, 0.8]))
    p_patient = apply(T_TRUE, p_model) + rng.normal(scale=0.5, size=p_model.shape)
    np.savetxt(root / "points.csv", p_patient, delimiter=",", header="x,y,z", comments="")
    fiducials = {f"F{i + 1}": vertices[v] for i, v in enumerate(FIDUCIAL_VERTICES)}
    _write_mrk_json(root / "fiducials_model.mrk.json", fiducials)
    _write_fcsv(
        root / "fiducials_patient.fcsv",
        {k: apply(T_TRUE, p) + rng.normal(scale=0.3, size=3) for k, p in fiducials.items()},
    )
    _write_mrk_json(root / "targets.mrk.json", TARGETS_MODEL, system="RAS")
    return {
        "model": root / "organ.ply",
        "points": root / "points.csv",
        "fiducials_model": root / "fiducials_model.mrk.json",
        "fiducials_patient": root / "fiducials_patient.fcsv",
        "targets": root / "targets.mrk.json",
    }


def _register(case: dict[str, Path], out: Path, *extra: str, fiducials: bool = True) -> list[str]:
    arguments = ["register", "--model", str(case["model"]), "--points", str(case["points"])]
    arguments += ["--targets", str(case["targets"]), "--out", str(out)]
    if fiducials:
        arguments += ["--fiducials-model", str(case["fiducials_model"])]
        arguments += ["--fiducials-patient", str(case["fiducials_patient"])]
    return arguments + list(extra)


def _result(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _max_model_error_mm(T: FloatArray) -> float:
    vertices, _ = organ()
    return float(np.max(np.linalg.norm(apply(T, vertices) - apply(T_TRUE, vertices), axis=1)))


def _targets_patient() -> dict[str, FloatArray]:
    return {name: apply(T_TRUE, np.array(p)) for name, p in TARGETS_MODEL.items()}


def _one_error_line(code: int, stderr: str) -> str:
    """The run failed as bad input: exit 2, one line `ornav: ...` on stderr, no traceback."""
    assert code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("ornav: ")]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr
    return errors[0]


# --- methods --------------------------------------------------------------------------------


def test_rigid_from_fiducials_recovers_the_transform_and_maps_the_targets(
    case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rigid.json"
    assert main(_register(case, out, "--method", "rigid")) == 0

    result = _result(out)
    assert result["method"] == "rigid"
    T = np.array(result["T_patient_from_model"])
    assert T.shape == (4, 4)
    assert _max_model_error_mm(T) < 1.0
    metrics = result["metrics"]
    assert metrics["initialisation"] == "given"
    assert metrics["fitness"] == 1.0
    assert metrics["rms_residual_mm"] == pytest.approx(0.5, rel=0.15)
    assert metrics["iterations"] > 0 and metrics["time_s"] > 0.0
    assert 0.0 < metrics["fre_mm"] < 1.0
    # The targets are read from RAS and mapped in LPS; one predicted TRE each (eq. 46).
    assert [t["name"] for t in result["targets"]] == ["tumour", "vessel"]
    assert len(metrics["predicted_tre_mm"]) == 2 and all(v > 0 for v in metrics["predicted_tre_mm"])
    truth = _targets_patient()
    for target in result["targets"]:
        assert np.linalg.norm(np.array(target["rigid"]) - truth[target["name"]]) < 1.0
        assert target["deformable"] is None
    assert result["outputs"] == {"mesh": None}
    assert "rigid registration written to" in capsys.readouterr().out


def test_rigid_without_fiducials_searches_globally_and_writes_the_mesh(
    case: dict[str, Path], tmp_path: Path
) -> None:
    out, mesh_path = tmp_path / "rigid.json", tmp_path / "registered.ply"
    arguments = _register(case, out, "--method", "rigid", "--out-mesh", str(mesh_path))
    assert main([*arguments[:1], *_without_fiducials(arguments[1:])]) == 0

    result = _result(out)
    assert result["metrics"]["initialisation"] == "global"
    assert result["metrics"]["fre_mm"] is None and result["metrics"]["predicted_tre_mm"] is None
    T = np.array(result["T_patient_from_model"])
    assert _max_model_error_mm(T) < 1.0
    assert result["outputs"]["mesh"] == str(mesh_path)
    vertices, confidence = _read_ply(mesh_path, "confidence_mm")
    np.testing.assert_allclose(vertices, apply(T, organ()[0]), atol=1e-3)  # float32 in the PLY
    # The ICP's error field: small, finite, larger far from the traced patch.
    assert np.all(np.isfinite(confidence)) and 0.0 < confidence.min() < confidence.max() < 2.0


def _without_fiducials(arguments: list[str]) -> list[str]:
    drop = {"--fiducials-model", "--fiducials-patient"}
    kept: list[str] = []
    skip = False
    for a in arguments:
        if skip:
            skip = False
        elif a in drop:
            skip = True
        else:
            kept.append(a)
    return kept


def _read_ply(path: Path, attribute: str) -> tuple[FloatArray, FloatArray]:
    """The vertices (V, 3) and one per-vertex attribute (V,) of a PLY file."""
    mesh = trimesh.load(path, process=False)
    raw = mesh.metadata["_ply_raw"]["vertex"]["data"]
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(raw[attribute], np.float64)


def test_points_method_registers_the_fiducials_and_measures_the_points(
    case: dict[str, Path], tmp_path: Path
) -> None:
    out, mesh_path = tmp_path / "points.json", tmp_path / "points.ply"
    assert main(_register(case, out, "--method", "points", "--out-mesh", str(mesh_path))) == 0

    result = _result(out)
    metrics = result["metrics"]
    # Five fiducials with 0.3 mm noise: a few tenths of a mm at the targets, never 2 mm.
    truth = _targets_patient()
    for target in result["targets"]:
        assert np.linalg.norm(np.array(target["rigid"]) - truth[target["name"]]) < 2.0
    assert metrics["iterations"] is None and metrics["initialisation"] is None
    assert metrics["fitness"] > 0.95 and metrics["rms_residual_mm"] < 2.0
    _, confidence = _read_ply(mesh_path, "confidence_mm")
    assert np.all(confidence > 0.0)  # the eq. 46 field


def test_fle_mm_scales_the_predicted_tre(case: dict[str, Path], tmp_path: Path) -> None:
    small, large = tmp_path / "small.json", tmp_path / "large.json"
    assert main(_register(case, small, "--method", "points", "--fle-mm", "0.5")) == 0
    assert main(_register(case, large, "--method", "points", "--fle-mm", "1.0")) == 0
    tre_small = np.array(_result(small)["metrics"]["predicted_tre_mm"])
    tre_large = np.array(_result(large)["metrics"]["predicted_tre_mm"])
    np.testing.assert_allclose(tre_large, 2.0 * tre_small, rtol=1e-12)


def test_deformable_maps_targets_with_the_deformation_and_writes_displacements(
    case: dict[str, Path], tmp_path: Path
) -> None:
    out, mesh_path = tmp_path / "deformable.json", tmp_path / "deformed.ply"
    assert main(_register(case, out, "--method", "deformable", "--out-mesh", str(mesh_path))) == 0

    result = _result(out)
    assert result["method"] == "deformable"
    truth = _targets_patient()
    for target in result["targets"]:
        # The data are rigid: the deformable answer stays near the truth too.
        assert np.linalg.norm(np.array(target["deformable"]) - truth[target["name"]]) < 2.0
    vertices, displacement = _read_ply(mesh_path, "displacement_mm")
    _, confidence = _read_ply(mesh_path, "confidence_mm")
    T = np.array(result["T_patient_from_model"])
    moved = np.linalg.norm(vertices - apply(T, organ()[0]), axis=1)
    np.testing.assert_allclose(moved, displacement, atol=1e-3)
    assert np.all(np.isfinite(confidence))


def test_an_existing_output_is_kept_unless_overwrite(
    case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    out.write_text("{}")
    code = main(_register(case, out, "--method", "points"))
    line = _one_error_line(code, capsys.readouterr().err)
    assert line == f"ornav: {out}: already exists; --overwrite replaces it"
    assert out.read_text() == "{}"
    assert main(_register(case, out, "--method", "points", "--overwrite")) == 0
    assert _result(out)["method"] == "points"


# --- refusals: one line, exit code 2 ---------------------------------------------------------


def _bad_files(root: Path) -> dict[str, Path]:
    files = {
        "garbage.ply": b"ply\nformat nonsense\n",
        "bad_line.csv": b"x,y,z\n1,2,3\n4,five,6\n",
        "nan.xyz": b"1 2 3\n4 nan 6\n",
        "points.vtk": b"# vtk DataFile\n",
        "empty.txt": b"# nothing\n",
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    _write_mrk_json(
        root / "other_labels.mrk.json", {"F1": (0, 0, 0), "F2": (1, 0, 0), "G7": (0, 1, 0)}
    )
    _write_mrk_json(root / "collinear.mrk.json", {f"F{i + 1}": (i, 0, 0) for i in range(5)})
    return {name: root / name for name in [*files, "other_labels.mrk.json", "collinear.mrk.json"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param({"--model": "missing.ply"}, "missing.ply: no such mesh file", id="no_model"),
        pytest.param({"--model": "garbage.ply"}, "not a PLY file", id="bad_model"),
        pytest.param({"--points": "missing.csv"}, "no such points file", id="no_points"),
        pytest.param({"--points": "points.vtk"}, "unknown points format '.vtk'", id="vtk"),
        pytest.param({"--points": "bad_line.csv"}, "line 3: expected x, y, z", id="bad_line"),
        pytest.param({"--points": "nan.xyz"}, "point 2 is not finite", id="nan"),
        pytest.param({"--points": "empty.txt"}, "no points in it", id="empty"),
        pytest.param({"--targets": "missing.mrk.json"}, "--targets", id="no_targets"),
        pytest.param(
            {"--fiducials-patient": "other_labels.mrk.json"},
            "fiducial labels differ (only in --fiducials-model: F3, F4, F5; "
            "only in --fiducials-patient: G7)",
            id="labels",
        ),
        pytest.param(
            {
                "--fiducials-model": "collinear.mrk.json",
                "--fiducials-patient": "collinear.mrk.json",
            },
            "paired-point registration refused (collinear)",
            id="collinear",
        ),
        pytest.param({"--fiducials-patient": None}, "go together", id="one_fiducial_file"),
        pytest.param({"--fle-mm": "-1"}, "--fle-mm must be a number >= 0", id="fle"),
        pytest.param({"--out-mesh": "mesh.obj"}, "must be a .ply file", id="mesh_suffix"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    case: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str | None],
    expected: str,
) -> None:
    bad = _bad_files(tmp_path)
    arguments = _register(case, tmp_path / "out.json", "--method", "rigid")
    for option, value in change.items():
        if option in arguments:
            i = arguments.index(option)
            del arguments[i : i + 2]
        if value is not None and option == "--fle-mm":
            arguments += [option, value]
        elif value is not None:
            arguments += [option, str(bad.get(value, tmp_path / value))]

    line = _one_error_line(main(arguments), capsys.readouterr().err)

    assert expected in line
    assert not (tmp_path / "out.json").exists()


def test_points_far_from_the_model_are_a_refused_rigid_registration(
    case: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    far = tmp_path / "far.xyz"
    np.savetxt(far, np.loadtxt(case["points"], delimiter=",", skiprows=1) + (0.0, 0.0, 400.0))
    arguments = _register(case, tmp_path / "out.json", "--method", "rigid")
    arguments[arguments.index("--points") + 1] = str(far)

    line = _one_error_line(main(arguments), capsys.readouterr().err)

    assert line.startswith("ornav: rigid registration refused (insufficient_overlap): only 0%")


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param(["--method", "points"], "--method points needs --fiducials-model", id="pts"),
        pytest.param(["--method", "rigid"], "--method rigid needs --points", id="rigid"),
    ],
)
def test_a_method_without_its_inputs_is_refused(
    case: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    expected: str,
) -> None:
    command = ["register", "--model", str(case["model"]), "--out", str(tmp_path / "o.json")]
    line = _one_error_line(main(command + arguments), capsys.readouterr().err)
    assert expected in line


def test_a_real_process_prints_one_line_and_exits_2(case: dict[str, Path], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "register", "--model", str(case["model"])]
        + ["--points", str(tmp_path / "none.csv"), "--method", "rigid"]
        + ["--out", str(tmp_path / "o.json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    line = _one_error_line(result.returncode, result.stderr)
    assert line == f"ornav: {tmp_path / 'none.csv'}: no such points file"


# --- point files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("p.xyz", "1 2 3\n4 5 6\n7 8 9\n", id="xyz"),
        pytest.param("p.csv", "x,y,z\n1,2,3\n4,5,6\n7,8,9\n", id="csv_header"),
        pytest.param("p.txt", "# traced\n1\t2\t3\t0.1\n4 5 6 0.2\n\n7 8 9 0.3\n", id="txt_extra"),
    ],
)
def test_text_point_files_are_read_in_mm(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    np.testing.assert_array_equal(read_points(path), [[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def test_a_ply_point_cloud_is_read_as_its_vertices(tmp_path: Path) -> None:
    points = np.random.default_rng(0).normal(size=(50, 3)) * 40.0
    trimesh.PointCloud(points).export(tmp_path / "p.ply")
    np.testing.assert_allclose(read_points(tmp_path / "p.ply"), points, atol=1e-4)


# --- inputs that disagree with themselves, or lie a kilometre away: one line, exit 2 ----------

PHANTOM_LIVER = REPO / "nav" / "cases" / "phantom" / "models" / "liver.ply"


@pytest.fixture
def liver_inputs(tmp_path: Path) -> dict[str, Path]:
    """The phantom's liver (2562 vertices) as a model, and broken copies of it as inputs."""
    text = PHANTOM_LIVER.read_text()
    lines = text.splitlines(keepends=True)
    header_lines = lines.index("end_header\n") + 1
    liver = trimesh.load(PHANTOM_LIVER, process=False)
    vertices = np.asarray(liver.vertices)
    files = {
        # Cut after 472 vertex rows: trimesh read it as 472 points, and ICP accepted them.
        "truncated.ply": "".join(lines[: header_lines + 472]),
        # 3000 declared, 2562 there: trimesh read 438 face rows "3 a b c" as points (3, a, b).
        "miscounted.ply": text.replace("element vertex 2562\n", "element vertex 3000\n", 1),
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    np.savetxt(tmp_path / "points.xyz", vertices[::3] + (1.0, 2.0, 3.0))
    np.savetxt(tmp_path / "points_x1e300.xyz", vertices[::3] * 1e300)
    (tmp_path / "liver_x1e300.ply").write_bytes(
        ply_ascii(vertices * 1e300, np.asarray(liver.faces), comment="x1e300")
    )
    _write_mrk_json(tmp_path / "far.mrk.json", {"F1": (0.0, 0.0, 2e6)})
    return {p.name: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    ("option", "name", "expected"),
    [
        pytest.param(
            "--points",
            "truncated.ply",
            "truncated.ply: the data end after 472 of the 2562 vertex rows its header declares "
            "(2562 vertex, 5120 face): the file is truncated or its header's counts are wrong",
            id="points_truncated",
        ),
        pytest.param(
            "--points",
            "miscounted.ply",
            "miscounted.ply: vertex row 2563 has 4 values, its properties need 3",
            id="points_face_rows_as_points",
        ),
        pytest.param(
            "--model",
            "miscounted.ply",
            "--model ",  # the same refusal, named as the model
            id="model_miscounted",
        ),
        pytest.param(
            "--points",
            "points_x1e300.xyz",
            "points_x1e300.xyz: point 1 is 1.22e+302 mm from the origin, beyond the 1e+06 mm "
            "limit (a unit or scale error?)",
            id="points_x1e300",
        ),
        pytest.param("--model", "liver_x1e300.ply", "beyond the 1e+06 mm limit", id="model_x1e300"),
        pytest.param("--targets", "far.mrk.json", "beyond 1e+06 mm", id="target_2km"),
    ],
)
def test_an_inconsistent_ply_or_absurd_coordinates_are_refused_before_registration(
    liver_inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: str,
    name: str,
    expected: str,
) -> None:
    given = {"--model": PHANTOM_LIVER, "--points": liver_inputs["points.xyz"]}
    given[option] = liver_inputs[name]
    arguments = ["register", "--method", "rigid", "--out", str(tmp_path / "out.json")]
    for key, path in given.items():
        arguments += [key, str(path)]

    line = _one_error_line(main(arguments), capsys.readouterr().err)

    assert expected in line, line
    assert str(liver_inputs[name]) in line
    assert not (tmp_path / "out.json").exists()


def test_the_consistent_liver_inputs_do_register(
    liver_inputs: dict[str, Path], tmp_path: Path
) -> None:
    """The control for the refusals above: the same command on the unbroken files works."""
    out = tmp_path / "out.json"
    arguments = ["register", "--method", "rigid", "--out", str(out)]
    arguments += ["--model", str(PHANTOM_LIVER), "--points", str(liver_inputs["points.xyz"])]
    assert main(arguments) == 0
    T = np.array(_result(out)["T_patient_from_model"])
    np.testing.assert_allclose(T[:3, 3], (1.0, 2.0, 3.0), atol=0.05)


def test_coordinates_x1e300_are_one_line_from_a_real_process_not_an_open3d_traceback(
    liver_inputs: dict[str, Path], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "register", "--model", str(PHANTOM_LIVER)]
        + ["--points", str(liver_inputs["points_x1e300.xyz"]), "--method", "rigid"]
        + ["--out", str(tmp_path / "o.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    line = _one_error_line(result.returncode, result.stderr)
    assert "beyond the 1e+06 mm limit" in line
    assert "Open3D" not in result.stderr
