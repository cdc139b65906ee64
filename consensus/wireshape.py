"""Shape checks shared by the ``from_wire`` decoders of the chain's wire types.

Every wire type (:mod:`consensus.tx`, :mod:`consensus.header`, :mod:`consensus.messages`,
:mod:`consensus.equivocation`, :mod:`consensus.block`) decodes a msgpack array from an untrusted
peer; these few predicates are the vocabulary they check it with, so that a wrong shape is always
the same :class:`~gossip.codec.DecodeError` with a message naming the field.
"""

from __future__ import annotations

from typing import Any

from gossip.codec import DecodeError


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise DecodeError(what)


def is_hash(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == 32


def is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63
