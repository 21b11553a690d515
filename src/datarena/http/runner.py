"""Run the server: in this process (uvicorn), or in a background thread for demos and tests."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from datarena.challenge.arena import Arena
from datarena.http.app import create_app


def proxy_settings(arena: Arena) -> dict:
    """uvicorn's proxy options: X-Forwarded-For is believed only from the configured `trusted_proxies`
    (uvicorn's own default would trust it from 127.0.0.1, i.e. from any local process)."""
    trusted = arena.spec.trusted_proxies
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": ",".join(trusted) if trusted else ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BackgroundServer:
    """uvicorn serving an Arena on a thread; `with BackgroundServer(arena) as url:`."""

    def __init__(self, arena: Arena, host: str = "127.0.0.1", port: int | None = None):
        self.arena = arena
        self.host, self.port = host, port or free_port()
        config = uvicorn.Config(create_app(arena), host=self.host, port=self.port, log_level="warning",
                                **proxy_settings(arena))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> str:
        self.arena.jobs.start()
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.arena.jobs.stop()


def serve(arena: Arena, host: str, port: int) -> None:
    arena.jobs.start()  # the embedded worker (no broker) or the reaper beside Celery workers
    try:
        uvicorn.run(create_app(arena), host=host, port=port, log_level="info", **proxy_settings(arena))
    finally:
        arena.jobs.stop()
