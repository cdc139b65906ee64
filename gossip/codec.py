"""Canonical, bounded msgpack encoding.

Everything fedchain signs or sends is msgpack. Signed structures are fixed-order arrays, never
maps, so that one value always yields the same bytes (the bytes are what is hashed and signed).
Decoding is bounded: a size cap on the whole message and per-object limits in the Unpacker, so a
hostile peer cannot make us allocate more than the cap. Extension types are refused outright
(they would be a path to pickle-like surprises); tensors travel as ``bin`` plus dtype and shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np

DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024
"""Default cap on one encoded message, in bytes (DESIGN section 1)."""

_ALLOWED_DTYPES = {"float32", "float16", "int8", "int32", "int64", "uint8", "float64"}


class DecodeError(ValueError):
    """A message that is malformed, oversized or of the wrong shape. Callers drop and count it."""


def pack(obj: Any) -> bytes:
    """Encode ``obj`` canonically: bin type for bytes, float64 for floats, no extension types."""
    try:
        return msgpack.packb(obj, use_bin_type=True, use_single_float=False, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot encode value: {exc}") from exc


def unpack(data: bytes, max_size: int = DEFAULT_MAX_MESSAGE) -> Any:
    """Decode one msgpack object of at most ``max_size`` bytes, or raise :class:`DecodeError`.

    Trailing bytes after the object are an error: canonical input has exactly one encoding.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("message is not bytes")
    if len(data) > max_size:
        raise DecodeError(f"message of {len(data)} bytes exceeds the cap of {max_size}")
    if len(data) == 0:
        raise DecodeError("empty message")
    unpacker = msgpack.Unpacker(
        raw=False,
        use_list=True,
        strict_map_key=True,
        max_buffer_size=max_size,
        max_bin_len=max_size,
        max_str_len=min(max_size, 1 << 20),
        max_array_len=min(max_size, 1 << 20),
        max_map_len=1 << 16,
        max_ext_len=0,
    )
    with _as_decode_errors():
        unpacker.feed(data)
        obj = unpacker.unpack()
    _check_consumed(unpacker, data)
    return obj


@contextlib.contextmanager
def _as_decode_errors() -> Iterator[None]:
    """Whatever msgpack raises on bad input becomes a :class:`DecodeError`."""
    try:
        yield
    except DecodeError:
        raise
    except (IndexError, msgpack.OutOfData) as exc:
        raise DecodeError("truncated message") from exc
    except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError, TypeError) as exc:
        raise DecodeError(f"malformed message: {exc}") from exc


def _check_consumed(unpacker: msgpack.Unpacker, data: bytes) -> None:
    """Canonical input has exactly one encoding: nothing may follow the object."""
    if unpacker.tell() != len(data):
        raise DecodeError("trailing bytes after message")


_CONTAINER_BYTES = frozenset([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])
"""First bytes of msgpack maps and arrays (fix, 16 and 32 bit forms)."""
_ARRAY_BYTES = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])


def unpack_flat(data: bytes, max_size: int, max_items: int) -> list:
    """Decode an array whose items are scalars or arrays of scalars, with at most ``max_items``
    items in all, or raise :class:`DecodeError`.

    Every gossip frame and handshake payload has that shape, and checking it *while* decoding
    (peeking at each item's first byte before building it) keeps the cost of hostile input to
    the objects a valid frame could hold: :func:`unpack` would first build whatever nesting the
    sender chose, up to ~70 bytes of Python objects per byte received (an empty map is one byte).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DecodeError("message is not bytes")
    data = bytes(data)
    if not 0 < len(data) <= max_size:
        raise DecodeError(f"message of {len(data)} bytes is empty or exceeds the cap of {max_size}")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max_size,
                                max_bin_len=max_size, max_str_len=max_size,
                                max_array_len=max_items, max_map_len=0, max_ext_len=0)
    unpacker.feed(data)
    budget = max_items

    def array_header() -> int:
        nonlocal budget
        if data[unpacker.tell()] not in _ARRAY_BYTES:
            raise DecodeError("expected an array")
        size = unpacker.read_array_header()
        budget -= size
        if budget < 0:
            raise DecodeError(f"more than {max_items} items")
        return size

    def scalar() -> object:
        if data[unpacker.tell()] in _CONTAINER_BYTES:
            raise DecodeError("nested too deep")
        return unpacker.unpack()

    items: list = []
    with _as_decode_errors():
        for _ in range(array_header()):
            if data[unpacker.tell()] in _ARRAY_BYTES:
                items.append([scalar() for _ in range(array_header())])
            else:
                items.append(scalar())
    _check_consumed(unpacker, data)
    return items


def encode_array(arr: np.ndarray) -> list:
    """A numpy array as ``[dtype, shape, raw little-endian bytes]`` for canonical msgpack."""
    a = np.ascontiguousarray(arr)
    if a.dtype.name not in _ALLOWED_DTYPES:
        raise ValueError(f"dtype {a.dtype.name} cannot travel on the wire")
    a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return [a.dtype.name, list(a.shape), a.tobytes()]


def decode_array(obj: Any, max_elements: int = 1 << 28) -> np.ndarray:
    """Inverse of :func:`encode_array`; checks dtype, shape and byte length before trusting them."""
    if not (isinstance(obj, list) and len(obj) == 3):
        raise DecodeError("array must be [dtype, shape, bytes]")
    dtype_name, shape, raw = obj
    if dtype_name not in _ALLOWED_DTYPES:
        raise DecodeError(f"dtype {dtype_name!r} not allowed")
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        raise DecodeError("shape must be a list of non-negative ints")
    if not isinstance(raw, bytes):
        raise DecodeError("array payload must be bin")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > max_elements:
        raise DecodeError(f"array of {count} elements exceeds the cap of {max_elements}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise DecodeError("array byte length does not match dtype and shape")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)
