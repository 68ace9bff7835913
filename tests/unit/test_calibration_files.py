"""Calibration files: ornav TOML round trips and refusals, PLUS XML, OpenCV yml, pose dirs."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from calibration.files import (
    SCHEMAS,
    CalibrationFileError,
    OpenCVCamera,
    PlusTransform,
    plus_tip_transform,
    read_calibration,
    read_matrix_dir,
    read_opencv_camera,
    read_plus_phantom_landmarks,
    read_plus_transforms,
    read_tip_offset,
    write_calibration,
    write_opencv_camera,
    write_plus_transform,
)
from nav.transforms import axis_angle_to_matrix, is_rigid, make_rigid
from tests.conftest import shared_data

PLUS_CONFIGS = "PlusLibData/ConfigFiles"
OPENCV_YML = "PlusLibData/ConfigFiles/OpticalMarkerTracker/realsense_gen2_calibration.yml"
PIVOT_DIR = "scikit-surgerycore/tests/data/PivotCalibration"

CREATED = datetime(2026, 5, 9, 7, 35, 25, tzinfo=UTC)
K = np.array([[608.67179504, 0.0, 323.12263928], [0.0, 606.13421375, 231.29247171], [0, 0, 1.0]])
T_MARKER_FROM_CAMERA = make_rigid(axis_angle_to_matrix([1.0, 2.0, 0.5], 0.7), [12.5, -3.25, 80.0])

EXAMPLES: dict[str, dict[str, Any]] = {
    "pivot": {
        "method": "algebraic",
        "input": {"source": "files", "path": "/data/pivot", "n_poses": 1151},
        "result": {
            "p_tip_in_pointer": np.array([-14.476172012994294, 395.1428216134749, -7.5579]),
            "p_pivot_in_tracker": np.array([-805.2847358754532, -85.44779265896945, -2112.06]),
            "n_inliers": 1151,
            "rotation_spread_deg": 27.058444566225706,
        },
        "errors": {
            "rms_error_mm": 1.8384664420100074,
            "mean_residual_norm_mm": 2.531338504876377,
            "max_residual_norm_mm": 12.309048478285145,
        },
    },
    "spin": {
        "method": "svd",
        "input": {"source": "live", "tool": "pointer", "seconds": 10.0, "n_poses": 600},
        "result": {"shaft_direction_in_pointer": np.array([0.6, 0.0, -0.8])},
        "errors": {"axis_spread_deg": 0.4},
    },
    "camera": {
        "method": "chessboard",
        "input": {"view_names": ["a.png", "b.png"], "pattern": "14x10", "square_mm": 6.0},
        "result": {
            "camera_matrix": K,
            "dist_coeffs": np.array([-0.02191634, -0.14300148, -0.00395124, -0.00044941, 0.19657]),
            "image_size": [640, 480],
        },
        "errors": {"rms_reprojection_px": 0.31, "per_view_rms_px": np.array([0.2, 0.4, 0.3])},
    },
    "handeye": {
        "method": "park",
        "input": {"n_poses": 12},
        "result": {"T_marker_from_camera": T_MARKER_FROM_CAMERA},
        "errors": {"rotation_residual_deg": 0.12, "translation_residual_mm": 0.8},
    },
    "temporal": {
        "method": "cross-correlation",
        "input": {"a": "video.csv", "b": "tracker.csv"},
        "result": {"dt_a_from_b_s": 0.037, "confidence": 0.98},
        "errors": {"peak_width_s": 0.01, "residual_rms": 0.2},
    },
    "display": {
        "method": "simulation",
        "input": {"source": "sim"},
        "result": {
            "T_display_from_headset": T_MARKER_FROM_CAMERA,
            "camera_matrix": np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]),
            "image_size": [640, 480],
        },
        "errors": {"alignment_rms_mm": 0.0},
    },
}


def _write(path: Path, kind: str = "pivot") -> Path:
    write_calibration(path, kind=kind, created=CREATED, **EXAMPLES[kind])
    return path


def _same(a: Any, b: Any) -> bool:
    return bool(np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float)))


# --- ornav TOML ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_each_kind_reads_back_exactly_what_was_written(tmp_path: Path, kind: str) -> None:
    path = _write(tmp_path / f"{kind}.toml", kind)
    calibration = read_calibration(path)
    example = EXAMPLES[kind]
    assert (calibration.kind, calibration.method, calibration.version) == (
        kind,
        example["method"],
        1,
    )
    assert calibration.created == CREATED and calibration.path == path
    assert set(calibration.result) == set(example["result"])
    for key, value in example["result"].items():
        assert _same(calibration.result[key], value), key  # floats survive bit for bit
    for key, value in example["errors"].items():
        assert _same(calibration.errors[key], value), key
    for key, value in example["input"].items():
        assert calibration.input[key] == (tuple(value) if isinstance(value, list) else value)


def test_every_kind_has_an_example_and_at_least_one_error_figure() -> None:
    assert set(EXAMPLES) == set(SCHEMAS)
    for schema in SCHEMAS.values():
        assert any(spec.required for spec in schema.errors.values())
        # Units in key names: every error figure says its unit (or says it has none).
        assert all(re.search(r"_(mm|px|deg|s)$|_rms$", key) for key in schema.errors)


def test_written_file_is_commented_toml_with_a_utc_date(tmp_path: Path) -> None:
    text = _write(tmp_path / "p.toml").read_text()
    assert 'format = "ornav-calibration"' in text and "version = 1" in text
    assert "created = 2026-05-09T07:35:25Z" in text
    assert "rms_error_mm = 1.8384664420100074  # RMS over the stacked" in text


def test_read_tip_offset_gives_the_pivot_tip_and_refuses_other_kinds(tmp_path: Path) -> None:
    tip = read_tip_offset(_write(tmp_path / "p.toml"))
    assert _same(tip, EXAMPLES["pivot"]["result"]["p_tip_in_pointer"])
    with pytest.raises(CalibrationFileError, match="'kind': expected a pivot calibration"):
        read_tip_offset(_write(tmp_path / "c.toml", "camera"))


_TIP, _TIP_KEY = r"^p_tip_in_pointer = .*$", "result.p_tip_in_pointer"
BROKEN: list[tuple[str, str, str, str]] = [
    # (kind, line to replace by regex, replacement, key the error must name)
    ("pivot", r"^version = 1$", "version = 2", "version"),
    ("pivot", r"^kind = .*$", 'kind = "laser"', "kind"),
    ("pivot", r"^format = .*$", 'format = "something-else"', "format"),
    ("pivot", r"^created = .*$", 'created = "yesterday"', "created"),
    ("pivot", r"^created = .*$", "created = 2026-05-09T07:35:25", "created"),  # no offset
    ("pivot", r"^method = .*$", "", "method"),
    ("pivot", _TIP, "", _TIP_KEY),
    ("pivot", _TIP, "p_tip_in_pointer = [1.0, 2.0]", _TIP_KEY),
    ("pivot", _TIP, "p_tip_in_pointer = [1.0, nan, 3.0]", _TIP_KEY),
    ("pivot", _TIP, 'p_tip_in_pointer = "1 2 3"', _TIP_KEY),
    ("pivot", _TIP, "p_tip_in_pointer = [[1.0], [2, 3]]", _TIP_KEY),
    ("pivot", r"^n_inliers = .*$", "n_inliers = 3.5", "result.n_inliers"),
    ("pivot", r"^\[result\]$", "[result]\nsurprise = 1.0", "result.surprise"),
    ("pivot", r"^rms_error_mm = .*$", "rms_error_mm = -1.0", "errors.rms_error_mm"),
    ("pivot", r"^rms_error_mm = .*$", "rms_error_mm = inf", "errors.rms_error_mm"),
    ("pivot", r"^max_residual_norm_mm = .*$", "", "errors.max_residual_norm_mm"),
    ("pivot", r"^\[errors\]$", "[errs]", "errs"),
    ("pivot", r"^\[errors\][\s\S]*", "", "errors"),
    ("pivot", r"^\[input\]$", "[input]\nnested = { a = 1 }", "input.nested"),
    ("pivot", r"^method = .*$", 'method = "algebraic"\nextra = 1', "extra"),
    ("camera", r"^    \[0\.0, 0\.0, 1\.0\],$", "    [0.0, 0.1, 1.0],", "result.camera_matrix"),
    ("camera", r"^dist_coeffs = .*$", "dist_coeffs = [0.1, 0.2, 0.3]", "result.dist_coeffs"),
    ("camera", r"^image_size = .*$", "image_size = [640.0, 480.0]", "result.image_size"),
    ("camera", r"^image_size = .*$", "image_size = [640, 0]", "result.image_size"),
    ("spin", r"^shaft_direction_in_pointer = .*$", "shaft_direction_in_pointer = [1.0, 1.0, 0.0]",
     "result.shaft_direction_in_pointer"),
    ("handeye", r"^    \[.*\],$", "    [2.0, 0.0, 0.0, 1.0],", "result.T_marker_from_camera"),
    ("temporal", r"^confidence = .*$", "confidence = 1.5", "result.confidence"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "pattern", "replacement", "key"), BROKEN)
def test_a_broken_file_is_refused_in_one_line_naming_file_and_key(
    tmp_path: Path, kind: str, pattern: str, replacement: str, key: str
) -> None:
    path = _write(tmp_path / "broken.toml", kind)
    text, n = re.subn(pattern, replacement, path.read_text(), count=1, flags=re.MULTILINE)
    assert n == 1, pattern
    path.write_text(text)
    with pytest.raises(CalibrationFileError) as caught:
        read_calibration(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: key '{key}'"), message
    assert "\n" not in message


def test_not_toml_and_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("format = \n[[[")
    with pytest.raises(CalibrationFileError, match=rf"^{re.escape(str(bad))}: not valid TOML"):
        read_calibration(bad)
    with pytest.raises(CalibrationFileError, match="no such file"):
        read_calibration(tmp_path / "absent.toml")


def test_writing_refuses_what_reading_would_refuse_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    example = dict(EXAMPLES["pivot"])
    example["result"] = {**example["result"], "p_tip_in_pointer": [1.0, float("nan"), 2.0]}
    with pytest.raises(CalibrationFileError, match="p_tip_in_pointer"):
        write_calibration(path, kind="pivot", **example)
    example["result"] = {**EXAMPLES["pivot"]["result"], "p_tip_in_pointer": [1.0, 2.0]}
    with pytest.raises(CalibrationFileError, match="'result.p_tip_in_pointer': expected shape"):
        write_calibration(path, kind="pivot", **example)
    assert list(tmp_path.iterdir()) == []


# --- PLUS ------------------------------------------------------------------------------


def _plus_configs() -> list[Path]:
    return sorted(shared_data(PLUS_CONFIGS).glob("*.xml"))


def test_plus_import_finds_every_coordinate_definition_in_the_real_configs() -> None:
    configs = _plus_configs()
    assert len(configs) >= 6
    found = {}
    for config in configs:
        transforms = read_plus_transforms(config)
        # Counted independently: <Transform From=...> elements (TransformNames use Name=).
        assert len(transforms) == len(re.findall(r"<Transform\s+From=", config.read_text()))
        found[config.name] = transforms
    polaris = found["PlusDeviceSet_Server_NDIPolaris.xml"]
    assert [t.name for t in polaris] == ["StylusTipToStylus"]
    assert polaris[0].matrix[2, 3] == pytest.approx(-88.5321)
    assert polaris[0].error == pytest.approx(0.554951) and polaris[0].date == "012617_105449"
    vega = found["PlusDeviceSet_Server_NDIVega.xml"]
    assert [t.name for t in vega] == ["ImageToReference", "StylusTipToStylus"]
    assert np.array_equal(vega[0].matrix, np.eye(4))
    landmarks = found["PlusDeviceSet_fCal_Sim_RecordPhantomLandmarks.xml"][0]
    assert landmarks.matrix[0, 3] == pytest.approx(108.565)
    assert found["PlusDeviceSet_fCal_Sim_PivotCalibration.xml"] == ()


def test_plus_export_then_import_gives_the_same_transform(tmp_path: Path) -> None:
    tip = np.array([-14.476172012994294, 395.1428216134749, -7.557904209001168])
    T = plus_tip_transform(tip)
    path = tmp_path / "out.xml"
    write_plus_transform(path, PlusTransform("StylusTip", "Stylus", T, 2.531, "050926_073525"))
    (read,) = read_plus_transforms(path)
    assert read.name == "StylusTipToStylus" and read.date == "050926_073525"
    assert np.array_equal(read.matrix, T) and read.error == pytest.approx(2.531)


def test_plus_export_replaces_the_tip_in_a_real_config_and_keeps_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "vega.xml"
    shutil.copy(shared_data(PLUS_CONFIGS) / "PlusDeviceSet_Server_NDIVega.xml", config)
    T = plus_tip_transform([1.0, 2.0, -150.0])
    write_plus_transform(config, PlusTransform("StylusTip", "Stylus", T, 0.5))
    transforms = read_plus_transforms(config)
    assert [t.name for t in transforms] == ["ImageToReference", "StylusTipToStylus"]
    assert np.array_equal(transforms[1].matrix, T)
    assert (
        "<DataCollection" in config.read_text() and "<PlusOpenIGTLinkServer" in config.read_text()
    )


def test_plus_tip_transform_is_rigid_puts_the_tip_at_the_origin_and_z_along_the_shaft() -> None:
    for tip in ([0.0, 0.0, -160.0], [150.0, 1.0, 0.0], [-14.5, 395.1, -7.6]):
        T = plus_tip_transform(tip)
        assert is_rigid(T, tol=1e-12)
        assert np.allclose(T[:3, 3], tip)
        assert np.allclose(T[:3, 2], np.asarray(tip) / np.linalg.norm(tip))


LANDMARKS_CONFIG = "PlusDeviceSet_fCal_Sim_RecordPhantomLandmarks.xml"


def test_phantom_landmarks_are_read_from_the_real_fcal_config() -> None:
    config = shared_data(PLUS_CONFIGS) / LANDMARKS_CONFIG
    landmarks = read_plus_phantom_landmarks(config)
    # Counted independently of ElementTree; <Reference> repeats them and is not read.
    assert len(landmarks) == len(re.findall(r"<Landmark\s+Name=", config.read_text())) == 8
    assert [m.name for m in landmarks] == [f"#{i}" for i in range(1, 9)]
    assert np.array_equal(landmarks[0].p_phantom, [104.3, 5.0, 20.0])
    assert np.array_equal(landmarks[4].p_phantom, [-34.3, 45.0, 15.0])
    with pytest.raises(ValueError):
        landmarks[0].p_phantom[0] = 0.0
    pivot_only = shared_data(PLUS_CONFIGS) / "PlusDeviceSet_fCal_Sim_PivotCalibration.xml"
    with pytest.raises(CalibrationFileError, match="no <PhantomDefinition>"):
        read_plus_phantom_landmarks(pivot_only)


def test_read_tip_offset_reads_the_stylus_tip_of_real_plus_configs() -> None:
    configs = shared_data(PLUS_CONFIGS)
    tip = read_tip_offset(configs / LANDMARKS_CONFIG)
    assert np.array_equal(tip, [108.565, 7.77385, 2.5389])  # StylusTipToStylus's translation
    polaris = read_tip_offset(configs / "PlusDeviceSet_Server_NDIPolaris.xml")
    assert np.array_equal(polaris, [0.0180449, -0.00144002, -88.5321])
    with pytest.raises(CalibrationFileError) as caught:
        read_tip_offset(configs / "PlusDeviceSet_fCal_Sim_PivotCalibration.xml")
    assert "no StylusTipToStylus transform in <CoordinateDefinitions> (found: none)" in str(
        caught.value
    )


def _plus_config(path: Path, body: str) -> Path:
    path.write_text(f"<PlusConfiguration>{body}</PlusConfiguration>")
    return path


def _matrix_text(T: np.ndarray) -> str:
    return " ".join(repr(float(x)) for x in T.reshape(-1))


def test_read_tip_offset_inverts_a_plus_tip_stored_the_other_way_with_a_general_inverse(
    tmp_path: Path,
) -> None:
    # StylusToStylusTip, off rigid by 5e-4 as real PLUS matrices are: the tip is the
    # translation of its inverse; transposing the rotation would miss it by 0.08 mm.
    T_tip_from_stylus = np.linalg.inv(plus_tip_transform([-14.5, 395.1, -7.6]))
    T_tip_from_stylus[:3, :3] @= np.diag([1.0, 1.0 + 5e-4, 1.0])
    path = _plus_config(
        tmp_path / "tip.xml",
        "<CoordinateDefinitions><Transform From='Stylus' To='StylusTip' "
        f"Matrix='{_matrix_text(T_tip_from_stylus)}'/></CoordinateDefinitions>",
    )
    tip = read_tip_offset(path)
    np.testing.assert_allclose(tip, np.linalg.inv(T_tip_from_stylus)[:3, 3], atol=1e-9)
    R = T_tip_from_stylus[:3, :3]
    assert np.linalg.norm(-R.T @ T_tip_from_stylus[:3, 3] - tip) > 0.05


def test_read_tip_offset_takes_the_frame_names_of_the_plus_pivot_algorithm(tmp_path: Path) -> None:
    T = plus_tip_transform([1.0, 2.0, -150.0])
    path = _plus_config(
        tmp_path / "needle.xml",
        "<CoordinateDefinitions>"
        f"<Transform From='StylusTip' To='Stylus' Matrix='{_matrix_text(np.eye(4))}'/>"
        f"<Transform From='NeedleTip' To='Needle' Matrix='{_matrix_text(T)}'/>"
        "</CoordinateDefinitions><vtkPlusPivotCalibrationAlgo"
        " ObjectMarkerCoordinateFrame='Needle' ReferenceCoordinateFrame='Reference'"
        " ObjectPivotPointCoordinateFrame='NeedleTip'/>",
    )
    assert np.array_equal(read_tip_offset(path), [1.0, 2.0, -150.0])


_LANDMARK = "<Landmark Name='#1' Position='104.3 5.0 20.0'/>"
MALFORMED_LANDMARKS = [
    ("<PhantomDefinition><Geometry/></PhantomDefinition>", "has no Geometry/Landmarks/Landmark"),
    (_LANDMARK.replace("Name='#1'", ""), "Landmark #1 has no Name"),
    (_LANDMARK + _LANDMARK, "Landmark '#1' is defined twice"),
    (_LANDMARK.replace(" Position='104.3 5.0 20.0'", ""), "Landmark '#1': no Position"),
    (_LANDMARK.replace("104.3 5.0 20.0", "104.3 5.0"), "Position '104.3 5.0' is not 3 numbers"),
    (_LANDMARK.replace("104.3 5.0 20.0", "104.3 x 20.0"), "is not 3 numbers"),
    (_LANDMARK.replace("104.3", "nan"), "non-finite"),
    (_LANDMARK.replace("104.3", "1e5"), "beyond the 10000 mm limit"),
    (_LANDMARK + _LANDMARK.replace("#1", "#2"), "Landmark '#2' is at the same point as '#1'"),
]


@pytest.mark.parametrize(("landmarks", "problem"), MALFORMED_LANDMARKS)
def test_a_malformed_phantom_landmark_is_refused_in_one_line(
    tmp_path: Path, landmarks: str, problem: str
) -> None:
    if not landmarks.startswith("<PhantomDefinition"):
        landmarks = (
            f"<PhantomDefinition><Geometry><Landmarks>{landmarks}</Landmarks></Geometry>"
            "</PhantomDefinition>"
        )
    path = _plus_config(tmp_path / "bad.xml", landmarks)
    with pytest.raises(CalibrationFileError) as caught:
        read_plus_phantom_landmarks(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("reader", [read_plus_phantom_landmarks, read_tip_offset])
def test_a_plus_xml_that_is_not_well_formed_or_not_plus_is_refused_in_one_line(
    tmp_path: Path, reader: Any
) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<PlusConfiguration><PhantomDefinition></PlusConfiguration>")
    with pytest.raises(CalibrationFileError, match="not well-formed XML") as caught:
        reader(broken)
    assert "\n" not in str(caught.value)
    other = tmp_path / "other.xml"
    other.write_text("<svg/>")
    with pytest.raises(
        CalibrationFileError, match=r"not a PLUS device-set configuration \(root <svg>\)"
    ):
        reader(other)
    with pytest.raises(CalibrationFileError, match="no such file"):
        reader(tmp_path / "missing.xml")


MALFORMED_PLUS = [
    ('<Transform From="A" To="B" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0" />', "has 15 numbers"),
    ('<Transform From="A" To="B" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 x" />', "holds 'x'"),
    ('<Transform From="A" To="B" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 nan" />', "non-finite"),
    ('<Transform From="A" To="B" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 1 1" />', "last row"),
    ('<Transform From="A" To="B" />', "no Matrix"),
    ('<Transform To="B" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" />', "lacks From or To"),
    ('<Transform From="A" To="B" Error="big" Matrix="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1" />', "Error"),
]


@pytest.mark.parametrize(("element", "problem"), MALFORMED_PLUS)
def test_a_malformed_plus_transform_is_refused_in_one_line(
    tmp_path: Path, element: str, problem: str
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(
        f"<PlusConfiguration><CoordinateDefinitions>{element}</CoordinateDefinitions>"
        "</PlusConfiguration>"
    )
    with pytest.raises(CalibrationFileError) as caught:
        read_plus_transforms(path)
    assert str(caught.value).startswith(str(path)) and problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_not_xml_or_not_plus_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.xml"
    path.write_text("<PlusConfiguration><oops></PlusConfiguration>")
    with pytest.raises(CalibrationFileError, match="not well-formed XML"):
        read_plus_transforms(path)
    path.write_text("<html/>")
    with pytest.raises(CalibrationFileError, match="not a PLUS device-set configuration"):
        read_plus_transforms(path)
    with pytest.raises(CalibrationFileError, match="not a PLUS"):
        write_plus_transform(path, PlusTransform("A", "B", np.eye(4)))
    assert path.read_text() == "<html/>"


# --- OpenCV ----------------------------------------------------------------------------


def test_the_real_opencv_yml_is_read_with_its_field_names() -> None:
    camera = read_opencv_camera(shared_data(OPENCV_YML))
    assert camera.image_size == (640, 480)
    assert camera.camera_matrix[0, 0] == pytest.approx(683.74813323196008)
    assert camera.camera_matrix[1, 2] == pytest.approx(227.70108016270896)
    assert camera.dist_coeffs.shape == (5,)
    assert camera.dist_coeffs[4] == pytest.approx(-1.5404120998729764)


@pytest.mark.parametrize("suffix", [".yml", ".yaml", ".xml", ".json"])
def test_opencv_export_then_import_round_trips(tmp_path: Path, suffix: str) -> None:
    dist = np.array([-0.02191634, -0.14300148, -0.00395124, -0.00044941, 0.19656551])
    path = tmp_path / f"camera{suffix}"
    write_opencv_camera(path, OpenCVCamera(K, dist, (640, 480), 0.31))
    camera = read_opencv_camera(path)
    assert np.array_equal(camera.camera_matrix, K) and np.array_equal(camera.dist_coeffs, dist)
    assert camera.image_size == (640, 480) and camera.rms_reprojection_px == pytest.approx(0.31)


def test_opencv_import_accepts_the_common_variant_names(tmp_path: Path) -> None:
    path = tmp_path / "variant.yml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("cameraMatrix", K)
    fs.write("distCoeffs", np.zeros((4, 1)))
    fs.write("imageSize", np.array([[1280.0, 720.0]]))
    fs.release()
    camera = read_opencv_camera(path)
    assert np.array_equal(camera.camera_matrix, K) and camera.dist_coeffs.shape == (4,)
    assert camera.image_size == (1280, 720)


def test_opencv_import_accepts_a_ros_camera_info_yaml(tmp_path: Path) -> None:
    path = tmp_path / "ros.yaml"
    path.write_text(
        "%YAML:1.0\n---\nimage_width: 640\nimage_height: 480\n"
        "camera_matrix:\n  rows: 3\n  cols: 3\n"
        "  data: [600., 0., 320., 0., 601., 240., 0., 0., 1.]\n"
        "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0.1, -0.2, 0., 0., 0.05]\n"
    )
    camera = read_opencv_camera(path)
    assert camera.camera_matrix[1, 1] == 601.0 and camera.dist_coeffs[1] == -0.2


def test_opencv_files_missing_a_key_or_with_a_bad_matrix_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("distortion_coefficients", np.zeros((1, 5)))
    fs.release()
    with pytest.raises(CalibrationFileError, match=r"key 'camera_matrix': missing"):
        read_opencv_camera(path)
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("camera_matrix", np.eye(3) * 2)
    fs.write("distortion_coefficients", np.zeros((1, 5)))
    fs.release()
    with pytest.raises(CalibrationFileError, match=r"'camera_matrix': the last row"):
        read_opencv_camera(path)
    with pytest.raises(CalibrationFileError, match="ends in"):
        write_opencv_camera(tmp_path / "camera.txt", OpenCVCamera(K, np.zeros(5), None))


# --- matrix directories ----------------------------------------------------------------


def test_the_real_pivot_dir_gives_1151_poses_in_file_name_order() -> None:
    directory = shared_data(PIVOT_DIR)
    Ts = read_matrix_dir(directory)
    assert Ts.shape == (1151, 4, 4)
    first = sorted(directory.iterdir())[0]
    assert np.array_equal(Ts[0], np.loadtxt(first))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n", "expected a 4x4 matrix"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1 5\n", "expected a 4x4 matrix"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 zero\n0 0 0 1\n", "'zero' is not a number"),
        ("1 0 0 0\n0 1 0 0\n0 0 1 inf\n0 0 0 1\n", "non-finite"),
        ("2 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n", "not a rigid transform"),
    ],
)
def test_a_bad_matrix_file_is_named(tmp_path: Path, content: str, problem: str) -> None:
    directory = tmp_path / "poses"
    directory.mkdir()
    for name in sorted(shared_data(PIVOT_DIR).iterdir())[:3]:
        shutil.copy(name, directory)
    (directory / "zz-bad.txt").write_text(content)
    with pytest.raises(CalibrationFileError) as caught:
        read_matrix_dir(directory)
    assert str(caught.value).startswith(str(directory / "zz-bad.txt")), caught.value
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_or_absent_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationFileError, match="no matrix files"):
        read_matrix_dir(tmp_path)
    with pytest.raises(CalibrationFileError, match="no such directory"):
        read_matrix_dir(tmp_path / "absent")
