"""The case bundle: the shipped phantom, its geometry, the markups and mesh readers, refusals."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import main as cli
from nav.case import Case, CaseError, check_ply, load_case, ras_to_lps, read_markups, read_mesh
from nav.phantom import (
    ORGAN_EXTENTS_MM,
    SHIPPED_PHANTOM_DIR,
    TUMOR_CENTRE_LPS,
    phantom_files,
    ply_ascii,
    write_phantom_case,
)
from tests.conftest import shared_data

REGENERATE = "regenerate with `ornav case phantom nav/cases/phantom --force`"


def _winding_number(
    vertices: npt.NDArray[np.float64], faces: npt.NDArray[np.int64], points: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Generalised winding number of a closed mesh at each point: 1 inside, 0 outside.

    The sum of the solid angles the triangles subtend, over 4 pi (A. Van Oosterom and
    J. Strackee, "The solid angle of a plane triangle", IEEE TBME 30(2):125-126, 1983).
    A closed form, independent of trimesh's ray tests (which need rtree, not installed).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    triangles = vertices[faces]
    result = []
    for chunk in np.array_split(p, max(1, len(p) // 64)):
        a, b, c = (triangles[None, :, k, :] - chunk[:, None, :] for k in range(3))
        la, lb, lc = (np.linalg.norm(x, axis=2) for x in (a, b, c))
        det = np.einsum("pfi,pfi->pf", a, np.cross(b, c))
        ab, bc, ca = (np.einsum("pfi,pfi->pf", x, y) for x, y in ((a, b), (b, c), (c, a)))
        denominator = la * lb * lc + ab * lc + bc * la + ca * lb
        result.append(np.sum(2.0 * np.arctan2(det, denominator), axis=1) / (4.0 * math.pi))
    return np.concatenate(result)


@pytest.fixture(scope="module")
def phantom() -> Case:
    return load_case(SHIPPED_PHANTOM_DIR)


def _copy_phantom(tmp_path: Path) -> Path:
    root = tmp_path / "case"
    shutil.copytree(SHIPPED_PHANTOM_DIR, root)
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# --- the shipped phantom -------------------------------------------------------------------


def test_shipped_phantom_is_byte_identical_to_what_the_generator_writes_now() -> None:
    generated = phantom_files()
    shipped = {
        p.relative_to(SHIPPED_PHANTOM_DIR).as_posix(): p.read_bytes()
        for p in sorted(SHIPPED_PHANTOM_DIR.rglob("*"))
        if p.is_file()
    }
    assert sorted(shipped) == sorted(generated), REGENERATE
    for name, content in generated.items():
        assert shipped[name] == content, f"{name} drifted from nav/phantom.py: {REGENERATE}"


def test_phantom_writer_gives_the_same_bytes_every_run(tmp_path: Path) -> None:
    def hashes(root: Path) -> dict[str, str]:
        written = write_phantom_case(root)
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in written
        }

    first, second = hashes(tmp_path / "a"), hashes(tmp_path / "b")
    assert first == second
    assert len(first) == 8  # case.toml, 5 meshes, fiducials, targets


def test_shipped_phantom_is_small() -> None:
    total = sum(p.stat().st_size for p in SHIPPED_PHANTOM_DIR.rglob("*") if p.is_file())
    assert total < 1_000_000


def test_phantom_loads_with_its_structures_roles_and_critical_flags(phantom: Case) -> None:
    assert phantom.name == "phantom"
    assert [(s.name, s.role, s.critical) for s in phantom.structures] == [
        ("liver", "organ", False),
        ("tumor", "tumor", False),
        ("portal_vein", "vessel", True),
        ("hepatic_vein", "vessel", True),
        ("bile_duct", "critical", True),
    ]
    assert [s.name for s in phantom.critical_structures] == [
        "portal_vein",
        "hepatic_vein",
        "bile_duct",
    ]
    assert phantom.structure("liver").opacity == pytest.approx(0.35)
    assert phantom.structure("tumor").colour == pytest.approx((0xF2 / 255, 0xC1 / 255, 0x2E / 255))
    assert len(phantom.fiducials) >= 6 and len(phantom.targets) >= 3


def test_every_phantom_mesh_is_a_closed_surface_with_outward_normals(phantom: Case) -> None:
    for s in phantom.structures:
        assert s.mesh.is_volume and s.mesh.volume > 0, s.name
        assert s.mesh.body_count == 1, s.name


def test_phantom_organ_is_liver_sized_with_a_few_thousand_triangles(phantom: Case) -> None:
    organ = phantom.structure("liver").mesh
    assert organ.extents == pytest.approx(ORGAN_EXTENTS_MM, abs=0.01)
    lr, ap, si = organ.extents
    assert 180 <= lr <= 200 and 140 <= ap <= 160 and 90 <= si <= 110
    assert 2000 <= len(organ.faces) <= 10000
    assert 1.0e6 < organ.volume < 2.0e6  # mm^3: a real liver is about 1.5 litres


def test_phantom_tumor_is_about_25_mm_across(phantom: Case) -> None:
    tumor = phantom.structure("tumor").mesh
    assert np.all((tumor.extents > 22) & (tumor.extents < 28))


def test_phantom_tumor_and_vessels_lie_inside_the_organ(phantom: Case) -> None:
    organ = phantom.structure("liver").mesh
    for name in ("tumor", "portal_vein", "hepatic_vein", "bile_duct"):
        w = _winding_number(organ.vertices, organ.faces, phantom.structure(name).mesh.vertices)
        assert np.all(w > 0.99), f"{name}: {np.sum(w < 0.99)} vertices outside the organ"


def test_winding_number_tells_inside_from_outside_on_a_known_sphere() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    w = _winding_number(sphere.vertices, sphere.faces, [[0, 0, 0], [9, 0, 0], [11, 0, 0]])
    assert w == pytest.approx([1.0, 1.0, 0.0], abs=1e-6)


def test_phantom_targets_lie_inside_the_organ_and_the_first_is_the_tumor_centre(
    phantom: Case,
) -> None:
    organ, tumor = phantom.structure("liver").mesh, phantom.structure("tumor").mesh
    targets = phantom.targets.points_lps
    assert np.all(_winding_number(organ.vertices, organ.faces, targets) > 0.99)
    assert phantom.targets.labels[0] == "tumor_centre"
    assert targets[0] == pytest.approx(TUMOR_CENTRE_LPS)
    assert _winding_number(tumor.vertices, tumor.faces, targets[:1])[0] > 0.99


def test_phantom_fiducials_lie_on_the_organ_surface(phantom: Case) -> None:
    organ = phantom.structure("liver").mesh
    fiducials = phantom.fiducials.points_lps
    # Each is within 0.01 mm of an organ vertex, and vertices are on the surface.
    nearest = np.min(np.linalg.norm(fiducials[:, None] - organ.vertices[None], axis=2), axis=1)
    assert np.all(nearest < 0.01), nearest


def test_phantom_fiducials_are_spread_out_and_far_from_coplanar(phantom: Case) -> None:
    fiducials = phantom.fiducials.points_lps
    spread = np.linalg.svd(fiducials - fiducials.mean(axis=0), compute_uv=False)
    assert spread[-1] > 30.0, spread  # mm: the least spread direction is still wide
    pairwise = np.linalg.norm(fiducials[:, None] - fiducials[None], axis=2)
    assert np.min(pairwise[np.triu_indices(len(fiducials), 1)]) > 20.0


# --- markups -------------------------------------------------------------------------------


def test_markups_json_reader_reads_slicer_point_list_in_lps() -> None:
    markups = read_markups(shared_data("scikit-surgerycore/tests/data/F_5.json"))
    assert len(markups) == 20  # ids 1-15 and 17-21: point 16 was deleted in Slicer
    assert markups.labels[0] == "F_5-1" and markups.labels[-1] == "F_5-21"
    assert markups.points_lps[0] == pytest.approx(
        [-104.41897583007813, -62.68093490600586, -261.3321228027344]
    )


def test_legacy_fcsv_without_coordinate_system_line_is_read_as_ras() -> None:
    markups = read_markups(shared_data("PlusLibData/TestImages/FcsvReaderTest1.fcsv"))
    assert len(markups) == 18  # "# columns = label,x,y,z,sel,vis": a Slicer 3 fiducial list
    assert markups.labels[:2] == ("L-P", "L-P1")
    assert markups.points_lps[0] == pytest.approx([209.934, 223.544, 77.0])  # RAS -> LPS


def test_ras_to_lps_negates_x_and_y_of_a_known_point() -> None:
    assert ras_to_lps([10.0, -20.0, 30.0]).tolist() == [-10.0, 20.0, 30.0]
    assert ras_to_lps([[1.0, 2.0, 3.0]]).tolist() == [[-1.0, -2.0, 3.0]]


@pytest.mark.parametrize(
    ("system", "expected"),
    [("RAS", [-10.0, 20.0, 30.0]), ("LPS", [10.0, -20.0, 30.0])],
)
def test_markups_json_is_converted_from_its_own_coordinate_system_to_lps(
    tmp_path: Path, system: str, expected: list[float]
) -> None:
    path = tmp_path / "p.mrk.json"
    path.write_text(
        json.dumps(
            {
                "markups": [
                    {
                        "type": "Fiducial",
                        "coordinateSystem": system,
                        "controlPoints": [{"label": "A", "position": [10.0, -20.0, 30.0]}],
                    }
                ]
            }
        )
    )
    assert read_markups(path).points_lps.tolist() == [expected]


FCSV_SLICER4 = """# Markups fiducial file version = 4.11
# CoordinateSystem = {system}
# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID
vtkMRMLMarkupsFiducialNode_0,10,-20,30,0,0,0,1,1,1,0,"A, with comma",,
"""


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("0", [-10.0, 20.0, 30.0]),
        ("RAS", [-10.0, 20.0, 30.0]),
        ("1", [10.0, -20.0, 30.0]),
        ("LPS", [10.0, -20.0, 30.0]),
    ],
)
def test_fcsv_coordinate_system_header_variants_are_honoured(
    tmp_path: Path, system: str, expected: list[float]
) -> None:
    path = tmp_path / "p.fcsv"
    path.write_text(FCSV_SLICER4.format(system=system))
    markups = read_markups(path)
    assert markups.labels == ("A, with comma",)
    assert markups.points_lps.tolist() == [expected]


def test_case_in_ras_is_converted_to_lps_on_read(tmp_path: Path, phantom: Case) -> None:
    root = _copy_phantom(tmp_path)
    _edit(root / "case.toml", 'coordinate_system = "LPS"', 'coordinate_system = "RAS"')
    ras_case = load_case(root)
    for lps, ras in zip(phantom.structures, ras_case.structures, strict=True):
        assert np.array_equal(ras.mesh.vertices, ras_to_lps(lps.mesh.vertices))
        assert ras.mesh.volume == pytest.approx(lps.mesh.volume)  # a rotation: still outward
    # Markups keep their own coordinate system (LPS here), whatever case.toml says.
    assert np.array_equal(ras_case.fiducials.points_lps, phantom.fiducials.points_lps)


# --- meshes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "sofa_liver.obj",
        "sofa_liver-smooth.obj",
        "sofa_liver2.obj",
        "sofa_Bunny.stl",
        "sofa_Armadillo_verysimplified.obj",
    ],
)
def test_real_meshes_read_as_closed_surfaces(name: str) -> None:
    # The Armadillo OBJ stores each vertex once per face (with normals): merged on read.
    mesh = read_mesh(shared_data(f"meshes/{name}"), closed=True)
    assert mesh.is_watertight and mesh.volume > 0


def test_real_liver_scaled_to_mm_loads_as_the_organ_of_a_case(tmp_path: Path) -> None:
    liver = read_mesh(shared_data("meshes/sofa_liver-smooth.obj"), closed=True)
    liver.apply_scale(190.0 / liver.extents.max())  # arbitrary units -> a 190 mm liver
    (tmp_path / "models").mkdir()
    liver.export(tmp_path / "models" / "liver.stl")  # binary STL: float32, unshared vertices
    (tmp_path / "case.toml").write_text(
        'name = "sofa"\nunits = "mm"\ncoordinate_system = "LPS"\n\n'
        '[[structures]]\nname = "liver"\nrole = "organ"\nmesh = "liver.stl"\n'
    )
    case = load_case(tmp_path)
    organ = case.structure("liver").mesh
    assert len(organ.faces) == 4384 and organ.is_watertight
    assert organ.extents.max() == pytest.approx(190.0, abs=1e-3)
    assert len(case.fiducials) == 0 and len(case.targets) == 0


@pytest.mark.parametrize("suffix", [".ply", ".stl", ".obj", ".glb"])
def test_each_mesh_format_reads_to_the_same_closed_surface(
    tmp_path: Path, phantom: Case, suffix: str
) -> None:
    tumor = phantom.structure("tumor").mesh
    path = tmp_path / f"tumor{suffix}"
    tumor.export(path)
    mesh = read_mesh(path, closed=True)
    assert len(mesh.faces) == len(tumor.faces)
    assert mesh.volume == pytest.approx(tumor.volume, rel=1e-6)


def test_open_vessel_mesh_is_accepted(tmp_path: Path) -> None:
    root = _copy_phantom(tmp_path)
    _write_broken_mesh(root / "models" / "portal_vein.ply", lambda v, f: (v, f[:-16]))  # no cap
    vessel = load_case(root).structure("portal_vein").mesh
    assert not vessel.is_watertight


# --- refusals ------------------------------------------------------------------------------


def _write_broken_mesh(
    path: Path,
    breaker: Callable[
        [npt.NDArray[np.float64], npt.NDArray[np.int64]],
        tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]],
    ],
) -> None:
    mesh = trimesh.load_mesh(path, process=False)
    vertices, faces = breaker(np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64))
    path.write_bytes(ply_ascii(vertices, faces, comment="broken"))


def _cut_lines(path: Path, *, keep: int) -> None:
    """Keep the first ``keep`` lines of a text file (negative: drop that many at the end)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep]))


def _miscount_vertices(path: Path, *, extra: int) -> None:
    """Make the PLY header declare ``extra`` more vertices than the file holds."""
    text = path.read_text()
    n = int(text.split("element vertex ")[1].split()[0])
    path.write_text(text.replace(f"element vertex {n}\n", f"element vertex {n + extra}\n", 1))


def _markup_edit(key: str, value: object) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / "fiducials.mrk.json"
        document = json.loads(path.read_text())
        if key in ("position", "positionStatus"):
            document["markups"][0]["controlPoints"][2][key] = value
        else:
            document["markups"][0][key] = value
        path.write_text(json.dumps(document))

    return edit


def _fin(v: npt.NDArray[np.float64], f: npt.NDArray[np.int64]) -> tuple:
    """A third triangle on the first face's first edge: that edge is shared by three."""
    a, b = f[0, 0], f[0, 1]
    apex = v[[a, b]].mean(axis=0) + (0.0, 0.0, 5.0)
    return np.vstack([v, apex]), np.vstack([f, [b, a, len(v)]])


def _flip_one(v: npt.NDArray[np.float64], f: npt.NDArray[np.int64]) -> tuple:
    f = f.copy()
    f[0] = f[0, ::-1]
    return v, f


def _fiducials_as_fcsv_in_ijk(root: Path) -> None:
    (root / "fiducials.fcsv").write_text(FCSV_SLICER4.format(system="2"))  # 2: IJK in Slicer
    _edit(root / "case.toml", "fiducials.mrk.json", "fiducials.fcsv")


BILE_DUCT_CRITICAL = 'mesh = "bile_duct.ply"\ncolour = "#2fa84f"\nopacity = 1.0\ncritical = true'

REFUSALS: list[tuple[str, Callable[[Path], object], str, str]] = [
    # id, how the phantom copy is broken, the file the message names, what it says
    ("missing case.toml", lambda r: (r / "case.toml").unlink(), "case.toml", "missing"),
    (
        "not TOML",
        lambda r: (r / "case.toml").write_text("name = \n"),
        "case.toml",
        "not valid TOML",
    ),
    (
        "unknown top-level key",
        lambda r: _edit(r / "case.toml", 'units = "mm"', 'units = "mm"\nscale = 2'),
        "case.toml",
        "unknown key 'scale'",
    ),
    (
        "unknown structure key",
        lambda r: _edit(r / "case.toml", 'colour = "#b86b53"', 'color = "#b86b53"'),
        "case.toml",
        "structures[0] ('liver'): unknown key 'color' (did you mean 'colour'?)",
    ),
    (
        "missing required key",
        lambda r: _edit(r / "case.toml", 'mesh = "tumor.ply"\n', ""),
        "case.toml",
        "structures[1] ('tumor'): 'mesh' (a string) is required",
    ),
    (
        "units not mm",
        lambda r: _edit(r / "case.toml", 'units = "mm"', 'units = "cm"'),
        "case.toml",
        "units must be \"mm\", got 'cm'",
    ),
    (
        "unknown case coordinate system",
        lambda r: _edit(r / "case.toml", '"LPS"', '"IJK"'),
        "case.toml",
        'coordinate_system must be "LPS" or "RAS", got \'IJK\'',
    ),
    (
        "unknown role",
        lambda r: _edit(r / "case.toml", 'role = "tumor"', 'role = "tumour"'),
        "case.toml",
        "unknown role 'tumour' (did you mean 'tumor'?)",
    ),
    (
        "duplicate structure names",
        lambda r: _edit(r / "case.toml", 'name = "tumor"', 'name = "liver"'),
        "case.toml",
        "structures[1]: duplicate structure name 'liver'",
    ),
    (
        "bad colour",
        lambda r: _edit(r / "case.toml", '"#f2c12e"', "[255, 0, 0]"),
        "case.toml",
        "colour must be",
    ),
    (
        "opacity out of range",
        lambda r: _edit(r / "case.toml", "opacity = 0.35", "opacity = 35"),
        "case.toml",
        "opacity must be a number in 0..1, got 35",
    ),
    (
        "critical role not critical",
        lambda r: _edit(r / "case.toml", BILE_DUCT_CRITICAL, BILE_DUCT_CRITICAL[:-4] + "false"),
        "case.toml",
        "role 'critical' with critical = false",
    ),
    (
        "mesh outside models/",
        lambda r: _edit(r / "case.toml", 'mesh = "tumor.ply"', 'mesh = "../case.toml"'),
        "case.toml",
        "mesh '../case.toml' is outside models/",
    ),
    (
        "missing mesh file",
        lambda r: (r / "models" / "tumor.ply").unlink(),
        "models/tumor.ply",
        "no such mesh file",
    ),
    (
        "mesh not a PLY file",
        lambda r: (r / "models" / "tumor.ply").write_bytes(b"not a ply file\n"),
        "models/tumor.ply",
        "not a PLY file",
    ),
    (
        "mesh trimesh cannot read",
        lambda r: _edit(r / "models" / "tumor.ply", "end_header\n", "end_header\nx"),
        "models/tumor.ply",
        "trimesh cannot read it",
    ),
    (
        # An open vessel loses its last triangles silently: trimesh reads what is there.
        "vessel mesh cut short in its faces",
        lambda r: _cut_lines(r / "models" / "portal_vein.ply", keep=-16),
        "models/portal_vein.ply",
        "the data end after",
    ),
    (
        "vessel header declares more vertices than the file has",
        lambda r: _miscount_vertices(r / "models" / "portal_vein.ply", extra=40),
        "models/portal_vein.ply",
        "has 4 values, its properties need 3: the header's counts",
    ),
    (
        "vessel header declares fewer vertices than the file has",
        lambda r: _miscount_vertices(r / "models" / "portal_vein.ply", extra=-40),
        "models/portal_vein.ply",
        "not a count: the header's counts do not match the data",
    ),
    (
        "organ coordinates scaled by 1e300",
        lambda r: _write_broken_mesh(r / "models" / "liver.ply", lambda v, f: (v * 1e300, f)),
        "models/liver.ply",
        "mm from the origin, beyond the 1e+06 mm limit",
    ),
    (
        "markups point a kilometre and more away",
        _markup_edit("position", [1.0, 2e6, 3.0]),
        "fiducials.mrk.json",
        "point 'F-3' is beyond 1e+06 mm from the origin",
    ),
    (
        "empty mesh",
        lambda r: _write_broken_mesh(r / "models" / "tumor.ply", lambda v, f: (v, f[:0])),
        "models/tumor.ply",
        "empty mesh: no triangles",
    ),
    (
        "organ not watertight",
        lambda r: _write_broken_mesh(r / "models" / "liver.ply", lambda v, f: (v, f[1:])),
        "models/liver.ply",
        "not watertight: 3 open edges",
    ),
    (
        "tumor non-manifold",
        lambda r: _write_broken_mesh(r / "models" / "tumor.ply", _fin),
        "models/tumor.ply",
        "non-manifold: 1 edge shared by more than 2 triangles",
    ),
    (
        "tumor inconsistently wound",
        lambda r: _write_broken_mesh(r / "models" / "tumor.ply", _flip_one),
        "models/tumor.ply",
        "inconsistent winding",
    ),
    (
        "tumor inside out",
        lambda r: _write_broken_mesh(r / "models" / "tumor.ply", lambda v, f: (v, f[:, ::-1])),
        "models/tumor.ply",
        "inside out",
    ),
    (
        "missing markups file",
        lambda r: (r / "targets.mrk.json").unlink(),
        "targets.mrk.json",
        "no such markups file",
    ),
    (
        "markups in an unknown coordinate system",
        _markup_edit("coordinateSystem", "IJK"),
        "fiducials.mrk.json",
        "unknown coordinateSystem 'IJK': expected LPS or RAS",
    ),
    (
        "markups units not mm",
        _markup_edit("coordinateUnits", "um"),
        "fiducials.mrk.json",
        "coordinateUnits 'um': only mm is accepted",
    ),
    (
        "markups NaN point",
        _markup_edit("position", [1.0, float("nan"), 2.0]),
        "fiducials.mrk.json",
        "point 'F-3' is not finite",
    ),
    (
        "markups point not placed",
        _markup_edit("positionStatus", "undefined"),
        "fiducials.mrk.json",
        "point 'F-3' has positionStatus 'undefined'",
    ),
    (
        "fcsv in an unknown coordinate system",
        _fiducials_as_fcsv_in_ijk,
        "fiducials.fcsv",
        "unknown CoordinateSystem '2'",
    ),
]


@pytest.mark.parametrize(
    ("breaker", "file", "problem"),
    [pytest.param(b, f, p, id=i) for i, b, f, p in REFUSALS],
)
def test_broken_case_is_refused_in_one_line_naming_the_file_and_the_problem(
    tmp_path: Path, breaker: Callable[[Path], object], file: str, problem: str
) -> None:
    root = _copy_phantom(tmp_path)
    breaker(root)
    with pytest.raises(CaseError) as caught:
        load_case(root)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{root / file}: "), message
    assert problem in message, message


def test_missing_case_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CaseError, match="missing: no folder"):
        load_case(tmp_path / "nowhere")


# --- the command line ----------------------------------------------------------------------


def test_case_phantom_command_writes_a_case_that_case_check_summarises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "phantom"
    assert cli.main(["case", "phantom", str(out)]) == 0
    assert cli.main(["case", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    for expected in ("liver", "5120", "bile_duct", "F-8", "tumor_centre", "bounding box"):
        assert expected in printed
    # A second write into the now non-empty folder needs --force.
    assert cli.main(["case", "phantom", str(out)]) == cli.EXIT_BAD_INPUT
    assert "--force" in capsys.readouterr().err
    assert cli.main(["case", "phantom", str(out), "--force"]) == 0


def test_case_check_prints_one_line_for_a_broken_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_phantom(tmp_path)
    (root / "models" / "tumor.ply").unlink()
    assert cli.main(["case", "check", str(root)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == f"ornav: {root / 'models' / 'tumor.ply'}: no such mesh file\n"


# --- PLY files against their own headers ----------------------------------------------------


def _phantom_ply(name: str, encoding: str) -> bytes:
    """A phantom mesh as PLY bytes: the shipped ASCII file, or trimesh's binary export."""
    path = SHIPPED_PHANTOM_DIR / "models" / f"{name}.ply"
    if encoding == "ascii":
        return path.read_bytes()
    data: bytes = trimesh.load(path, process=False).export(file_type="ply", encoding="binary")
    return data


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
def test_a_consistent_ply_passes_check_ply_with_its_declared_counts(
    tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "liver.ply"
    path.write_bytes(_phantom_ply("liver", encoding))
    header = check_ply(path)
    assert (header.count("vertex"), header.count("face")) == (2562, 5120)
    assert len(read_mesh(path).vertices) == 2562


def test_a_binary_ply_with_triangles_and_quads_is_walked_row_by_row(tmp_path: Path) -> None:
    """Faces of differing corner counts: the rows are stepped over one by one, exactly."""
    vertices = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], "<f4")
    faces = [b"\x04" + np.array([0, 1, 2, 3], "<i4").tobytes()]
    faces += [b"\x03" + np.array(f, "<i4").tobytes() for f in ([0, 1, 4], [1, 2, 4])]
    header = (
        b"ply\nformat binary_little_endian 1.0\nelement vertex 5\nproperty float x\n"
        b"property float y\nproperty float z\nelement face 3\n"
        b"property list uchar int vertex_indices\nend_header\n"
    )
    path = tmp_path / "mixed.ply"
    path.write_bytes(header + vertices.tobytes() + b"".join(faces))
    assert check_ply(path).count("face") == 3
    path.write_bytes(header + vertices.tobytes() + b"".join(faces)[:-1])
    with pytest.raises(CaseError, match="the data end within face row 3 of the 3"):
        check_ply(path)


@given(data=st.data())
@settings(max_examples=60)
def test_any_cut_of_a_binary_ply_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    whole = _phantom_ply("tumor", "binary")
    body_start = whole.index(b"end_header\n") + len(b"end_header\n")
    cut = data.draw(st.integers(body_start, len(whole) - 1), label="cut")
    path = tmp_path_factory.mktemp("cut") / "tumor.ply"
    path.write_bytes(whole[:cut])
    with pytest.raises(CaseError, match="the data end"):
        check_ply(path)


@given(data=st.data())
@settings(max_examples=60)
def test_any_cut_of_an_ascii_ply_before_its_last_value_is_refused(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """A cut inside the last number leaves a well-formed file: that one cannot be seen."""
    whole = _phantom_ply("tumor", "ascii")
    body_start = whole.index(b"end_header\n") + len(b"end_header\n")
    last_value = whole.rstrip().rindex(b" ") + 1
    cut = data.draw(st.integers(body_start, last_value - 1), label="cut")
    path = tmp_path_factory.mktemp("cut") / "tumor.ply"
    path.write_bytes(whole[:cut])
    with pytest.raises(CaseError, match="the data end|values, its properties need"):
        check_ply(path)


@pytest.mark.parametrize("encoding", ["ascii", "binary"])
@pytest.mark.parametrize("extra", [-1, 1, 100])
def test_a_ply_header_that_miscounts_its_vertices_is_refused(
    tmp_path: Path, encoding: str, extra: int
) -> None:
    data = _phantom_ply("tumor", encoding)
    n = int(data.split(b"element vertex ")[1].split()[0])
    path = tmp_path / "tumor.ply"
    path.write_bytes(data.replace(b"element vertex %d\n" % n, b"element vertex %d\n" % (n + extra)))
    with pytest.raises(CaseError, match="header's counts") as caught:
        read_mesh(path)
    assert str(caught.value).startswith(f"{path}: ")
