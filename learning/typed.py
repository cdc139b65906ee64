"""Whether a value decoded from JSON or msgpack has the type a field is declared with.

A genesis names its FL settings and its rule's parameters once for the chain's life, as JSON. A
value of the wrong type (a clip written as text, a flag written as 1) would pass every range
check Python's comparisons happen to allow and fail later, inside a round; this is the one check
both are held to when the genesis is read.
"""

from __future__ import annotations

import types
import typing
from typing import Any


def _base(hint: Any) -> Any:
    """The declared type without ``| None``."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return next(t for t in options if t is not type(None))


def conforms(hint: Any, value: Any) -> bool:
    """True when ``value`` fits ``hint``: ``None`` only where the hint allows it, an int where a float
    is declared but never a bool for a number, and a list (JSON's only sequence) for a tuple."""
    if value is None:
        return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    kind = _base(hint)
    origin = typing.get_origin(kind) or kind
    if origin is bool:
        return isinstance(value, bool)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return isinstance(value, (list, tuple)) and all(conforms(item, v) for v in value)
    return isinstance(value, origin)


def expected(hint: Any) -> str:
    """The declared type in words, for an error message (``float``, ``a list of floats``)."""
    kind = _base(hint)
    origin = typing.get_origin(kind) or kind
    if origin is tuple:
        return f"a list of {expected(typing.get_args(kind)[0])}s"
    return origin.__name__


def is_float(hint: Any) -> bool:
    """Whether the declared type (without ``| None``) is float, so an int given for it is widened."""
    return _base(hint) is float
