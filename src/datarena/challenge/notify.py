"""Email notifications (off unless the challenge file has `notifications: {smtp: ...}`).

Teams get an email when an organiser validates or refuses them and when a scoring job of theirs
finishes or fails; organisers when a team registers. Messages go out on one background thread: a
request never waits for, or fails because of, the mail server; a failure to send is logged.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import threading
from email.message import EmailMessage

from pydantic import BaseModel, ConfigDict, Field, field_validator

from datarena.errors import Invalid

log = logging.getLogger("datarena.notify")
MAX_EMAIL = 254


def check_email(value: str) -> str:
    """An address as a team types it: one line, one @, no spaces (nothing that could add a header)."""
    value = (value or "").strip()
    if not value:
        return ""
    if len(value) > MAX_EMAIL or any(c.isspace() or c in "<>,;\"" for c in value) or value.count("@") != 1 \
            or not all(value.split("@")) or "." not in value.split("@")[1]:
        raise Invalid("email must be one address like name@example.org (or leave it empty).")
    return value


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str
    port: int = Field(25, ge=1, le=65535)
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return check_email(v)


class Notifications(BaseModel):
    model_config = ConfigDict(extra="forbid")
    smtp: SmtpSettings | None = None  # None: no email is sent
    organisers: list[str] = Field(default_factory=list, description="who hears of new registrations")

    @field_validator("organisers")
    @classmethod
    def _organisers(cls, v: list[str]) -> list[str]:
        return [check_email(a) for a in v]


class Mailer:
    """Sends queued messages on one daemon thread; `flush()` waits until the queue is empty."""

    def __init__(self, settings: Notifications):
        self.settings = settings
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

    @property
    def enabled(self) -> bool:
        return self.settings.smtp is not None

    def send(self, to: list[str] | str, subject: str, body: str) -> None:
        to = [a for a in ([to] if isinstance(to, str) else to) if a]
        if not self.enabled or not to:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="datarena-mailer", daemon=True)
                self._thread.start()
        self._queue.put((to, subject, body))

    def flush(self, timeout: float = 30.0) -> None:
        done = threading.Event()
        self._queue.put(done)
        if self._thread is not None:
            done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            to, subject, body = item
            try:
                self._deliver(to, subject, body)
                self.sent += 1
            except Exception as exc:  # a mail server's trouble is logged, never a request's failure
                self.failed += 1
                log.warning("could not send %r to %s: %s", subject, ", ".join(to), exc)

    def _deliver(self, to: list[str], subject: str, body: str) -> None:
        smtp = self.settings.smtp
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = smtp.sender, ", ".join(to), subject
        msg.set_content(body)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as server:
            if smtp.starttls:
                server.starttls()
            if smtp.username:
                server.login(smtp.username, smtp.password or "")
            server.send_message(msg)
