"""A real headless Chromium registers a team, logs in, submits a CSV and finds it on the leaderboard."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datarena.challenge.arena import Arena
from datarena.http.runner import BackgroundServer
from tests.conftest import fast_challenge, install_phase_cache

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield b
        b.close()


def test_register_submit_and_see_leaderboard(browser, tmp_path, phase_data_cache, artifacts):
    install_phase_cache(phase_data_cache, tmp_path)
    arena = Arena(fast_challenge(tmp_path))
    arena.start(progress=False)
    y = arena.labels.exercise(arena.phases()[-1], "00").hidden()[0]
    csv_path = tmp_path / "answer.csv"
    csv_path.write_text("\n".join(map(str, y.tolist())) + "\n")
    with BackgroundServer(arena) as url:
        page = browser.new_page()
        page.goto(f"{url}/register")
        page.fill("#name", "browser_team")
        page.fill("#password", "a long enough password")
        page.click("#register-form button[type=submit]")
        assert "Team browser_team is registered" in page.inner_text("#message")
        arena.validate_team("browser_team")  # the organiser's step

        page.goto(f"{url}/login")
        page.fill("#name", "browser_team")
        page.fill("#password", "a long enough password")
        page.click("#login-form button[type=submit]")
        assert page.inner_text("#session-team") == "browser_team"

        page.goto(f"{url}/exercises/00")
        page.set_input_files("#file", str(csv_path))
        page.click("#submit-form button[type=submit]")
        assert "accuracy 1.000" in page.inner_text("#message")

        page.goto(f"{url}/")
        row = page.locator("tr[data-team=browser_team]")
        assert row.count() == 1
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == "browser_team" and cells[3] == "1.000"
        page.screenshot(path=str(artifacts / "leaderboard.png"), full_page=True)

        page.goto(f"{url}/exercises/00")
        page.set_input_files("#file", str(csv_path))
        page.click("#submit-form button[type=submit]")
        assert "already submitted" in page.inner_text("#message")
    assert (artifacts / "leaderboard.png").stat().st_size > 5000


def test_upload_a_dataset_and_see_its_score(browser, tmp_path, artifacts):
    """The dataset track in a real browser: log in, upload through the form, wait, see the leaderboard."""
    import time

    from datarena.scenes.grammar import load_grammar
    from datarena.scenes.writers import write_scenes
    from tests.http.test_dataset_track import FAST

    test_set = write_scenes(load_grammar("digit_scenes_target"), 4, 5, tmp_path / "test", fmt="voc", show_progress=False)
    mine = write_scenes(load_grammar("digit_scenes"), 8, 0, tmp_path / "mine", fmt="voc", show_progress=False)
    archive = shutil.make_archive(str(tmp_path / "mine"), "zip", root_dir=mine)
    arena = Arena(fast_challenge(tmp_path / "data", exercises=None, tracks=[
        {"id": "scenes", "kind": "dataset", "title": "Digit scenes", "classes": "digits", "image_size": [64, 64],
         "budget": "digit_scenes", "budget_overrides": FAST, "test_set": str(test_set)}]))
    arena.start(progress=False)
    arena.register("web_team", "a long enough password")
    arena.validate_team("web_team")
    with BackgroundServer(arena) as url:
        page = browser.new_page()
        page.goto(f"{url}/login")
        page.fill("#name", "web_team")
        page.fill("#password", "a long enough password")
        page.click("#login-form button[type=submit]")
        page.goto(f"{url}/tracks/scenes")
        page.set_input_files("#file", archive)
        page.fill("#seed", "0")
        page.fill("#method", "prior grammar, 8 scenes")
        page.click("#dataset-form button[type=submit]")
        assert page.url.endswith("/tracks/scenes")
        deadline = time.time() + 240
        while page.locator("#my-submissions tr[data-state=finished]").count() == 0:
            assert time.time() < deadline, page.inner_text("#my-submissions")
            assert page.locator("#my-submissions tr[data-state=failed]").count() == 0, page.inner_text("#my-submissions")
            time.sleep(1.0)
            page.reload()
        row = page.locator("#track-leaderboard tr[data-team=web_team]")
        assert row.count() == 1
        miou = float(row.locator("td.miou").inner_text())
        assert 0.0 <= miou <= 1.0
        low, high = (float(x) for x in row.locator("td.interval").inner_text().strip("[]").split(","))
        assert low <= miou <= high  # every score shown with its 95 % interval
        assert "share a rank" in page.inner_text("body")
        assert page.locator("#my-submissions img").count() == 1  # overlays on the team's own images
        page.screenshot(path=str(artifacts / "dataset_track.png"), full_page=True)
    assert (artifacts / "dataset_track.png").stat().st_size > 5000
    arena.engine.dispose()
