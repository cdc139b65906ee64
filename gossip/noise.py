"""The Noise XX handshake, ``Noise_XX_25519_ChaChaPoly_SHA256`` (Noise Protocol Framework rev. 34).

Why this and why here: peers need sessions that are mutually authenticated, bound to their
channel and encrypted, and Noise XX is what libp2p (whose gossipsub we follow) uses for exactly
that; a third party can implement our transport with any Noise library. No maintained Python
Noise library exists (the best known had its last release in 2020), so this module implements
the few pages of the spec that XX needs on libsodium's primitives through PyNaCl: X25519
(``crypto_scalarmult``), ChaCha20-Poly1305 IETF, plus SHA-256 and HMAC from the standard library.
It is checked against the spec's published test vectors (``tests/gossip/test_noise.py``).

Pattern XX::

    -> e
    <- e, ee, s, es
    -> s, se

After the third message :meth:`XXHandshake.split` gives one :class:`CipherState` per direction.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from nacl.bindings import (
    crypto_aead_chacha20poly1305_ietf_decrypt,
    crypto_aead_chacha20poly1305_ietf_encrypt,
    crypto_scalarmult,
    crypto_scalarmult_base,
)
from nacl.exceptions import CryptoError

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
MAX_MESSAGE = 65535
"""Largest Noise message (handshake or transport), per the spec."""
_MAX_NONCE = (1 << 64) - 1  # reserved by the spec: a cipher state never uses it


class NoiseError(Exception):
    """A message that does not authenticate, is malformed, or breaks the handshake order."""


class MalformedMessage(NoiseError):
    """A handshake message of the wrong length: garbage rather than a failed proof."""


def generate_private() -> bytes:
    """A fresh X25519 private key (32 random bytes; X25519 clamps on use)."""
    return os.urandom(DHLEN)


def public_key(private: bytes) -> bytes:
    return crypto_scalarmult_base(private)


def _dh(private: bytes, public: bytes) -> bytes:
    try:
        return crypto_scalarmult(private, public)
    except (CryptoError, RuntimeError, ValueError, TypeError) as exc:
        # libsodium refuses low-order points (an all-zero shared secret): a contributory failure.
        raise NoiseError("bad X25519 public key") from exc


def _hkdf(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.digest(chaining_key, ikm, "sha256")
    first = hmac.digest(temp, b"\x01", "sha256")
    return first, hmac.digest(temp, first + b"\x02", "sha256")


class CipherState:
    """A key and a counter nonce. Nonces are never sent: both sides count messages, so a
    replayed, reordered, dropped or injected message fails authentication."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.n = 0

    def _nonce(self) -> bytes:
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce space exhausted")
        return b"\x00\x00\x00\x00" + self.n.to_bytes(8, "little")

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        ciphertext = crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, ad, self._nonce(), self.key)
        self.n += 1
        return ciphertext

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Plaintext, or :class:`NoiseError`; on failure the nonce does not advance."""
        if self.key is None:
            return ciphertext
        try:
            plaintext = crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, ad, self._nonce(), self.key)
        except (CryptoError, ValueError, TypeError) as exc:
            raise NoiseError("message failed authentication") from exc
        self.n += 1
        return plaintext


class _SymmetricState:
    def __init__(self) -> None:
        name = PROTOCOL_NAME
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else hashlib.sha256(name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = _hkdf(self.ck, ikm)
        self.cipher = CipherState(key)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext


class XXHandshake:
    """One side of a Noise XX handshake. Call ``write_message``/``read_message`` in turn
    (initiator writes first); after three messages, ``split()``.

    ``ephemeral`` is for test vectors only; normally a fresh key is drawn.
    """

    def __init__(self, initiator: bool, static_private: bytes, prologue: bytes = b"",
                 ephemeral: bytes | None = None) -> None:
        self.initiator = initiator
        self._ss = _SymmetricState()
        self._ss.mix_hash(prologue)
        self._s = static_private
        self._e = ephemeral or generate_private()
        self._re: bytes | None = None
        self.remote_static: bytes | None = None
        """The peer's static X25519 public key, known (and authenticated) once read."""
        self._step = 0

    @property
    def complete(self) -> bool:
        return self._step == 3

    @property
    def handshake_hash(self) -> bytes:
        """Hash of the whole transcript: identical on both sides only if nothing was altered."""
        return self._ss.h

    def _my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        if self.complete or not self._my_turn():
            raise NoiseError("not our turn to write")
        ss = self._ss
        if self._step == 0:                        # -> e
            out = public_key(self._e)
            ss.mix_hash(out)
        elif self._step == 1:                      # <- e, ee, s, es
            assert self._re is not None
            out = public_key(self._e)
            ss.mix_hash(out)
            ss.mix_key(_dh(self._e, self._re))
            out += ss.encrypt_and_hash(public_key(self._s))
            ss.mix_key(_dh(self._s, self._re))
        else:                                      # -> s, se
            assert self._re is not None
            out = ss.encrypt_and_hash(public_key(self._s))
            ss.mix_key(_dh(self._s, self._re))
        out += ss.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise MalformedMessage("handshake message too long")
        self._step += 1
        return out

    def read_message(self, message: bytes) -> bytes:
        """The peer's payload, or :class:`NoiseError` (the handshake must then be abandoned)."""
        if self.complete or self._my_turn():
            raise NoiseError("not our turn to read")
        ss = self._ss
        try:
            if self._step == 0:                    # -> e
                rest = self._read_e(message)
            elif self._step == 1:                  # <- e, ee, s, es
                rest = self._read_e(message)
                ss.mix_key(_dh(self._e, self._re))  # type: ignore[arg-type]
                rest = self._read_s(rest)
                ss.mix_key(_dh(self._e, self.remote_static))  # type: ignore[arg-type]
            else:                                  # -> s, se
                rest = self._read_s(message)
                ss.mix_key(_dh(self._e, self.remote_static))  # type: ignore[arg-type]
            payload = ss.decrypt_and_hash(rest)
        except IndexError as exc:
            raise MalformedMessage("handshake message too short") from exc
        self._step += 1
        return payload

    def _read_e(self, message: bytes) -> bytes:
        if len(message) < DHLEN:
            raise MalformedMessage("handshake message too short")
        self._re = bytes(message[:DHLEN])
        self._ss.mix_hash(self._re)
        return message[DHLEN:]

    def _read_s(self, message: bytes) -> bytes:
        size = DHLEN + TAGLEN
        if len(message) < size:
            raise MalformedMessage("handshake message too short")
        self.remote_static = self._ss.decrypt_and_hash(bytes(message[:size]))
        return message[size:]

    def split(self) -> tuple[CipherState, CipherState]:
        """``(send, receive)`` cipher states for this side."""
        if not self.complete:
            raise NoiseError("handshake not complete")
        first, second = _hkdf(self._ss.ck, b"")
        initiator_to_responder, responder_to_initiator = CipherState(first), CipherState(second)
        if self.initiator:
            return initiator_to_responder, responder_to_initiator
        return responder_to_initiator, initiator_to_responder
