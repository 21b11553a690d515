"""Passwords (argon2), bearer tokens, failed-login rate limiting, CSRF tokens."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import unicodedata
from collections import deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from datarena.errors import Invalid, RateLimited

TEAM_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class Passwords:
    """Slow salted hashing; verification of an unknown user still costs one hash (no timing oracle)."""

    def __init__(self, time_cost: int = 2, memory_kib: int = 19456):
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        self._dummy = self.hasher.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, stored_hash: str | None, password: str) -> bool:
        try:
            return self.hasher.verify(stored_hash or self._dummy, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


class LoginLimiter:
    """At most `allowed` failed logins per key (team name, client address) in a sliding window."""

    def __init__(self, allowed: int = 10, window_s: float = 300.0):
        self.allowed, self.window_s = allowed, window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def check(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.allowed:
                    retry = int(self.window_s - (now - q[0])) + 1
                    raise RateLimited(f"too many failed logins for {key.split(':', 1)[0]}; wait {retry} s before trying again.", retry_after=retry)

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)


def team_name_key(name: str) -> str:
    """What makes two team names the same: equal after NFKC normalisation and case folding
    ('Alpha', 'ALPHA' and the full-width 'ａｌｐｈａ' are one team)."""
    return unicodedata.normalize("NFKC", name or "").strip().casefold()


def validate_team_name(name: str) -> str:
    if not isinstance(name, str):
        raise Invalid(f"team name must be a string, got {type(name).__name__}.")
    name = unicodedata.normalize("NFKC", name).strip()
    if not 2 <= len(name) <= 64 or not set(name) <= TEAM_NAME_CHARS:
        raise Invalid("team name must be 2-64 characters of letters, digits, '_', '-' or '.'.")
    return name


def validate_password(password: str) -> str:
    if not isinstance(password, str):
        raise Invalid(f"password must be a string, got {type(password).__name__}.")
    if not 8 <= len(password or "") <= 256:
        raise Invalid("password must be 8-256 characters long.")
    return password
