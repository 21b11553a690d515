"""The organiser console in a real headless Chromium, through the pages only: validate one team and
refuse another, disqualify a submission (the board shows why), rescore the track (jobs run, the
board updates), cancel a queued job, open the next phase; the audit log and /changes list it all."""

from __future__ import annotations

import time

from datarena.challenge.arena import Arena
from datarena.client import ArenaClient
from datarena.http.runner import BackgroundServer
from tests.http.test_browser import browser  # noqa: F401 - the Chromium fixture
from tests.http.test_console import ORG_PASSWORD, PASSWORD
from tests.http.test_dataset_track import challenge, scenes  # noqa: F401 - the scenes fixture


def wait(predicate, what: str, timeout: float = 240.0):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.3)


def test_an_organiser_runs_the_challenge_from_the_browser(browser, tmp_path, scenes, artifacts):  # noqa: F811
    spec = challenge(tmp_path, scenes)
    spec.tracks[0].submissions_per_day = 10
    arena = Arena(spec)
    arena.start(progress=False)
    arena.create_organiser("olga", ORG_PASSWORD)
    with BackgroundServer(arena) as url:
        good, bad = ArenaClient(url, "good_team", PASSWORD), ArenaClient(url, "bad_team", PASSWORD)
        good.register()
        bad.register()
        page = browser.new_page()
        page.goto(f"{url}/organiser/teams")
        assert page.url.endswith("/organiser/login")  # no session: the login form
        page.fill("#name", "olga")
        page.fill("#password", ORG_PASSWORD)
        page.click("#organiser-login button[type=submit]")
        assert page.inner_text("#session-organiser") == "olga"
        assert "good_team" in page.inner_text("body")  # the overview lists teams waiting for approval

        page.goto(f"{url}/organiser/teams")
        page.click("tr[data-team=good_team] button[value=validate]")
        row = page.locator("tr[data-team=bad_team]")
        row.locator("form[action$='/refuse'] input[name=reason]").fill("one account per lab, please")
        row.locator("button[value=refuse]").click()
        assert page.locator("tr[data-team=good_team] td").nth(1).inner_text().startswith("validated")
        assert "one account per lab, please" in page.locator("tr[data-team=bad_team]").inner_text()
        page.screenshot(path=str(artifacts / "console_teams.png"), full_page=True)

        first = good.submit_dataset("scenes", scenes["target"])
        good.wait_for_job(first["job_id"], timeout=240, poll_s=0.3)
        page.goto(f"{url}/organiser/tracks/scenes/submissions")
        sub = page.locator(f"tr[data-submission='{first['submission_id']}']")
        sub.locator("form[action$='/disqualify'] input[name=reason]").fill("trained on the test images")
        sub.locator("form[action$='/disqualify'] button").click()
        page.goto(f"{url}/tracks/scenes")
        assert "trained on the test images" in page.inner_text("#disqualified")
        assert page.locator("#track-leaderboard tr[data-team=good_team]").count() == 0
        page.screenshot(path=str(artifacts / "console_disqualified_board.png"), full_page=True)

        page.goto(f"{url}/organiser/tracks/scenes/submissions")
        page.locator(f"tr[data-submission='{first['submission_id']}'] form[action$='/restore'] button").click()
        page.fill("#rescore-track input[name=reason]", "the budget was fixed")
        page.click("#rescore-track button")
        assert page.url.endswith("/organiser/jobs")
        rescored = good.dataset_submissions("scenes")[0]["job_id"]
        assert rescored != first["job_id"]
        wait(lambda: arena.jobs.get(rescored).state == "finished", "the rescore job")
        page.goto(f"{url}/tracks/scenes")
        board = page.locator("#track-leaderboard tr[data-team=good_team]")
        assert board.count() == 1

        arena.jobs.stop()  # hold the queue so the next upload waits
        queued = good.submit_dataset("scenes", scenes["prior"])
        page.goto(f"{url}/organiser/jobs")
        page.click(f"tr[data-job='{queued['job_id']}'] form[action$='/cancel'] button")
        assert page.locator(f"tr[data-job='{queued['job_id']}'] td.job-state").inner_text() == "cancelled"
        page.screenshot(path=str(artifacts / "console_jobs.png"), full_page=True)

        page.goto(f"{url}/organiser/phases")
        page.fill("#open-phase input[name=seed]", "2027")
        page.fill("#open-phase input[name=name]", "final phase")
        page.click("#open-phase button")
        assert "final phase" in page.inner_text("#phases")
        page.screenshot(path=str(artifacts / "console_phases.png"), full_page=True)

        page.goto(f"{url}/organiser/audit")
        audit = page.inner_text("#audit")
        for action in ("validate", "refuse", "disqualify", "restore", "rescore", "cancel_job", "open_phase"):
            assert action in audit, action
        page.screenshot(path=str(artifacts / "console_audit.png"), full_page=True)
        page.goto(f"{url}/changes")
        changes = page.inner_text("#changes")
        for text in ("validate", "refuse", "disqualify", "rescore", "cancel_job", "open_phase",
                     "trained on the test images", "the budget was fixed", "final phase"):
            assert text in changes, text
        assert "one account per lab" not in changes  # a refusal is between the team and the organisers
    arena.engine.dispose()
    assert (artifacts / "console_teams.png").stat().st_size > 5000
