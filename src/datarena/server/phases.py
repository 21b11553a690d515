"""Phases: secret generation seeds with a public commitment, revealed after a phase closes.

A served phase's data must not be reproducible by participants, yet anyone must be able to
check afterwards that the organisers did not change them. So:

* the server keeps a random 32-byte secret (`server-secret` beside the database, mode 0600,
  created once and kept across restarts, never served);
* phase N with the organiser's phase seed S gets `phase_secret = HMAC-SHA256(server secret,
  "datarena phase N seed S")` (64 hex digits); its exercises are generated with the integer
  of those digits as seed;
* everything served shows only `commitment = sha256(phase_secret bytes)`;
* after the phase closes, `datarena admin reveal-seed N` publishes the phase secret, and
  `datarena verify-phase URL --phase N` regenerates the phase, checks the commitment, the
  public files and the hidden labels. Revealing one phase says nothing of the others.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from datarena.errors import ConfigError

SECRET_FILE = "server-secret"
SECRET_BYTES = 32


def load_or_create_server_secret(path: str | os.PathLike) -> bytes:
    """The server's secret, created (owner-only permissions) on first use."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: read theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
    text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != SECRET_BYTES:
        raise ConfigError(f"{path} must hold {SECRET_BYTES * 2} hex digits (the server secret); "
                          f"restore it from a backup, or delete it before the first phase is opened.")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        os.chmod(path, 0o600)
    return raw


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
