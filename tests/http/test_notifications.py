"""Email notifications against a real SMTP server on localhost (aiosmtpd), and a mail server that is
down: the request still succeeds and the failure is logged."""

from __future__ import annotations

import logging
import time
from email import message_from_bytes

import httpx
import pytest
from aiosmtpd.controller import Controller

from datarena.challenge.arena import Arena
from datarena.client import ArenaClient
from datarena.http.runner import BackgroundServer, free_port
from tests.http.test_console import PASSWORD
from tests.http.test_dataset_track import challenge, scenes  # noqa: F401 - the scenes fixture


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        msg = message_from_bytes(envelope.content)
        self.messages.append({"to": envelope.rcpt_tos, "subject": msg["Subject"], "body": msg.get_payload()})
        return "250 OK"

    def wait_for(self, text: str, timeout: float = 60.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for m in self.messages:
                if text in m["subject"]:
                    return m
            time.sleep(0.1)
        raise AssertionError(f"no email with {text!r}; got {[m['subject'] for m in self.messages]}")


@pytest.fixture
def smtp():
    inbox, port = Inbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_teams_and_organisers_are_emailed(smtp, tmp_path, scenes):  # noqa: F811
    inbox, port = smtp
    spec = challenge(tmp_path, scenes)
    spec = spec.model_copy(update={"notifications": spec.notifications.model_validate(
        {"smtp": {"host": "127.0.0.1", "port": port, "sender": "arena@example.org"}, "organisers": ["org@example.org"]})})
    arena = Arena(spec)
    arena.start(progress=False)
    with BackgroundServer(arena) as url:
        r = httpx.post(f"{url}/api/teams", json={"name": "mailed", "password": PASSWORD, "email": "team@example.org"})
        assert r.status_code == 201 and "email" not in r.text
        reg = inbox.wait_for("team mailed registered")
        assert reg["to"] == ["org@example.org"]
        httpx.post(f"{url}/api/teams", json={"name": "refused", "password": PASSWORD, "email": "other@example.org"})
        arena.team_action("mailed", "validate")
        arena.team_action("refused", "refuse", reason="duplicate account")
        assert inbox.wait_for("team mailed validated")["to"] == ["team@example.org"]
        refusal = inbox.wait_for("team refused refused")
        assert refusal["to"] == ["other@example.org"] and "duplicate account" in refusal["body"]
        c = ArenaClient(url, "mailed", PASSWORD)
        sub = c.submit_dataset("scenes", scenes["target"])
        c.wait_for_job(sub["job_id"], timeout=240, poll_s=0.3)
        scored = inbox.wait_for(f"submission {sub['submission_id']}: finished")
        assert scored["to"] == ["team@example.org"] and "mIoU" in scored["body"]
        time.sleep(2.5)  # one more notifier round: the same job is not announced twice
        assert sum(f"submission {sub['submission_id']}" in m["subject"] for m in inbox.messages) == 1
        bad = httpx.post(f"{url}/api/teams", json={"name": "inject", "password": PASSWORD, "email": "a@b.org\nBcc: x@y.org"})
        assert bad.status_code == 422 and "one address" in bad.json()["detail"]
    arena.engine.dispose()


def test_a_mail_server_that_is_down_never_breaks_a_request(tmp_path, phase_data_cache, caplog):
    from tests.conftest import fast_challenge, install_phase_cache

    install_phase_cache(phase_data_cache, tmp_path)
    dead = free_port()  # nothing listens here
    arena = Arena(fast_challenge(tmp_path, notifications={"smtp": {"host": "127.0.0.1", "port": dead, "sender": "a@example.org",
                                                                     "timeout_s": 2}, "organisers": ["org@example.org"]}))
    arena.start(progress=False)
    with caplog.at_level(logging.WARNING, logger="datarena.notify"), BackgroundServer(arena) as url:
        r = httpx.post(f"{url}/api/teams", json={"name": "unlucky", "password": PASSWORD, "email": "u@example.org"})
        assert r.status_code == 201
        arena.mailer.flush()
        assert arena.mailer.failed == 1 and arena.mailer.sent == 0
    assert any("could not send" in rec.getMessage() for rec in caplog.records)
    arena.engine.dispose()


def test_a_misspelt_notifications_setting_is_refused_by_name(tmp_path):
    from datarena.challenge.spec import ChallengeSpec

    with pytest.raises(ValueError) as e:
        ChallengeSpec.model_validate({"notifications": {"smtp": {"host": "h", "sender": "a@example.org", "prot": 25}}})
    assert "prot" in str(e.value)
