"""Phase secrets and their public commitments (pure functions; the server and a verifying
participant both use them). See `datarena.challenge.phases` for the protocol."""

from __future__ import annotations

import hashlib
import hmac

from datarena.errors import ConfigError

SECRET_BYTES = 32


def phase_secret(server_secret: bytes, number: int, seed: int) -> str:
    """The secret of phase `number` opened with the organiser's `seed` (64 hex digits)."""
    message = f"datarena phase {int(number)} seed {int(seed)}".encode()
    return hmac.new(server_secret, message, hashlib.sha256).hexdigest()


def commitment(secret_hex: str) -> str:
    """What is shown while the phase runs: sha256 of the phase secret's bytes."""
    return hashlib.sha256(parse_secret(secret_hex)).hexdigest()


def generation_seed(secret_hex: str) -> int:
    """The seed the phase's exercises are generated with (a 256-bit integer)."""
    return int.from_bytes(parse_secret(secret_hex), "big")


def parse_secret(secret_hex: str) -> bytes:
    try:
        raw = bytes.fromhex(secret_hex.strip())
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise ConfigError(f"a phase secret is {SECRET_BYTES * 2} hex digits, got {secret_hex[:80]!r}.")
    return raw
