"""Run the server: in this process (uvicorn), or in a background thread for demos and tests."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn

from datarena.challenge.arena import Arena
from datarena.http.app import create_app

log = logging.getLogger("datarena.notify")


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
        self.notifier = Notifier(self.arena)
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
        self.notifier.stop()
        self.arena.jobs.stop()


class Notifier:
    """Emails teams about their ended scoring jobs every `every_s` seconds (only with notifications on)."""

    def __init__(self, arena: Arena, every_s: float = 2.0):
        self.arena, self.every_s, self._stop = arena, every_s, threading.Event()
        self.thread = threading.Thread(target=self._run, name="datarena-notifier", daemon=True)
        if arena.mailer.enabled:
            self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.arena.notify_scores()
            except Exception as exc:  # the database or the mailer: log it, try again next round
                log.warning("notifications: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


def serve(arena: Arena, host: str, port: int) -> None:
    arena.jobs.start()  # the embedded worker (no broker) or the reaper beside Celery workers
    notifier = Notifier(arena)
    try:
        uvicorn.run(create_app(arena), host=host, port=port, log_level="info", **proxy_settings(arena))
    finally:
        notifier.stop()
        arena.jobs.stop()
