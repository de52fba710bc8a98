"""The model server's wire format: length-prefixed frames over a Unix socket, no pickle.

    frame = header_len (4 bytes, big endian) | body_len (4 bytes) | header (orjson object) | body (raw bytes)

The header carries everything but arrays; an array travels as raw C-order bytes in the body, described by
`dtype` and `shape` in the header. Both ends check lengths against a limit before reading, and decode only
the dtypes listed below, so a peer can make neither side allocate without bound nor run code.
"""

from __future__ import annotations

import asyncio
import math
import struct
from typing import Any

import numpy as np
import orjson

PROTOCOL_VERSION = 1
PREFIX = struct.Struct(">II")
MAX_FRAME_BYTES = 64 * 2**20  # a batch of 4096 texts of 4000 chars fits; anything larger is a broken peer
ARRAY_DTYPES = frozenset({"<f4", "<f2", "<f8", "<i4", "<i8"})


class ProtocolError(Exception):
    """The peer sent something that is not a frame of this protocol; the connection is dropped."""


def pack_frame(header: dict[str, Any], body: bytes | memoryview = b"") -> list[bytes | memoryview]:
    """The pieces of one frame, to write back to back (the body is not copied)."""
    head = orjson.dumps(header)
    return [PREFIX.pack(len(head), len(body)), head, body]


async def write_frame(writer: asyncio.StreamWriter, header: dict[str, Any], body: bytes | memoryview = b"") -> None:
    # write() calls with no await between them: frames from concurrent tasks never interleave.
    for piece in pack_frame(header, body):
        if piece:
            writer.write(piece)
    await writer.drain()


async def read_frame(
    reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES
) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None when the peer closed the connection between frames."""
    try:
        prefix = await reader.readexactly(PREFIX.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a frame prefix") from None
    head_len, body_len = PREFIX.unpack(prefix)
    if head_len == 0 or head_len + body_len > max_bytes:
        raise ProtocolError(f"frame of {head_len} + {body_len} bytes: the limit is {max_bytes}")
    try:
        head = await reader.readexactly(head_len)
        body = await reader.readexactly(body_len) if body_len else b""
    except asyncio.IncompleteReadError:
        raise ProtocolError("connection closed inside a frame") from None
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"frame header must be a JSON object, got {type(header).__name__}")
    return header, body


def array_meta(array: np.ndarray) -> tuple[dict[str, Any], memoryview]:
    """Header fields and body for an array (made C-contiguous little-endian if it is not)."""
    a = np.ascontiguousarray(array)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    dtype = a.dtype.str
    if dtype not in ARRAY_DTYPES:
        raise ValueError(f"dtype {dtype} is not sent over the wire (allowed: {sorted(ARRAY_DTYPES)})")
    return {"dtype": dtype, "shape": list(a.shape)}, a.reshape(-1).data.cast("B")


def decode_array(header: dict[str, Any], body: bytes) -> np.ndarray:
    """The array a frame carries; ProtocolError when dtype, shape and body length disagree."""
    dtype, shape = header.get("dtype"), header.get("shape")
    if dtype not in ARRAY_DTYPES:
        raise ProtocolError(f"array dtype {dtype!r} is not one of {sorted(ARRAY_DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"array shape must be a list of non-negative ints, got {shape!r}")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != len(body):
        raise ProtocolError(f"array {dtype}{shape} needs {math.prod(shape) * dt.itemsize} bytes, body has {len(body)}")
    return np.frombuffer(body, dtype=dt).reshape(shape)
