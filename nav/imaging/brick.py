"""The CT stored in a case bundle for rendering: a downsampled, gzip-compressed 16-bit brick.

One file, ``volume/<sha256 prefix>.u16.gz``: the voxels as unsigned 16-bit little-endian
integers, i fastest (x, then y, then z: the order of a WebGL ``Data3DTexture``), gzip
compressed. ``value = HU - hu_offset`` with ``hu_offset = -1024``, clipped to 0..4095 (a CT
holds -1024..3071 HU). ``case.toml`` names it in a ``[volume]`` table::

    [volume]
    file = "volume/3f2a...u16.gz"
    sha256 = "3f2a..."              # of the file's bytes: the brick is sent once, by hash
    shape = [256, 256, 20]          # i, j, k
    dtype = "uint16"
    hu_offset = -1024.0             # HU = value + hu_offset
    T_image_from_ijk = [...]        # 16 numbers, row-major: voxel centre -> LPS mm

It is downsampled by whole factors (mean of each block), so a voxel of the brick is the
mean of ``factors`` voxels of the CT and its centre is theirs: ``T_image_from_ijk`` of the
brick is the CT's times a scale and a half-block shift.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from nav.imaging.volume import Volume

HU_OFFSET: Final = -1024.0
MAX_VALUE: Final = 4095
MAX_BRICK_VOXELS: Final = 256 * 256 * 256
"""The brick's limit: 32 MB as 16-bit, a WebGL 3D texture every browser takes."""
VOLUME_KEYS: Final = ("file", "sha256", "shape", "dtype", "hu_offset", "T_image_from_ijk")


class BrickError(ValueError):
    """A ``[volume]`` table or brick file that cannot be used: one line."""


@dataclass(frozen=True, eq=False)
class VolumeRef:
    """The ``[volume]`` of a case: where the brick is and where its voxels lie (LPS mm)."""

    path: Path
    sha256: str
    shape: tuple[int, int, int]
    hu_offset: float
    T_image_from_ijk: npt.NDArray[np.float64]

    def read_bytes(self) -> bytes:
        """The brick file as stored (gzip), its hash checked: what a headset is sent.

        BrickError for a missing file or a wrong hash.
        """
        try:
            data = self.path.read_bytes()
        except OSError as error:
            raise BrickError(f"{self.path}: cannot read the volume brick: {error}") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise BrickError(f"{self.path}: sha256 {digest[:12]}... is not {self.sha256[:12]}...")
        return data

    def read(self) -> npt.NDArray[np.uint16]:
        """The voxels [i, j, k]; BrickError for a missing file, wrong hash or size."""
        try:
            return decode_brick(self.read_bytes(), self.shape)
        except BrickError as error:
            raise BrickError(f"{self.path}: {error}") from None


def decode_brick(data: bytes, shape: tuple[int, int, int]) -> npt.NDArray[np.uint16]:
    """A brick file's bytes (gzip, 16-bit little-endian, i fastest) -> voxels [i, j, k].

    BrickError (one line) when ``data`` is not gzip or does not hold ``shape``.
    """
    expected = int(np.prod(shape)) * 2
    try:
        # max_length: a hostile brick cannot inflate past what its shape says.
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        raw = inflater.decompress(data, expected + 1)
    except zlib.error as error:
        raise BrickError(f"not gzip: {error}") from None
    if len(raw) != expected or not inflater.eof:
        size = f"over {expected}" if len(raw) > expected else str(len(raw))
        raise BrickError(f"{size} bytes, shape {tuple(shape)} needs {expected}")
    return np.frombuffer(raw, dtype="<u2").reshape(shape, order="F")


def downsample_factors(shape: tuple[int, ...], max_voxels: int = MAX_BRICK_VOXELS) -> list[int]:
    """Whole factors per axis, largest axes first, until the brick fits ``max_voxels`` and
    no axis is over 256 (a 512 x 512 x 20 CT: 2, 2, 1)."""
    factors = [1, 1, 1]

    def size(a: int) -> int:
        return -(-shape[a] // factors[a])

    while size(0) * size(1) * size(2) > max_voxels or max(size(a) for a in range(3)) > 256:
        a = max(range(3), key=size)
        factors[a] += 1
    return factors


def make_brick(
    ct: Volume, *, max_voxels: int = MAX_BRICK_VOXELS
) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.float64], list[int]]:
    """The CT downsampled by block means, as 16-bit values, its ``T_image_from_ijk`` and the
    factors. A partial block at the far edge is dropped (less than one brick voxel)."""
    f = downsample_factors(ct.shape, max_voxels)
    n = [ct.shape[a] // f[a] for a in range(3)]
    cropped = np.asarray(ct.array[: n[0] * f[0], : n[1] * f[1], : n[2] * f[2]], dtype=np.float32)
    blocks = cropped.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    values = np.clip(np.round(blocks - HU_OFFSET), 0, MAX_VALUE).astype(np.uint16)
    S = np.eye(4)
    S[:3, :3] = np.diag(np.asarray(f, dtype=np.float64))
    S[:3, 3] = (np.asarray(f, dtype=np.float64) - 1) / 2
    return values, ct.T_image_from_ijk @ S, f


def encode_brick(values: npt.NDArray[np.uint16]) -> bytes:
    """gzip of the little-endian 16-bit voxels, i fastest; deterministic (mtime 0)."""
    raw = np.asarray(values, dtype="<u2").tobytes(order="F")
    return gzip.compress(raw, compresslevel=6, mtime=0)


def volume_table(
    *, file: str, data: bytes, shape: tuple[int, ...], T: npt.NDArray[np.float64]
) -> dict[str, Any]:
    """The ``[volume]`` table for a brick file ``file`` (relative) holding ``data``."""
    return {
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "shape": [int(s) for s in shape],
        "dtype": "uint16",
        "hu_offset": HU_OFFSET,
        "T_image_from_ijk": [float(v) for v in np.asarray(T).ravel()],
    }


def parse_volume_table(root: Path, table: Any) -> VolumeRef:
    """Check a ``[volume]`` table (not the file's bytes: :meth:`VolumeRef.read` does)."""
    if not isinstance(table, Mapping):
        raise BrickError("[volume] must be a table")
    unknown = sorted(set(table) - set(VOLUME_KEYS))
    if unknown:
        raise BrickError(f"[volume]: unknown keys {', '.join(unknown)}")
    missing = [k for k in VOLUME_KEYS if k not in table]
    if missing:
        raise BrickError(f"[volume]: missing {', '.join(missing)}")
    file = table["file"]
    if not isinstance(file, str) or not (root / file).resolve().is_relative_to(root.resolve()):
        raise BrickError(f"[volume]: file {file!r} must be a path inside the case folder")
    if not (root / file).is_file():
        raise BrickError(f"[volume]: no file {file!r}")
    sha = table["sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BrickError("[volume]: sha256 must be 64 lowercase hex digits")
    shape = table["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        or int(np.prod(shape)) > MAX_BRICK_VOXELS
    ):
        raise BrickError(
            f"[volume]: shape must be 3 positive integers, at most 256^3 voxels: {shape!r}"
        )
    if table["dtype"] != "uint16":
        raise BrickError(f"[volume]: dtype {table['dtype']!r}: only uint16")
    offset = table["hu_offset"]
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        raise BrickError("[volume]: hu_offset must be a number")
    values = table["T_image_from_ijk"]
    try:
        T = np.array(values, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError):
        raise BrickError("[volume]: T_image_from_ijk must be 16 numbers") from None
    if (
        not np.all(np.isfinite(T))
        or not np.allclose(T[3], [0, 0, 0, 1])
        or abs(np.linalg.det(T[:3, :3])) < 1e-9
    ):
        raise BrickError("[volume]: T_image_from_ijk must be a finite, invertible affine")
    return VolumeRef(
        path=root / file,
        sha256=sha,
        shape=(shape[0], shape[1], shape[2]),
        hu_offset=float(offset),
        T_image_from_ijk=T,
    )
