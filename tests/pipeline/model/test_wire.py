"""pipeline/model/wire.py: frames and arrays survive the trip byte for byte; a bad peer gets ProtocolError."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import orjson
import pytest

from pipeline.model.wire import PREFIX, ProtocolError, array_meta, decode_array, pack_frame, read_frame


def reader_with(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for c in chunks:
        reader.feed_data(c)
    if eof:
        reader.feed_eof()
    return reader


def frame_bytes(header: dict, body: bytes = b"") -> bytes:
    return b"".join(bytes(p) for p in pack_frame(header, body))


async def test_frames_round_trip_in_order_then_clean_eof() -> None:
    a = frame_bytes({"id": 1, "op": "encode", "texts": ["é ✓", ""]})
    b = frame_bytes({"id": 2}, b"\x00\x01\x02")
    reader = reader_with(a + b[:5], b[5:])  # the second frame arrives in two pieces
    assert await read_frame(reader) == ({"id": 1, "op": "encode", "texts": ["é ✓", ""]}, b"")
    assert await read_frame(reader) == ({"id": 2}, b"\x00\x01\x02")
    assert await read_frame(reader) is None


@pytest.mark.parametrize(
    "array",
    [
        np.arange(32 * 384, dtype=np.float32).reshape(32, 384) / 7,
        np.zeros((0, 384), dtype=np.float32),
        np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2],  # not contiguous
        np.arange(6, dtype=">f4").reshape(2, 3),  # big endian: sent little endian
        np.float16([1.5, -2.0]),
    ],
)
async def test_arrays_round_trip_through_a_frame(array: np.ndarray) -> None:
    meta, body = array_meta(array)
    header, got_body = await read_frame(reader_with(frame_bytes({"id": 7, **meta}, body)))
    got = decode_array(header, got_body)
    assert got.shape == array.shape
    assert got.dtype == array.dtype.newbyteorder("<")
    np.testing.assert_array_equal(got, array)


def test_object_arrays_are_not_sent() -> None:
    with pytest.raises(ValueError, match="not sent"):
        array_meta(np.array(["a", 1], dtype=object))


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        ({"dtype": "|O", "shape": [1]}, b"\x00" * 8, "dtype"),  # objects would mean pickle
        ({"dtype": "<f4", "shape": [2, 2]}, b"\x00" * 12, "needs 16 bytes"),
        ({"dtype": "<f4", "shape": [-1]}, b"", "non-negative"),
        ({"dtype": "<f4", "shape": [True]}, b"\x00" * 4, "non-negative"),
        ({"dtype": "<f4", "shape": "2"}, b"", "list"),
        ({"shape": [1]}, b"\x00" * 4, "dtype"),
    ],
)
def test_bad_array_descriptions_are_refused(header: dict, body: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode_array(header, body)


async def test_an_oversized_frame_is_refused_from_its_prefix() -> None:
    # Only the 8-byte prefix is there: the limit is checked before reading (or allocating) anything else.
    reader = reader_with(PREFIX.pack(10, 2**31), eof=False)
    with pytest.raises(ProtocolError, match="limit"):
        await asyncio.wait_for(read_frame(reader, max_bytes=1024), 1.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (PREFIX.pack(5, 0) + b"{nope", "not JSON"),
        (PREFIX.pack(3, 0) + b"[1]", "JSON object"),
        (PREFIX.pack(0, 4) + b"abcd", "frame of 0"),
        (PREFIX.pack(20, 0) + b'{"id":', "inside a frame"),
        (struct.pack(">I", 9), "prefix"),
    ],
)
async def test_broken_frames_raise_protocol_error(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        await read_frame(reader_with(data))


def test_header_is_plain_orjson() -> None:
    pieces = pack_frame({"id": 3, "ok": True}, b"xy")
    head_len, body_len = PREFIX.unpack(pieces[0])
    assert orjson.loads(pieces[1]) == {"id": 3, "ok": True} and head_len == len(pieces[1]) and body_len == 2
