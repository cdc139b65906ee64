"""The ``[sync]`` section of ``config.toml``: the weak-subjectivity checkpoint, and its parser.

``fedchain`` also takes a checkpoint on the command line, so :func:`parse_checkpoint` is public.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config_checks import ConfigError

CHECKPOINT_FORMAT = "HEIGHT:BLOCKHASH (a height of at least 1 and the 64 hex characters of the hash " \
                    "of the final block at that height)"


def parse_checkpoint(text: str, what: str = "sync.trusted_checkpoint") -> tuple[int, bytes]:
    """``"HEIGHT:BLOCKHASH"`` as ``(height, hash)``, or :class:`ConfigError` naming ``what``."""
    height, sep, block_hash = text.strip().partition(":")
    if not sep or not height.isascii() or not height.isdigit():
        raise ConfigError(f"{what} must be {CHECKPOINT_FORMAT}, got {text[:100]!r}")
    if int(height) < 1:
        raise ConfigError(f"{what}: the height must be at least 1, got {height}")
    block_hash = block_hash.lower()
    if len(block_hash) != 64 or not all(c in "0123456789abcdef" for c in block_hash):
        raise ConfigError(f"{what}: the block hash must be 64 hex characters, got {block_hash[:80]!r}")
    return int(height), bytes.fromhex(block_hash)


@dataclass
class SyncConfig:
    """What this node trusts when it syncs, beyond its genesis.

    ``trusted_checkpoint`` is a weak-subjectivity checkpoint, ``"HEIGHT:BLOCKHASH"``: a final
    block the operator learnt out of band (from nodes they trust). Sync refuses a chain whose
    block at HEIGHT has another hash, so a new node cannot be led onto a long-range fork by peers
    that hold old delegate keys. Empty: trust the genesis alone.
    """

    trusted_checkpoint: str = ""

    def validate(self) -> None:
        if self.trusted_checkpoint:
            height, block_hash = parse_checkpoint(self.trusted_checkpoint)
            self.trusted_checkpoint = f"{height}:{block_hash.hex()}"

    @property
    def checkpoint(self) -> tuple[int, bytes] | None:
        """``(height, block hash)`` of the trusted checkpoint, or None."""
        return parse_checkpoint(self.trusted_checkpoint) if self.trusted_checkpoint else None
