"""Camera marker tracking with OpenCV ArUco: rigid bodies of square tags, and ChArUco boards.

A rigid body is a set of square ArUco tags at known places on one rigid object (the
patient reference, a pointer, a board). ``ArucoTracker.track`` finds the tags in one grey
image and returns, per body, its pose in the ``camera`` frame (OpenCV's: x right, y down,
z forward, mm), found by PnP over every corner of every visible tag of that body at once.

Definition file format (scikit-surgery's, as ``scikit-surgeryarucotracker`` and
``scikit-surgerybard`` ship ``reference.txt`` and ``pointer.txt``). One tag per line,
whitespace separated (the shipped files use tabs), millimetres in the body's own frame::

    id  cx cy cz  x0 y0 z0  x1 y1 z1  x2 y2 z2  x3 y3 z3      16 numbers
    id            x0 y0 z0  x1 y1 z1  x2 y2 z2  x3 y3 z3      or 13: no centre

- ``id``: the tag's id in the body's ArUco dictionary (an integer).
- ``cx cy cz``: the tag centre. Redundant, and ignored by scikit-surgery; ornav checks it
  is the mean of the corners (within 0.01 mm plus 0.1 % of the side), which catches a
  shifted column.
- ``x0 .. z3``: the four outer corners of the tag's black border, in the order OpenCV's
  detector reports them: top-left, top-right, bottom-right, bottom-left of the tag as
  printed (clockwise when looking at its printed face). Each tag must be a square
  (sides and diagonals within 1 %, corners in one plane): a tag with two corners swapped
  is refused instead of silently bending the fit.
- Blank lines and lines starting with ``#`` are skipped. Any other bad line is one
  ``DefinitionError`` naming the file and line, e.g.
  ``reference.txt:3: expected 13 or 16 numbers (id, [centre,] 4 corners), got 15``.

Worked example, ``reference.txt`` line 1: ``860 7.25 7.25 0 0 0 0 14.5 0 0 14.5 14.5 0 0
14.5 0`` is tag 860, a 14.5 mm square whose top-left corner is the body origin. The
shipped reference (12 tags, 3 by 4, 17.5 mm pitch) and pointer (6 tags) lie in the plane
z = 0 with x to the right and y down the printed pattern, so z points into the board,
away from a camera that sees it. On the first frame of ``multipattern.avi`` with the
scikit-surgerybard intrinsics ornav finds the reference 248 mm in front of the camera.
With corner refinement off, as scikit-surgery runs it, ornav reproduces scikit-surgery's
regression pose to 0.59 mm and 0.17 degrees (``tests/unit/test_aruco.py``); its default
sub-pixel corners move it by 2.4 mm, mostly in depth, and 1.0 degree.

One difference from scikit-surgery: for a single-tag body it ignores the file's corners
and calls ``estimatePoseSingleMarkers``, whose corner convention has y up and z towards
the camera. ornav always uses the file's corners, so for ``tag_0.txt`` ornav's pose is
scikit-surgery's turned 180 degrees about x (``T_ornav = T_sksurgery @ diag(1, -1, -1, 1)``).

The dictionary is per body (scikit-surgery's default for rigid bodies,
``DICT_ARUCO_ORIGINAL``, is what ``multipattern.avi`` shows); bodies with different
dictionaries share one detection pass (``detectMarkersMultiDict``).

ChArUco boards (a ``.toml`` body file, see ``RigidBodyDefinition.from_file``): the board's
markers are the body's tags (for the quality figure), and the pose comes from the
chessboard corners OpenCV interpolates between them (saddle points, refined to sub-pixel,
more precise than marker corners), or from the marker corners when fewer than
``MIN_CHARUCO_CORNERS`` corners, or only collinear ones, are found. The board frame is
OpenCV's: origin at the board's top-left outer corner, x along the squares_x direction,
y along squares_y, z into the board (the same sense as the tag files above).

Pose and figures of merit (``BodyPose``):

- PnP: coplanar points (one tag, or a flat body) by IPPE (T. Collins and A. Bartoli,
  "Infinitesimal plane-based pose estimation", IJCV 109(3):252-286, 2014), which picks
  the better of the two planar solutions; other point sets by SQPnP (G. Terzakis and M.
  Lourakis, "A consistently fast and globally optimal solution to the perspective-n-point
  problem", ECCV 2020). Both are then refined by Levenberg-Marquardt on the reprojection
  error (``solvePnPRefineLM``), so the result is the least-squares pose whichever start
  was used. Lens distortion is handled by OpenCV (points are undistorted internally).
- Outlier tags: when the RMS reprojection error exceeds ``max_reprojection_rms_px`` and
  more than one tag was used, the tag with the largest error is dropped and the fit
  repeated, until the RMS is under the limit or one tag is left.
- ``status``: OK; OUT_OF_VIEW when no tag of the body is seen; INVALID when the fit fails,
  puts a point behind the camera, or stays above ``max_reprojection_rms_px``. A non-OK
  pose carries the identity, which must not be drawn.
- ``tags_seen_fraction``: tags of the body detected in this image / tags defined (before
  outlier rejection; ``tag_ids_used`` lists those the pose used).
- ``reprojection_rms_px``: RMS over the used points of the distance between detected and
  reprojected image points, px.
- ``fit_error_mm``: that RMS back-projected at the body's depth: ``rms_px * mean depth of
  the used points (mm) / mean focal length (px)``: how far, across the line of sight,
  the model points sit from the rays through their detections. It says nothing about
  the error along the line of sight, which for one camera is several times larger (the
  depth of a 50 mm body at 250 mm depends on its apparent size). It is what the
  ``TrackerFrame.fit_errors_mm`` field carries for camera trackers.

Detector settings, measured (``bench/aruco.py``; numbers on 640x480 frames, one core):

- The detector searches only the ids the bodies use: a dictionary restricted to them
  (same codewords, same correction bits) gives identical detections (a test checks),
  and is 5.8 times faster on ``multipattern.avi`` than the full ``DICT_ARUCO_ORIGINAL``
  (1024 ids; detection 28.6 ms against 4.9 ms), whose identification of every candidate
  against every id and rotation dominates the frame time; 3.2 times on ``12markers.avi``
  (``DICT_6X6_250``). An out-of-set tag cannot be mistaken for an in-set one: the subset's
  codewords are at least as far apart as the full dictionary's, and the correction
  allowance is the same.
- Corners: ``CORNER_REFINE_SUBPIX`` with a window of 0.8 ArUco module (cell) sizes. On
  rendered reference bodies at 200-450 mm (blur 0.6 px, noise 2 grey levels, 40 poses)
  the median translation error was 0.73 mm against 1.34 mm unrefined, 1.70 mm with
  ``CONTOUR`` and 0.87 mm with OpenCV's default 0.3-module window; on
  ``multipattern.avi`` it gave the steadiest pointer-in-reference pose. AprilTag
  refinement was more accurate on renders (0.37 mm) but 3 times slower and lost tags.
- Everything else is OpenCV's default (three adaptive-threshold windows, 3 to 23 px).

Everything here is pure (images in, poses out) except the two file readers at the end,
``RigidBodyDefinition.from_file`` and ``read_camera_intrinsics``.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt

from calibration.files import (
    OPENCV_DIST_LENGTHS,
    OPENCV_SUFFIXES,
    CalibrationFileError,
    read_calibration,
    read_opencv_camera,
)
from nav.arrays import FloatArray
from nav.frames import is_valid_tool_name
from nav.messages import ToolStatus
from nav.transforms import Mat4

CornerRefinement: TypeAlias = Literal["none", "subpix", "contour", "apriltag"]

DEFAULT_DICTIONARY: Final = "DICT_ARUCO_ORIGINAL"
"""scikit-surgery's default for rigid bodies; the tags of ``multipattern.avi``."""

DEFAULT_MAX_REPROJECTION_RMS_PX: Final = 3.0
"""Above this a fit is refused (after dropping outlier tags). On ``multipattern.avi`` with
its own calibration the RMS is 0.9 to 1.5 px; a misidentified tag gives tens of px."""

MIN_CHARUCO_CORNERS: Final = 4
"""The fewest non-collinear ChArUco corners a board pose is computed from."""

SUBPIX_RELATIVE_WINDOW: Final = 0.8
"""``relativeCornerRefinmentWinSize``: the sub-pixel window in ArUco module sizes (see above)."""

_SQUARE_TOLERANCE: Final = 0.01  # relative, sides and diagonals of a tag
_CENTRE_TOLERANCE_MM: Final = 0.01
_PLANAR_TOLERANCE: Final = 1e-6  # relative smallest singular value of centred points
_REFINEMENT: Final[Mapping[str, int]] = {
    "none": cv2.aruco.CORNER_REFINE_NONE,
    "subpix": cv2.aruco.CORNER_REFINE_SUBPIX,
    "contour": cv2.aruco.CORNER_REFINE_CONTOUR,
    "apriltag": cv2.aruco.CORNER_REFINE_APRILTAG,
}
_LM_CRITERIA: Final = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 20, 1e-10)


class DefinitionError(ValueError):
    """A rigid-body definition that cannot be used; one line naming the file and line."""


# --- dictionaries --------------------------------------------------------------------


def dictionary_size(name: str) -> int:
    """The number of ids in the predefined ArUco dictionary ``name``; ValueError if unknown."""
    return int(_predefined(name).bytesList.shape[0])


def _predefined(name: str) -> Any:
    dictionary_id = getattr(cv2.aruco, name, None) if name.startswith("DICT_") else None
    if not isinstance(dictionary_id, int):
        raise ValueError(f"unknown ArUco dictionary {name!r} (e.g. {DEFAULT_DICTIONARY!r})")
    return cv2.aruco.getPredefinedDictionary(dictionary_id)


# --- body definitions ----------------------------------------------------------------


@dataclass(frozen=True)
class CharucoSpec:
    """A ChArUco board: ``squares_x`` by ``squares_y`` squares, mm, markers from ``first_id``."""

    squares_x: int
    squares_y: int
    square_mm: float
    marker_mm: float
    first_id: int = 0
    legacy_pattern: bool = False

    def __post_init__(self) -> None:
        if min(self.squares_x, self.squares_y) < 2:
            raise ValueError(
                f"a ChArUco board needs at least 2x2 squares, got {self.squares_x}x{self.squares_y}"
            )
        if not (
            math.isfinite(self.square_mm)
            and math.isfinite(self.marker_mm)
            and 0 < self.marker_mm < self.square_mm
        ):
            raise ValueError(
                f"need 0 < marker_mm < square_mm, got marker {self.marker_mm!r} mm, "
                f"square {self.square_mm!r} mm"
            )
        if self.first_id < 0:
            raise ValueError(f"first_id must be >= 0, got {self.first_id}")

    @property
    def n_markers(self) -> int:
        return self.squares_x * self.squares_y // 2

    def board(self, dictionary: str) -> Any:
        """The ``cv2.aruco.CharucoBoard`` (mm) with this spec's marker ids."""
        board = cv2.aruco.CharucoBoard(
            (self.squares_x, self.squares_y),
            float(self.square_mm),
            float(self.marker_mm),
            _predefined(dictionary),
            np.arange(self.first_id, self.first_id + self.n_markers, dtype=np.int32),
        )
        board.setLegacyPattern(bool(self.legacy_pattern))
        return board


def _tag_problem(corners: FloatArray) -> str | None:
    """Why four corners (4, 3) mm are not a square tag in detection order, or None."""
    if not np.all(np.isfinite(corners)):
        return "holds a non-finite number"
    sides = np.linalg.norm(corners - np.roll(corners, -1, axis=0), axis=1)
    diagonals = np.linalg.norm(corners[:2] - corners[2:], axis=1)
    side = float(sides.mean())
    if side <= 0:
        return "has zero size"
    square = np.concatenate([sides, diagonals / math.sqrt(2.0)])
    if np.max(np.abs(square - side)) > _SQUARE_TOLERANCE * side:
        shown = ", ".join(f"{s:g}" for s in sides)
        return (
            f"is not a square: sides {shown} mm, diagonals "
            f"{diagonals[0]:g}, {diagonals[1]:g} mm (corners out of order?)"
        )
    normal = np.cross(corners[1] - corners[0], corners[3] - corners[0])
    normal /= np.linalg.norm(normal)
    off_plane = np.abs((corners - corners.mean(axis=0)) @ normal)
    if off_plane.max() > _SQUARE_TOLERANCE * side:
        return f"corners are not in one plane ({off_plane.max():.3g} mm off)"
    return None


@dataclass(frozen=True, eq=False)
class RigidBodyDefinition:
    """One tracked body: its tags' ids and corners, and its ArUco dictionary.

    ``p_corners_in_body`` (M, 4, 3) mm: tag ``tag_ids[i]``'s outer corners in detection
    order (top-left, top-right, bottom-right, bottom-left as printed). ``charuco`` is set
    for a ChArUco board (its markers are then the tags). ``source`` names where the
    definition came from, for messages. Raises ValueError for a bad name, dictionary, id,
    or a tag that is not a square.
    """

    name: str
    tag_ids: tuple[int, ...]
    p_corners_in_body: FloatArray = field(repr=False)
    dictionary: str = DEFAULT_DICTIONARY
    charuco: CharucoSpec | None = None
    source: str = "<memory>"

    def __post_init__(self) -> None:
        where = f"{self.source}: body {self.name!r}"
        if not is_valid_tool_name(self.name):
            raise ValueError(
                f"{where}: a body name is a tool name (lowercase letters, digits, _; "
                "a letter first; at most 32; not ending in _tip)"
            )
        size = dictionary_size(self.dictionary)
        corners = np.array(self.p_corners_in_body, dtype=np.float64)
        if corners.ndim != 3 or corners.shape[1:] != (4, 3) or len(corners) != len(self.tag_ids):
            raise ValueError(
                f"{where}: p_corners_in_body must be ({len(self.tag_ids)}, 4, 3), "
                f"got {corners.shape}"
            )
        if not self.tag_ids:
            raise ValueError(f"{where}: no tags")
        seen: set[int] = set()
        for tag_id, tag in zip(self.tag_ids, corners, strict=True):
            if not 0 <= tag_id < size:
                raise ValueError(
                    f"{where}: tag id {tag_id} is not in {self.dictionary} (ids 0..{size - 1})"
                )
            if tag_id in seen:
                raise ValueError(f"{where}: tag {tag_id} is defined twice")
            seen.add(tag_id)
            if (problem := _tag_problem(tag)) is not None:
                raise ValueError(f"{where}: tag {tag_id} {problem}")
        corners.flags.writeable = False
        object.__setattr__(self, "p_corners_in_body", corners)

    @property
    def n_tags(self) -> int:
        return len(self.tag_ids)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        name: str,
        dictionary: str = DEFAULT_DICTIONARY,
        source: str = "<text>",
    ) -> RigidBodyDefinition:
        """A body from scikit-surgery's tag text (module docstring); DefinitionError if bad."""
        try:
            size = dictionary_size(dictionary)
        except ValueError as error:
            raise DefinitionError(f"{source}: {error}") from None
        ids: list[int] = []
        tags: list[FloatArray] = []
        first_line: dict[int, int] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            tokens = line.split()
            values: list[float] = []
            for token in tokens:
                try:
                    values.append(float(token))
                except ValueError:
                    raise DefinitionError(f"{where}: {token[:20]!r} is not a number") from None
            if len(values) not in (13, 16):
                raise DefinitionError(
                    f"{where}: expected 13 or 16 numbers (id, [centre x y z,] then 4 corners "
                    f"x y z), got {len(values)}"
                )
            if not all(math.isfinite(v) for v in values):
                raise DefinitionError(f"{where}: holds a non-finite number")
            if values[0] != int(values[0]) or not 0 <= values[0] < size:
                raise DefinitionError(
                    f"{where}: tag id {tokens[0]} is not an id of {dictionary} (0..{size - 1})"
                )
            tag_id = int(values[0])
            if tag_id in first_line:
                raise DefinitionError(
                    f"{where}: tag {tag_id} is defined twice (first on line {first_line[tag_id]})"
                )
            first_line[tag_id] = number
            corners = np.array(values[-12:], dtype=np.float64).reshape(4, 3)
            if (problem := _tag_problem(corners)) is not None:
                raise DefinitionError(f"{where}: tag {tag_id} {problem}")
            if len(values) == 16:
                centre = np.array(values[1:4])
                off = float(np.linalg.norm(centre - corners.mean(axis=0)))
                side = float(np.linalg.norm(corners[1] - corners[0]))
                if off > _CENTRE_TOLERANCE_MM + 1e-3 * side:
                    mean = ", ".join(f"{c:g}" for c in corners.mean(axis=0))
                    raise DefinitionError(
                        f"{where}: tag {tag_id}: the centre ({', '.join(tokens[1:4])}) is not "
                        f"the mean of its corners ({mean}): columns out of order?"
                    )
            ids.append(tag_id)
            tags.append(corners)
        if not ids:
            raise DefinitionError(f"{source}: no tags (every line is blank or a comment)")
        try:
            return cls(
                name=name,
                tag_ids=tuple(ids),
                p_corners_in_body=np.stack(tags),
                dictionary=dictionary,
                source=source,
            )
        except ValueError as error:
            raise DefinitionError(str(error)) from None

    @classmethod
    def single_tag(
        cls, name: str, tag_id: int, side_mm: float, *, dictionary: str = DEFAULT_DICTIONARY
    ) -> RigidBodyDefinition:
        """One square tag of ``side_mm``, centred on the body origin, x right, y down, z in."""
        h = side_mm / 2.0
        corners = np.array([[[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]]])
        return cls(
            name=name,
            tag_ids=(int(tag_id),),
            p_corners_in_body=corners,
            dictionary=dictionary,
            source=f"<single tag {tag_id}, {side_mm:g} mm>",
        )

    @classmethod
    def from_charuco(
        cls, name: str, spec: CharucoSpec, *, dictionary: str, source: str = "<charuco>"
    ) -> RigidBodyDefinition:
        """A ChArUco board as a body: its markers are the tags (OpenCV's board frame)."""
        board = spec.board(dictionary)
        corners = np.array(board.getObjPoints(), dtype=np.float64).reshape(-1, 4, 3)
        ids = tuple(int(i) for i in np.asarray(board.getIds()).ravel())
        return cls(
            name=name,
            tag_ids=ids,
            p_corners_in_body=corners,
            dictionary=dictionary,
            charuco=spec,
            source=source,
        )

    def to_text(self) -> str:
        """The 16-column scikit-surgery text of the tags (``parse`` reads it back)."""
        lines = [f"# ornav rigid body {self.name!r}, {self.dictionary}: id, centre, 4 corners (mm)"]
        for tag_id, corners in zip(self.tag_ids, self.p_corners_in_body, strict=True):
            numbers = [*corners.mean(axis=0), *corners.ravel()]
            lines.append("\t".join([str(tag_id), *(f"{x:.17g}" for x in numbers)]))
        return "\n".join(lines) + "\n"

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        dictionary: str | None = None,
    ) -> RigidBodyDefinition:
        """Read a body file; the name defaults to the file's stem. DefinitionError if bad.

        ``*.toml``: a ChArUco board, e.g.::

            kind = "charuco"
            dictionary = "DICT_4X4_50"
            squares_x = 5
            squares_y = 7
            square_mm = 30.0
            marker_mm = 22.0
            first_id = 0              # optional: the first marker's id
            legacy_pattern = false    # optional: boards printed by OpenCV < 4.6

        (its dictionary is its own; ``dictionary`` must be None or the same). Anything
        else: scikit-surgery's tag text, in ``dictionary`` (default ``DEFAULT_DICTIONARY``).
        """
        path = Path(path)
        body_name = name if name is not None else path.stem
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DefinitionError(f"{path}: no such body definition file") from None
        except IsADirectoryError:
            raise DefinitionError(f"{path}: is a directory, not a body definition") from None
        except (OSError, UnicodeDecodeError) as error:
            raise DefinitionError(f"{path}: cannot read: {error}") from None
        if path.suffix.lower() == ".toml":
            return cls._from_charuco_toml(text, path, body_name, dictionary)
        return cls.parse(
            text, name=body_name, dictionary=dictionary or DEFAULT_DICTIONARY, source=str(path)
        )

    @classmethod
    def _from_charuco_toml(
        cls, text: str, path: Path, name: str, dictionary: str | None
    ) -> RigidBodyDefinition:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise DefinitionError(f"{path}: not valid TOML: {error}") from None
        kinds: dict[str, type | tuple[type, ...]] = {
            "kind": str,
            "dictionary": str,
            "squares_x": int,
            "squares_y": int,
            "square_mm": (int, float),
            "marker_mm": (int, float),
            "first_id": int,
            "legacy_pattern": bool,
        }
        for key, value in doc.items():
            if key not in kinds:
                raise DefinitionError(f"{path}: key {key!r}: unknown (known: {', '.join(kinds)})")
            bad_bool = isinstance(value, bool) and kinds[key] is not bool
            if bad_bool or not isinstance(value, kinds[key]):
                raise DefinitionError(f"{path}: key {key!r}: wrong type: {value!r}")
        for key in ("kind", "dictionary", "squares_x", "squares_y", "square_mm", "marker_mm"):
            if key not in doc:
                raise DefinitionError(f"{path}: key {key!r}: missing")
        if doc["kind"] != "charuco":
            raise DefinitionError(f"{path}: key 'kind': expected 'charuco', got {doc['kind']!r}")
        if dictionary is not None and dictionary != doc["dictionary"]:
            raise DefinitionError(
                f"{path}: key 'dictionary': the board is {doc['dictionary']}, "
                f"but {dictionary} was asked for"
            )
        try:
            spec = CharucoSpec(
                squares_x=doc["squares_x"],
                squares_y=doc["squares_y"],
                square_mm=float(doc["square_mm"]),
                marker_mm=float(doc["marker_mm"]),
                first_id=doc.get("first_id", 0),
                legacy_pattern=doc.get("legacy_pattern", False),
            )
            return cls.from_charuco(name, spec, dictionary=doc["dictionary"], source=str(path))
        except ValueError as error:
            raise DefinitionError(f"{path}: {error}") from None


# --- tracking ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BodyPose:
    """One body in one image (see the module docstring for each figure's meaning).

    ``T_camera_from_body`` (4, 4) mm; identity unless ``status`` is OK. The error figures
    are NaN when no fit was made; for an INVALID fit they show why it was refused.
    """

    T_camera_from_body: Mat4
    status: ToolStatus
    tags_seen_fraction: float
    reprojection_rms_px: float
    fit_error_mm: float
    tag_ids_used: tuple[int, ...] = ()
    n_points: int = 0


@dataclass(frozen=True, eq=False)
class Detections:
    """Tags found in one image: ``(dictionary, id) -> corners (4, 2) px`` (detection order)."""

    corners_px: Mapping[tuple[str, int], FloatArray]


@dataclass(frozen=True, eq=False)
class _Fit:
    T: Mat4
    rms_px: float
    sq_errors: FloatArray  # (N,) squared reprojection distance per point, px^2
    ok: bool


def _is_planar(points: FloatArray) -> bool:
    centred = points - points.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return bool(s[0] > 0 and s[-1] <= _PLANAR_TOLERANCE * s[0])


def solve_pose(
    p_body: FloatArray,
    uv_px: FloatArray,
    camera_matrix: FloatArray,
    dist_coeffs: FloatArray,
    *,
    planar: bool | None = None,
) -> tuple[Mat4, float, FloatArray] | None:
    """Least-squares ``T_camera_from_body`` from N >= 4 points (N, 3) mm and (N, 2) px.

    IPPE for coplanar points (``planar`` None: decided here), SQPnP otherwise, then
    Levenberg-Marquardt. Returns ``(T, rms_px, squared errors (N,) px^2)``, or None when
    OpenCV finds no solution or the result is not finite.
    """
    obj = np.ascontiguousarray(p_body, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(uv_px, dtype=np.float64).reshape(-1, 1, 2)
    if planar is None:
        planar = _is_planar(obj.reshape(-1, 3))
    flags = cv2.SOLVEPNP_IPPE if planar else cv2.SOLVEPNP_SQPNP
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, img, camera_matrix, dist_coeffs, flags=flags)
        if not ok:
            return None
        rvec, tvec = cv2.solvePnPRefineLM(
            obj, img, camera_matrix, dist_coeffs, rvec, tvec, criteria=_LM_CRITERIA
        )
        projected, _ = cv2.projectPoints(obj, rvec, tvec, camera_matrix, dist_coeffs)
    except cv2.error:
        return None
    sq_errors = np.sum((projected.reshape(-1, 2) - img.reshape(-1, 2)) ** 2, axis=1)
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    if not (np.all(np.isfinite(T)) and np.all(np.isfinite(sq_errors))):
        return None
    return T, float(math.sqrt(sq_errors.mean())), sq_errors


class _Body:
    """A definition compiled for tracking: id lookup, planarity, ChArUco detector."""

    def __init__(
        self,
        definition: RigidBodyDefinition,
        camera_matrix: FloatArray,
        dist_coeffs: FloatArray,
        detector_params: Any,
    ) -> None:
        self.definition = definition
        self.index = {tag_id: i for i, tag_id in enumerate(definition.tag_ids)}
        self.planar = _is_planar(definition.p_corners_in_body.reshape(-1, 3))
        self.charuco: Any = None
        self.board: Any = None
        self.chessboard_corners: FloatArray | None = None
        if definition.charuco is not None:
            board = definition.charuco.board(definition.dictionary)
            params = cv2.aruco.CharucoParameters()
            # With the intrinsics OpenCV places the corners by an approximate board pose
            # (distortion included), not by a local homography, before sub-pixel refinement.
            params.cameraMatrix = camera_matrix
            params.distCoeffs = dist_coeffs
            self.charuco = cv2.aruco.CharucoDetector(board, params, detector_params)
            self.chessboard_corners = np.asarray(board.getChessboardCorners(), dtype=np.float64)
            self.board = board


class ArucoTracker:
    """Finds rigid bodies of ArUco tags in grey images; see the module docstring.

    ``camera_matrix`` (3, 3) px and ``dist_coeffs`` (k,) in OpenCV's order, for the image
    size that ``track`` will see. ``bodies`` need distinct names, and ids not shared by two
    bodies of one dictionary. ``restrict_dictionary=False`` searches the full predefined
    dictionaries (same detections, several times slower: for comparisons only). Raises
    ValueError for bad intrinsics or bodies.
    """

    def __init__(
        self,
        camera_matrix: npt.ArrayLike,
        dist_coeffs: npt.ArrayLike,
        bodies: Sequence[RigidBodyDefinition],
        *,
        max_reprojection_rms_px: float = DEFAULT_MAX_REPROJECTION_RMS_PX,
        corner_refinement: CornerRefinement = "subpix",
        restrict_dictionary: bool = True,
    ) -> None:
        K = np.array(camera_matrix, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)) or not K[0, 0] > 0 or not K[1, 1] > 0:
            raise ValueError("camera_matrix must be a finite (3, 3) matrix with fx, fy > 0")
        dist = np.array(dist_coeffs, dtype=np.float64).ravel()
        if len(dist) not in (0, *OPENCV_DIST_LENGTHS) or not np.all(np.isfinite(dist)):
            raise ValueError(
                f"dist_coeffs must hold 0, {', '.join(map(str, OPENCV_DIST_LENGTHS))} "
                f"finite numbers, got {len(dist)}"
            )
        if not bodies:
            raise ValueError("no bodies to track")
        if not max_reprojection_rms_px > 0:
            raise ValueError(f"max_reprojection_rms_px must be > 0, got {max_reprojection_rms_px}")
        if corner_refinement not in _REFINEMENT:
            raise ValueError(
                f"corner_refinement must be one of {', '.join(_REFINEMENT)}, "
                f"got {corner_refinement!r}"
            )
        self.camera_matrix = K
        self.dist_coeffs = dist if len(dist) else np.zeros(5)
        self.max_reprojection_rms_px = float(max_reprojection_rms_px)
        self._focal_px = float(K[0, 0] + K[1, 1]) / 2.0

        owner: dict[tuple[str, int], str] = {}
        names: set[str] = set()
        for body in bodies:
            if body.name in names:
                raise ValueError(f"two bodies are named {body.name!r}")
            names.add(body.name)
            for tag_id in body.tag_ids:
                key = (body.dictionary, tag_id)
                if key in owner:
                    raise ValueError(
                        f"tag {tag_id} of {body.dictionary} is in both {owner[key]!r} "
                        f"and {body.name!r}"
                    )
                owner[key] = body.name

        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = _REFINEMENT[corner_refinement]
        params.relativeCornerRefinmentWinSize = SUBPIX_RELATIVE_WINDOW
        self._bodies = [_Body(b, K, self.dist_coeffs, params) for b in bodies]

        # One restricted dictionary per dictionary in use (module docstring: speed).
        self._dictionary_names: list[str] = []
        self._dictionary_ids: list[npt.NDArray[np.int64]] = []
        dictionaries = []
        for name in dict.fromkeys(b.dictionary for b in bodies):
            full = _predefined(name)
            if restrict_dictionary:
                ids = np.array(sorted(i for (d, i) in owner if d == name), dtype=np.int64)
                dictionaries.append(
                    cv2.aruco.Dictionary(
                        full.bytesList[ids], full.markerSize, full.maxCorrectionBits
                    )
                )
            else:
                ids = np.arange(full.bytesList.shape[0], dtype=np.int64)
                dictionaries.append(full)
            self._dictionary_names.append(name)
            self._dictionary_ids.append(ids)
        self._detector = cv2.aruco.ArucoDetector(dictionaries[0], params)
        self._detector.setDictionaries(dictionaries)

    @property
    def body_names(self) -> tuple[str, ...]:
        return tuple(b.definition.name for b in self._bodies)

    def detect(self, image: npt.NDArray[np.uint8]) -> Detections:
        """The tags of every body's dictionary in ``image`` ((H, W) grey or (H, W, 3) BGR)."""
        gray = _gray(image)
        corners, ids, _rejected, dict_indices = self._detector.detectMarkersMultiDict(gray)
        found: dict[tuple[str, int], FloatArray] = {}
        if ids is not None:
            for c, index, d in zip(
                corners, np.asarray(ids).ravel(), np.asarray(dict_indices).ravel(), strict=True
            ):
                key = (
                    self._dictionary_names[int(d)],
                    int(self._dictionary_ids[int(d)][int(index)]),
                )
                # Two detections of one id: neither can be trusted over the other.
                if key in found:
                    found[key] = np.full((4, 2), np.nan)
                else:
                    found[key] = np.asarray(c, dtype=np.float64).reshape(4, 2)
        return Detections({k: v for k, v in found.items() if np.all(np.isfinite(v))})

    def estimate(
        self, detections: Detections, image: npt.NDArray[np.uint8] | None = None
    ) -> dict[str, BodyPose]:
        """Each body's pose from ``detections`` (ChArUco bodies also need the grey image)."""
        gray = None if image is None else _gray(image)
        return {b.definition.name: self._estimate_body(b, detections, gray) for b in self._bodies}

    def track(self, image: npt.NDArray[np.uint8]) -> dict[str, BodyPose]:
        """``detect`` then ``estimate``: every body's pose in this image, in definition order."""
        gray = _gray(image)
        return self.estimate(self.detect(gray), gray)

    # ------------------------------------------------------------------------------

    def _estimate_body(
        self, body: _Body, detections: Detections, gray: npt.NDArray[np.uint8] | None
    ) -> BodyPose:
        definition = body.definition
        seen = [
            tag_id
            for tag_id in definition.tag_ids
            if (definition.dictionary, tag_id) in detections.corners_px
        ]
        fraction = len(seen) / definition.n_tags
        if not seen:
            return BodyPose(np.eye(4), ToolStatus.OUT_OF_VIEW, 0.0, math.nan, math.nan)
        if body.charuco is not None and gray is not None:
            charuco = self._charuco_points(body, detections, seen, gray)
            if charuco is not None:
                fit = self._fit(*charuco, planar=True)
                return self._pose(fit, fraction, tuple(seen), len(charuco[0]), charuco[0])
        used = list(seen)
        while True:
            p_body = definition.p_corners_in_body[[body.index[t] for t in used]].reshape(-1, 3)
            uv = np.stack([detections.corners_px[(definition.dictionary, t)] for t in used])
            fit = self._fit(p_body, uv.reshape(-1, 2), planar=True if body.planar else None)
            if fit.ok or len(used) == 1 or not np.isfinite(fit.rms_px):
                return self._pose(fit, fraction, tuple(used), len(p_body), p_body)
            per_tag = fit.sq_errors.reshape(-1, 4).mean(axis=1)
            used.pop(int(np.argmax(per_tag)))

    def _charuco_points(
        self,
        body: _Body,
        detections: Detections,
        seen: list[int],
        gray: npt.NDArray[np.uint8],
    ) -> tuple[FloatArray, FloatArray] | None:
        dictionary = body.definition.dictionary
        corners = tuple(
            detections.corners_px[(dictionary, t)].reshape(1, 4, 2).astype(np.float32) for t in seen
        )
        ids = np.array(seen, dtype=np.int32).reshape(-1, 1)
        try:
            ch_corners, ch_ids, _, _ = body.charuco.detectBoard(
                gray, markerCorners=corners, markerIds=ids
            )
        except cv2.error:
            return None
        if ch_ids is None or len(ch_ids) < MIN_CHARUCO_CORNERS:
            return None
        if body.board.checkCharucoCornersCollinear(ch_ids):
            return None
        assert body.chessboard_corners is not None
        p_body = body.chessboard_corners[np.asarray(ch_ids).ravel()]
        return p_body, np.asarray(ch_corners, dtype=np.float64).reshape(-1, 2)

    def _fit(self, p_body: FloatArray, uv: FloatArray, *, planar: bool | None) -> _Fit:
        solved = solve_pose(p_body, uv, self.camera_matrix, self.dist_coeffs, planar=planar)
        if solved is None:
            return _Fit(np.eye(4), math.nan, np.full(len(p_body), np.nan), False)
        T, rms, sq_errors = solved
        depth = p_body @ T[:3, :3].T + T[:3, 3]
        ok = bool(np.all(depth[:, 2] > 0)) and rms <= self.max_reprojection_rms_px
        return _Fit(T, rms, sq_errors, ok)

    def _pose(
        self,
        fit: _Fit,
        fraction: float,
        used: tuple[int, ...],
        n_points: int,
        p_body: FloatArray,
    ) -> BodyPose:
        if not np.isfinite(fit.rms_px):
            return BodyPose(np.eye(4), ToolStatus.INVALID, fraction, math.nan, math.nan, used)
        mean_depth_mm = float(np.mean(p_body @ fit.T[2, :3] + fit.T[2, 3]))
        fit_error_mm = fit.rms_px * abs(mean_depth_mm) / self._focal_px
        if not fit.ok:
            return BodyPose(
                np.eye(4), ToolStatus.INVALID, fraction, fit.rms_px, fit_error_mm, used, n_points
            )
        return BodyPose(fit.T, ToolStatus.OK, fraction, fit.rms_px, fit_error_mm, used, n_points)


def _gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), dtype=np.uint8)
    raise ValueError(f"expected an (H, W) grey or (H, W, 3) BGR image, got shape {image.shape}")


# --- files ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CameraIntrinsics:
    """K (3, 3) px, distortion (k,) in OpenCV's order, and (width, height) px when known."""

    camera_matrix: FloatArray
    dist_coeffs: FloatArray
    image_size: tuple[int, int] | None
    source: str


def read_camera_intrinsics(path: str | os.PathLike[str]) -> CameraIntrinsics:
    """Camera intrinsics from a calibration file, by suffix.

    - ``.toml``: an ornav calibration file of kind ``camera`` (``calibration.files``).
    - ``.yml``, ``.yaml``, ``.xml``, ``.json``: OpenCV FileStorage (``read_opencv_camera``).
    - anything else: scikit-surgery text: three rows of K, then one row of distortion
      (``calibration.txt`` of scikit-surgeryarucotracker). A file with only the three rows
      named ``<prefix>intrinsics.txt`` takes its distortion from ``<prefix>distortion.txt``
      beside it, as scikit-surgerybard stores a calibration (``calib.intrinsics.txt``).

    Raises CalibrationFileError (one line naming the file, and the row for text files).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        calibration = read_calibration(path)
        if calibration.kind != "camera":
            raise CalibrationFileError(
                f"{path}: key 'kind': expected a camera calibration, got {calibration.kind!r}"
            )
        size = calibration.array("image_size")
        return CameraIntrinsics(
            calibration.array("camera_matrix"),
            calibration.array("dist_coeffs"),
            (int(size[0]), int(size[1])),
            str(path),
        )
    if suffix in OPENCV_SUFFIXES:
        camera = read_opencv_camera(path)
        return CameraIntrinsics(
            camera.camera_matrix, camera.dist_coeffs, camera.image_size, str(path)
        )
    rows = _text_rows(path)
    if len(rows) < 3:
        raise CalibrationFileError(f"{path}: expected 3 rows of the camera matrix, got {len(rows)}")
    for number, row in rows[:3]:
        if len(row) != 3:
            raise CalibrationFileError(
                f"{path}:{number}: a camera matrix row has 3 numbers, got {len(row)}"
            )
    K = np.array([row for _, row in rows[:3]], dtype=np.float64)
    if not np.allclose(K[2], (0.0, 0.0, 1.0)) or not (K[0, 0] > 0 and K[1, 1] > 0):
        raise CalibrationFileError(
            f"{path}: not a camera matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0"
        )
    if len(rows) > 4:
        raise CalibrationFileError(
            f"{path}:{rows[4][0]}: expected 3 rows of K and one of distortion, got more"
        )
    if len(rows) == 4:
        number, dist_row = rows[3]
        where = f"{path}:{number}"
    else:
        sibling = path.with_name(path.name.replace("intrinsics.txt", "distortion.txt"))
        if sibling == path or not sibling.is_file():
            raise CalibrationFileError(
                f"{path}: no distortion row after the camera matrix"
                + ("" if sibling == path else f", and no {sibling.name} beside it")
            )
        distortion_rows = _text_rows(sibling)
        if len(distortion_rows) != 1:
            raise CalibrationFileError(f"{sibling}: expected one row of distortion coefficients")
        number, dist_row = distortion_rows[0]
        where = f"{sibling}:{number}"
    if len(dist_row) not in OPENCV_DIST_LENGTHS:
        raise CalibrationFileError(
            f"{where}: expected {', '.join(map(str, OPENCV_DIST_LENGTHS))} distortion "
            f"coefficients, got {len(dist_row)}"
        )
    return CameraIntrinsics(K, np.array(dist_row, dtype=np.float64), None, str(path))


def _text_rows(path: Path) -> list[tuple[int, list[float]]]:
    """Non-blank, non-comment rows of a numeric text file, with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CalibrationFileError(f"{path}: cannot read: {error}") from None
    rows: list[tuple[int, list[float]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values = [float(token) for token in line.replace(",", " ").split()]
        except ValueError:
            raise CalibrationFileError(f"{path}:{number}: not a row of numbers") from None
        if not all(math.isfinite(v) for v in values):
            raise CalibrationFileError(f"{path}:{number}: holds a non-finite number")
        rows.append((number, values))
    return rows
