"""What a participant runs against a datarena server: the HTTP client, the server-backed label
oracle the solvers use, and the verification of a closed phase from its revealed secret."""

from datarena.client.api import ArenaClient, ArenaError, ServerOracle
from datarena.client.verify import fetch_verification, verify_phase

__all__ = ["ArenaClient", "ArenaError", "ServerOracle", "fetch_verification", "verify_phase"]
