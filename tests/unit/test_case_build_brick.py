"""The CT brick: downsampling keeps every voxel's place; encoded, hashed and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nav.imaging.brick import (
    BrickError,
    downsample_factors,
    encode_brick,
    make_brick,
    parse_volume_table,
    volume_table,
)
from nav.imaging.geometry import affine_from
from nav.imaging.volume import Volume


def test_the_shared_ct_is_halved_in_plane() -> None:
    assert downsample_factors((512, 512, 20)) == [2, 2, 1]
    assert downsample_factors((512, 512, 400)) == [2, 2, 2]
    assert downsample_factors((100, 100, 50)) == [1, 1, 1]


@settings(max_examples=20)
@given(
    shape=st.tuples(st.integers(2, 12), st.integers(2, 12), st.integers(2, 12)),
    max_voxels=st.integers(8, 400),
    seed=st.integers(0, 1000),
)
def test_a_brick_voxel_is_the_mean_of_its_block_at_the_block_centre(
    shape: tuple[int, int, int], max_voxels: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 2000, size=shape).astype(np.int16)
    T = affine_from(
        origin_lps=rng.uniform(-100, 100, 3),
        directions=np.diag([1, -1, 1]),
        spacing_mm=[0.7, 0.9, 2],
    )
    ct = Volume(array=array, T_image_from_ijk=T, kind="ct", source="synthetic")
    values, T_brick, f = make_brick(ct, max_voxels=max_voxels)
    assert values.size <= max(max_voxels, 1) or f == [shape[0], shape[1], shape[2]]
    i, j, k = (s - 1 for s in values.shape)  # the last brick voxel
    block = array[i * f[0] : (i + 1) * f[0], j * f[1] : (j + 1) * f[1], k * f[2] : (k + 1) * f[2]]
    assert abs(int(values[i, j, k]) - 1024 - block.mean()) <= 0.5 + 1e-9
    centres = ct.ijk_to_lps(
        np.argwhere(np.ones(block.shape, bool)) + [i * f[0], j * f[1], k * f[2]]
    )
    brick_centre = T_brick[:3, :3] @ [i, j, k] + T_brick[:3, 3]
    np.testing.assert_allclose(brick_centre, centres.mean(axis=0), atol=1e-9)


def test_encoded_brick_reads_back_and_checks_its_hash(tmp_path: Path) -> None:
    values = (np.arange(4 * 3 * 2, dtype=np.uint16) * 100).reshape(4, 3, 2)
    data = encode_brick(values)
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "b.u16.gz").write_bytes(data)
    table = volume_table(file="volume/b.u16.gz", data=data, shape=values.shape, T=np.eye(4))
    ref = parse_volume_table(tmp_path, table)
    np.testing.assert_array_equal(ref.read(), values)
    # i fastest in the file, as a WebGL 3D texture wants it
    raw = np.frombuffer(__import__("gzip").decompress(data), "<u2")
    assert raw[:4].tolist() == values[:, 0, 0].tolist()
    (tmp_path / "volume" / "b.u16.gz").write_bytes(encode_brick(values + 1))
    with pytest.raises(BrickError, match="sha256"):
        ref.read()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file": "../outside.gz"}, "inside the case folder"),
        ({"sha256": "xyz"}, "64 lowercase hex"),
        ({"shape": [4, 3]}, "3 positive integers"),
        ({"shape": [1024, 1024, 1024]}, "256\\^3"),
        ({"dtype": "float32"}, "only uint16"),
        ({"T_image_from_ijk": [1, 2, 3]}, "16 numbers"),
        ({"T_image_from_ijk": [0.0] * 16}, "invertible"),
        ({"extra": 1}, "unknown keys extra"),
    ],
)
def test_a_bad_volume_table_is_refused(tmp_path: Path, change: dict, message: str) -> None:
    data = encode_brick(np.zeros((4, 3, 2), np.uint16))
    (tmp_path / "b.gz").write_bytes(data)
    table = volume_table(file="b.gz", data=data, shape=(4, 3, 2), T=np.eye(4)) | change
    with pytest.raises(BrickError, match=message):
        parse_volume_table(tmp_path, table)
