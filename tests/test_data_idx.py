"""tfkd.data.idx: reading and writing IDX files, with verification."""

import gzip

import numpy as np
import pytest

from tfkd.data import idx


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    idx.write_idx(tmp_path / name, array)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / name), array)


def test_other_dtypes_round_trip(tmp_path):
    array = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    idx.write_idx(tmp_path / "f.idx", array)
    got = idx.read_idx(tmp_path / "f.idx")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, array)


def test_truncated_file_is_an_error(tmp_path):
    idx.write_idx(tmp_path / "a.idx", np.zeros((10, 5), np.uint8))
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "a.idx").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match="Expected 50 bytes.*Received: 43 bytes"):
        idx.read_idx(tmp_path / "a.idx")


def test_truncated_gzip_is_an_error(tmp_path):
    idx.write_idx(tmp_path / "a.idx.gz", np.zeros((100, 5), np.uint8))
    raw = (tmp_path / "a.idx.gz").read_bytes()
    (tmp_path / "a.idx.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="Cannot read IDX file"):
        idx.read_idx(tmp_path / "a.idx.gz")


def test_not_an_idx_file_is_an_error(tmp_path):
    with gzip.open(tmp_path / "b.gz", "wb") as handle:
        handle.write(b"<html>not found</html>")
    with pytest.raises(ValueError, match="Invalid IDX file"):
        idx.read_idx(tmp_path / "b.gz")
