"""Read and write the idx format of MNIST and Fashion-MNIST (numpy only).

The idx format (http://yann.lecun.com/exdb/mnist/): a big-endian header of two
zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, one
32-bit size per dimension, then the values. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from kerascnn.checks import InputError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (`.gz` or plain) into a numpy array.

    Raises:
        InputError: the file is not a well-formed idx file (the message names it).
    """
    path = Path(path)
    try:
        with _open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"Cannot read the idx file {str(path)!r} ({e}); expected an idx file "
                         f"such as train-images-idx3-ubyte.gz. Received: {str(path)!r}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise InputError(f"{str(path)!r} is not an idx file: it lacks the idx header (two zero "
                         f"bytes, a type code, the rank). Received: first bytes {data[:4]!r}")
    dtype = np.dtype(_DTYPES[data[2]])
    rank = data[3]
    header = 4 + 4 * rank
    if len(data) < header:
        raise InputError(f"{str(path)!r} is truncated or corrupt: its header promises {rank} "
                         f"sizes of 4 bytes. Received: {len(data)} bytes in all")
    shape = struct.unpack(f">{rank}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise InputError(f"{str(path)!r} is truncated or corrupt: its header promises shape "
                         f"{shape} ({expected} bytes of values). Received: "
                         f"{len(data) - header} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8/int8 array as an idx file (gzip-compressed if `path` ends in `.gz`)."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise InputError(f"write_idx writes uint8 or int8 arrays. Received: dtype={array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with _open(path, "wb") as f:
        f.write(header + array.tobytes())
    return path
