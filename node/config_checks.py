"""``ConfigError`` and the value checks the sections of ``config.toml`` share.

Every section of :mod:`node.config` validates itself; they all fail the same way, with a
:class:`ConfigError` whose message names the key and says what it must be, so an operator reads
one kind of error whatever is wrong.
"""

from __future__ import annotations

from gossip.config import normalize_url


class ConfigError(Exception):
    """A home folder, config, genesis or key that the node cannot use; the message says how to fix it."""


def check_base_url(url: str, what: str = "URL") -> str:
    """``url`` in the canonical base-URL form peers are keyed by, or :class:`ConfigError`."""
    try:
        return normalize_url(url)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def check_port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{what} must be between 1 and 65535, got {value}")


def check_positive(value: int, what: str) -> None:
    if value <= 0:
        raise ConfigError(f"{what} must be positive, got {value}")
