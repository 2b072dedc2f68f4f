"""Reading IDX files (the MNIST / Fashion-MNIST format), plain or gzipped.

The format: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension, then the data. Every file is verified
against its own header when read: a truncated or corrupted download is an
error, never a silently short dataset.
"""

import gzip
import os

import numpy as np

# Type codes of the IDX format and the big-endian dtypes they stand for.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """Reads an IDX file (optionally `.gz`) into a NumPy array.

    Args:
        path: Path of the file.

    Returns:
        A NumPy array with the shape and dtype that the header declares
        (native byte order).

    Raises:
        ValueError: if the header is not IDX or the payload size does not
            match it (truncated or corrupted file).

    Example:

    >>> images = read_idx(  # doctest: +SKIP
    ...     "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
    >>> images.shape  # doctest: +SKIP
    (10000, 28, 28)
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:  # gzip reports truncation so
        raise ValueError(f"Cannot read IDX file {path!r}: {error}") from error
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"Invalid IDX file {path!r}. Expected a header starting with "
            f"0x00 0x00 <type> <ndim>. Received: {raw[:4].hex()}"
        )
    dtype = _IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_size = 4 + 4 * ndim
    shape = tuple(
        int(d) for d in np.frombuffer(raw[4:header_size], dtype=">u4")
    )
    expected = int(np.prod(shape)) * dtype.itemsize
    payload = len(raw) - header_size
    if len(shape) != ndim or payload != expected:
        raise ValueError(
            f"Invalid IDX file {path!r}. Expected {expected} bytes of data "
            f"for shape {shape}. Received: {payload} bytes (truncated or "
            "corrupted; delete it and fetch it again)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_size)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Writes `array` as an IDX file (gzipped when `path` ends in `.gz`).

    The write is atomic: the file appears under its name only once whole.

    Args:
        path: Destination path.
        array: NumPy array of a dtype the IDX format has.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_DTYPES.items()}
    code = codes.get(array.dtype)
    if code is None:
        raise ValueError(
            "Invalid value for argument `array`. Expected one of the IDX "
            f"dtypes {sorted(str(d) for d in codes)}. Received: dtype "
            f"{array.dtype}"
        )
    header = bytes([0, 0, code, array.ndim]) + np.asarray(
        array.shape, dtype=">u4"
    ).tobytes()
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    opener = gzip.open if path.endswith(".gz") else open
    with opener(temporary, "wb") as handle:
        handle.write(header + body)
    os.replace(temporary, path)
