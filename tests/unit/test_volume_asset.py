"""The case's CT brick as a headset asset (docs/headset-protocol.md, "The CT volume"): served
by hash as stored, its metadata in a protocol-3 Welcome, and nothing a protocol-2 client
could trip on."""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest

from nav.case import load_case
from nav.imaging.brick import (
    MAX_BRICK_VOXELS,
    BrickError,
    decode_brick,
    encode_brick,
    volume_table,
)
from nav.messages import MessageError, Welcome, decode, encode
from nav.messages.headset import (
    HEADSET_PROTOCOL_VERSION,
    MAX_VOLUME_VOXELS,
    SUPPORTED_HEADSET_PROTOCOLS,
    VolumeInfo,
)
from nav.phantom import SHIPPED_PHANTOM_DIR, write_phantom_case
from render.assets import build_assets, scene_version, with_confidence

SESSION = "0123456789abcdef0123456789abcdef"
# A brick whose voxels are not a cube and whose affine is not rigid: spacing 2, 3, 4 mm,
# axes flipped, so a transposed or rescaled matrix on the way would show.
T_BRICK = np.array(
    [[-2.0, 0.0, 0.0, 40.0], [0.0, 3.0, 0.0, -60.0], [0.0, 0.0, -4.0, 100.0], [0, 0, 0, 1.0]]
)
WELCOME_V2_FIELDS = {
    "protocol",
    "session",
    "scene_endpoint",
    "scene_version",
    "t_server_ns",
    "assets",
    "T_xr_from_tracker",
    "xr_rms_mm",
}
"""What a protocol-2 client's strict decoder takes (it refuses any other field)."""


def _case_with_volume(folder: Path, values: np.ndarray) -> Path:
    """The phantom with ``values`` (uint16, [i, j, k]) as its CT brick, placed by T_BRICK."""
    write_phantom_case(folder)
    data = encode_brick(values)
    sha = hashlib.sha256(data).hexdigest()
    (folder / "volume").mkdir()
    (folder / "volume" / f"{sha[:16]}.u16.gz").write_bytes(data)
    table = volume_table(file=f"volume/{sha[:16]}.u16.gz", data=data, shape=values.shape, T=T_BRICK)
    lines = ["[volume]"]
    for key, value in table.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    toml = (folder / "case.toml").read_text()
    head, sep, rest = toml.partition("[[structures]]")
    (folder / "case.toml").write_text(head + "\n".join(lines) + "\n\n" + sep + rest)
    return folder


@pytest.fixture(scope="module")
def brick_values() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 4096, size=(5, 4, 3), dtype=np.uint16)


@pytest.fixture(scope="module")
def volume_case(tmp_path_factory: pytest.TempPathFactory, brick_values: np.ndarray) -> Path:
    return _case_with_volume(tmp_path_factory.mktemp("vcase"), brick_values)


def test_the_brick_is_an_asset_with_its_file_bytes_and_geometry(
    volume_case: Path, brick_values: np.ndarray
) -> None:
    case = load_case(volume_case)
    assert case.volume is not None
    assets = build_assets(case)
    volume = assets.volume
    assert volume is not None
    stored = case.volume.path.read_bytes()
    assert assets.data_by_sha256[volume.sha256] == stored  # as stored: gzip, not re-encoded
    assert volume.sha256 == case.volume.sha256 == hashlib.sha256(stored).hexdigest()
    assert volume.size_bytes == len(stored)
    assert volume.shape == brick_values.shape and volume.dtype == "uint16"
    assert volume.hu_offset == -1024.0
    np.testing.assert_array_equal(volume.T_image_from_ijk, T_BRICK)
    assert assets.name_of(volume.sha256) == "volume"
    assert assets.names == tuple(s.name for s in case.structures)  # not a structure
    np.testing.assert_array_equal(decode_brick(stored, volume.shape), brick_values)


def test_a_case_without_a_volume_keeps_its_assets_and_scene_version(volume_case: Path) -> None:
    plain = build_assets(load_case(SHIPPED_PHANTOM_DIR))
    assert plain.volume is None
    with_volume = build_assets(load_case(volume_case))
    assert [i.sha256 for i in with_volume.infos] == [i.sha256 for i in plain.infos]
    # The version a client compares: unchanged without a volume, new with one.
    assert scene_version(plain) == _scene_version_before_volumes(plain)
    assert scene_version(with_volume) != scene_version(plain)


def _scene_version_before_volumes(assets: object) -> int:
    """render.assets.scene_version as it was before volumes (names and GLB hashes)."""
    digest = hashlib.sha256()
    for info in assets.infos:  # type: ignore[attr-defined]
        digest.update(info.name.encode() + b"\0" + info.sha256.encode())
    return (int.from_bytes(digest.digest()[:8], "big") & ((1 << 63) - 1)) or 1


def test_confidence_colours_keep_the_volume(volume_case: Path) -> None:
    case = load_case(volume_case)
    assets = build_assets(case)
    organ = next(s for s in case.structures if s.role == "organ")
    coloured = with_confidence(assets, organ, lambda v: np.full(len(v), 1.5))
    assert coloured.volume is assets.volume
    assert assets.volume is not None
    assert (
        coloured.data_by_sha256[assets.volume.sha256] == assets.data_by_sha256[assets.volume.sha256]
    )
    assert coloured.info(organ.name).sha256 != assets.info(organ.name).sha256


def test_a_tampered_brick_stops_the_assets_with_one_line(
    tmp_path: Path, brick_values: np.ndarray
) -> None:
    folder = _case_with_volume(tmp_path / "case", brick_values)
    case = load_case(folder)
    assert case.volume is not None
    case.volume.path.write_bytes(encode_brick(brick_values + 1))
    with pytest.raises(BrickError, match="sha256") as raised:
        build_assets(case)
    assert "\n" not in str(raised.value)


def _welcome(protocol: int, volume: VolumeInfo | None) -> Welcome:
    return Welcome(protocol, SESSION, "ipc:///x", 7, 1, (), np.eye(4), math.nan, volume)


def test_a_protocol_3_welcome_carries_the_volume_and_a_protocol_2_one_never(
    volume_case: Path,
) -> None:
    volume = build_assets(load_case(volume_case)).volume
    assert volume is not None
    got = decode(encode(_welcome(3, volume), seq=0, t_pub_ns=1)).message
    assert isinstance(got, Welcome) and got.volume is not None
    assert (got.volume.sha256, got.volume.shape, got.volume.hu_offset) == (
        volume.sha256,
        volume.shape,
        -1024.0,
    )
    np.testing.assert_array_equal(got.volume.T_image_from_ijk, T_BRICK)
    none = decode(encode(_welcome(3, None), seq=0, t_pub_ns=1)).message
    assert isinstance(none, Welcome) and none.volume is None
    # Protocol 2: exactly the fields an old client's strict decoder takes.
    assert set(_welcome(2, None).to_body()) == WELCOME_V2_FIELDS
    old = decode(encode(_welcome(2, None), seq=0, t_pub_ns=1)).message
    assert isinstance(old, Welcome) and old.protocol == 2 and old.volume is None
    with pytest.raises(ValueError, match="protocol-2 Welcome cannot carry a volume"):
        _welcome(2, volume)
    assert HEADSET_PROTOCOL_VERSION == 3 and SUPPORTED_HEADSET_PROTOCOLS == (2, 3)
    assert MAX_VOLUME_VOXELS == MAX_BRICK_VOXELS


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"shape": [4, 4]}, "shape"),
        ({"shape": [512, 512, 512]}, "shape"),
        ({"shape": [4, 0, 4]}, "shape"),
        ({"dtype": "float64"}, "dtype"),
        ({"hu_offset": float("inf")}, "hu_offset"),
        ({"size_bytes": 0}, "size_bytes"),
        ({"sha256": "A" * 64}, "sha256"),
        ({"T_image_from_ijk": np.zeros((4, 4))}, "affine"),
        ({"extra": 1}, "unknown fields"),
    ],
)
def test_a_bad_volume_entry_is_refused_on_decode(change: dict[str, object], needle: str) -> None:
    good = VolumeInfo("volume", "a" * 64, 100, (4, 4, 4), "uint16", -1024.0, T_BRICK)
    body = _welcome(3, good).to_body()
    for key, value in change.items():
        if isinstance(value, np.ndarray):
            body["volume"][key] = {"dtype": "<f8", "shape": [4, 4], "data": value.tobytes()}
        else:
            body["volume"][key] = value
    with pytest.raises(MessageError, match=needle):
        Welcome.from_body(body)


def test_welcome_volume_field_follows_the_protocol() -> None:
    body = _welcome(3, None).to_body()
    del body["volume"]
    with pytest.raises(MessageError, match="without 'volume'"):
        Welcome.from_body(body)
    body = _welcome(2, None).to_body()
    body["volume"] = None
    with pytest.raises(MessageError, match="protocol-2 Welcome with a volume"):
        Welcome.from_body(body)


def test_decode_brick_refuses_truncated_inflating_and_non_gzip_bytes(
    brick_values: np.ndarray,
) -> None:
    data = encode_brick(brick_values)
    np.testing.assert_array_equal(decode_brick(data, brick_values.shape), brick_values)
    with pytest.raises(BrickError, match=r"120 bytes, shape \(5, 4, 4\) needs 160"):
        decode_brick(data, (5, 4, 4))
    with pytest.raises(BrickError, match="over 80 bytes"):
        decode_brick(data, (5, 4, 2))
    with pytest.raises(BrickError, match="not gzip"):
        decode_brick(b"not a brick", (5, 4, 3))
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KB: never inflated
    with pytest.raises(BrickError, match="over"):
        decode_brick(bomb, (5, 4, 3))
