"""The organiser console over real HTTP: organiser accounts apart from teams, every console route
closed to teams and anonymous clients, CSRF on every form, login limits and TOTP, team actions with
their audit rows, and the public /changes record."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pyotp
import pytest
import yaml

from datarena.client import ArenaClient, ArenaError
from datarena.errors import Unauthorized
from tests.conftest import fast_challenge, install_phase_cache, serving

PASSWORD = "correct horse battery"
ORG_PASSWORD = "organiser passphrase 1"


@pytest.fixture(scope="module")
def served(tmp_path_factory, phase_data_cache):
    data_dir = tmp_path_factory.mktemp("console")
    install_phase_cache(phase_data_cache, data_dir)
    with serving("sqlite", lambda db_url: fast_challenge(data_dir, db_url, login_failures_allowed=5)) as (arena, url):
        arena.create_organiser("olga", ORG_PASSWORD)
        yield arena, url


def new_team(arena, url, validated=True) -> ArenaClient:
    name = f"t{uuid.uuid4().hex[:10]}"
    client = ArenaClient(url, name, PASSWORD)
    client.register()
    if validated:
        arena.validate_team(name)
    return client


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def organiser_client(url: str, name: str = "olga", password: str = ORG_PASSWORD, code: str = "") -> httpx.Client:
    c = httpx.Client(base_url=url, follow_redirects=False)
    token = csrf_of(c.get("/organiser/login").text)
    r = c.post("/organiser/login", data={"name": name, "password": password, "code": code, "csrf_token": token})
    assert r.status_code == 303, r.text
    return c


def console_routes(app_routes) -> list[tuple[str, str]]:
    out = []
    for route in app_routes:
        path = getattr(route, "path", "")
        if not path.startswith("/organiser"):
            continue
        for method in sorted(getattr(route, "methods", None) or []):
            if method in ("GET", "POST") and path != "/organiser/login":
                out.append((method, re.sub(r"\{[^}]+\}", "1", path)))
    return out


def test_every_console_route_refuses_teams_and_anonymous_clients(served):
    arena, url = served
    from datarena.http.app import create_app

    routes = console_routes(create_app(arena).routes)
    assert len(routes) >= 7, routes  # overview, teams, team actions, audit, exports, logout
    team = new_team(arena, url)
    token = team.token
    login = httpx.Client(base_url=url)
    csrf = csrf_of(login.get("/login").text)
    assert login.post("/login", data={"name": team.username, "password": PASSWORD, "csrf_token": csrf}).status_code in (200, 303)
    assert login.cookies.get("datarena_session")
    callers = {"anonymous": httpx.Client(base_url=url), "team token": httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}),
               "team session": login}
    for who, client in callers.items():
        for method, path in routes:
            r = client.request(method, path, data={"csrf_token": "x", "reason": "r"}, follow_redirects=False)
            ok = (r.status_code in (401, 403)) or (r.status_code == 303 and r.headers["location"] == "/organiser/login")
            assert ok, (who, method, path, r.status_code, r.text[:200])
            assert "session-organiser" not in r.text


def test_every_console_form_needs_its_csrf_token(served):
    arena, url = served
    from datarena.http.app import create_app

    c = organiser_client(url)
    team = new_team(arena, url, validated=False)
    posts = [p for m, p in console_routes(create_app(arena).routes) if m == "POST"]
    assert any(p.startswith("/organiser/teams/") for p in posts)
    for path in posts:
        real = path.replace("/teams/1/1", f"/teams/{team.username}/validate")
        for data in ({}, {"csrf_token": "forged"}):
            r = c.post(real, data={**data, "reason": "r"})
            assert r.status_code == 403 and "CSRF" in r.json()["detail"], (path, r.status_code)
    # a token of another session (a team's page) does not pass either
    other = httpx.Client(base_url=url)
    foreign = csrf_of(other.get("/register").text)
    r = c.post(f"/organiser/teams/{team.username}/validate", data={"csrf_token": foreign})
    assert r.status_code == 403
    assert arena.teams_table(team.username)[0]["state"] == "pending"  # nothing happened


def test_organiser_logins_are_limited_and_a_team_password_opens_nothing(served):
    arena, url = served
    team = new_team(arena, url)
    c = httpx.Client(base_url=url)
    token = csrf_of(c.get("/organiser/login").text)
    r = c.post("/organiser/login", data={"name": team.username, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401  # a team is not an organiser
    codes = [c.post("/organiser/login", data={"name": "olga", "password": "wrong password!", "csrf_token": token}).status_code
             for _ in range(7)]
    assert codes[:4] == [401] * 4 and codes[-1] == 429, codes
    r = c.post("/organiser/login", data={"name": "olga", "password": ORG_PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and "wait" in r.json()["detail"]  # locked even with the right password
    arena.limiter._fails.clear()


def test_totp_second_factor_and_no_replay(served):
    arena, url = served
    uri = arena.create_organiser("tina", ORG_PASSWORD, totp=True)
    assert uri.startswith("otpauth://totp/") and "secret=" in uri
    totp = pyotp.parse_uri(uri)
    c = httpx.Client(base_url=url)
    token = csrf_of(c.get("/organiser/login").text)
    no_code = c.post("/organiser/login", data={"name": "tina", "password": ORG_PASSWORD, "csrf_token": token})
    assert no_code.status_code == 401
    code = totp.now()
    assert organiser_client(url, "tina", ORG_PASSWORD, code).get("/organiser").status_code == 200
    replay = c.post("/organiser/login", data={"name": "tina", "password": ORG_PASSWORD, "code": code, "csrf_token": token})
    assert replay.status_code == 401
    arena.limiter._fails.clear()


def test_team_decisions_from_the_console_are_enforced_audited_and_public(served):
    arena, url = served
    c = organiser_client(url)
    keep, refuse, cheat = (new_team(arena, url, validated=False) for _ in range(3))
    page = c.get("/organiser/teams", params={"state": "pending"})
    assert page.status_code == 200 and keep.username in page.text and "session-organiser" in page.text
    csrf = csrf_of(page.text)

    def act(team, action, reason=""):
        r = c.post(f"/organiser/teams/{team.username}/{action}", data={"csrf_token": csrf, "reason": reason})
        assert r.status_code == 303, r.text
        return r

    act(keep, "validate")
    act(cheat, "validate")
    r = c.post(f"/organiser/teams/{refuse.username}/refuse", data={"csrf_token": csrf, "reason": ""})
    assert r.status_code == 422 and "say why" in r.json()["detail"]
    act(refuse, "refuse", "duplicate of team alpha")
    with pytest.raises(ArenaError) as e:
        refuse.reveal("00", 0)
    assert "duplicate of team alpha" in str(e.value)

    # a disabled team cannot reveal, submit or log in, and leaves the board until enabled
    y_target, _ = arena.labels.exercise(arena.current_phase(), "00").hidden()
    cheat.submit("00", y_target)
    assert cheat.username in str(cheat.leaderboard())
    act(cheat, "disable", "shared labels with another team")
    with pytest.raises(ArenaError) as e:
        cheat.reveal("01", 0)
    assert "disabled" in str(e.value)
    with pytest.raises(ArenaError):
        ArenaClient(url, cheat.username, PASSWORD).login()
    board = httpx.get(f"{url}/api/leaderboard").json()
    assert cheat.username not in str(board)
    act(cheat, "enable", "appeal accepted")
    assert cheat.username in str(httpx.get(f"{url}/api/leaderboard").json())
    keep.reveal("00", 1)  # a validated team works
    old_token = keep.token
    act(keep, "end_sessions")
    with pytest.raises(Unauthorized):
        arena.team_for_token(old_token)

    audit = c.get("/organiser/audit").text
    for who, action in ((keep, "validate"), (refuse, "refuse"), (cheat, "disable"), (cheat, "enable"),
                        (keep, "end_sessions")):
        assert re.search(rf"organiser:olga</td><td>{action}</td><td>team:{who.username}<", audit), action
    changes = httpx.get(f"{url}/api/changes").json()
    public = [(r["action"], r["target"], r["reason"]) for r in changes]
    assert ("disable", f"team:{cheat.username}", "shared labels with another team") in public
    assert ("enable", f"team:{cheat.username}", "appeal accepted") in public
    refusal = [r for r in changes if r["target"] == f"team:{refuse.username}"]
    assert [r["action"] for r in refusal] == ["refuse"]  # public that it happened; its reason is the team's
    assert "duplicate of team alpha" not in str(changes) and "sent to the team" in refusal[0]["reason"]
    assert all("actor" not in r for r in changes)
    page = httpx.get(f"{url}/changes").text
    assert "shared labels with another team" in page
    csv_text = c.get("/organiser/export/audit.csv").text
    assert csv_text.splitlines()[0] == "id,at,actor,action,target,reason,public" and "appeal accepted" in csv_text
    results = c.get("/organiser/export/results.csv")
    assert results.status_code == 200 and cheat.username in results.text
    overview = c.get("/organiser").text
    assert "queued" in overview and "Recent submissions" in overview


def test_the_cli_twins_record_the_same_audit_rows(served, tmp_path):
    arena, url = served
    team = new_team(arena, url)
    spec = arena.spec
    env_args = ["--data-dir", spec.data_dir]
    challenge = tmp_path / "c.yaml"
    challenge.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    run = [str(Path(sys.executable).with_name("datarena")), "admin"]
    out = subprocess.run([*run, "disable-team", team.username, "--reason", "from the shell", "--challenge", str(challenge), *env_args],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "disabled" in out.stdout
    row = arena.audit_entries()[0]
    assert (row["actor"], row["action"], row["target"], row["reason"]) == ("cli", "disable", f"team:{team.username}", "from the shell")
    created = subprocess.run([*run, "create-organiser", "carl", "--password-stdin", "--challenge", str(challenge), *env_args],
                             input=ORG_PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    assert organiser_client(url, "carl").get("/organiser").status_code == 200


def test_a_labels_submission_is_disqualified_restored_and_rescored_from_the_console(served):
    arena, url = served
    c = organiser_client(url)
    t = new_team(arena, url)
    y_target, _ = arena.labels.exercise(arena.current_phase(), "01").hidden()
    sub = t.submit("01", y_target)
    page = c.get("/organiser/tracks/labels/submissions", params={"team": t.username})
    assert page.status_code == 200 and f'data-submission="{sub["submission_id"]}"' in page.text
    csrf = csrf_of(page.text)
    base = f"/organiser/tracks/labels/submissions/{sub['submission_id']}"
    assert c.post(f"{base}/disqualify", data={"csrf_token": csrf, "reason": "labels copied from team x"}).status_code == 303
    board = httpx.get(f"{url}/api/leaderboard").json()
    cell = next(r for r in board["rows"] if r["team"] == t.username)["exercises"]["01"]
    assert cell["submitted"] is False  # the default score counts
    assert {"team": t.username, "submission": sub["submission_id"], "exercise": "01",
            "reason": "labels copied from team x"} in board["disqualified"]
    assert "labels copied from team x" in httpx.get(f"{url}/").text
    assert c.post(f"{base}/restore", data={"csrf_token": csrf}).status_code == 303
    assert c.post(f"{base}/rescore", data={"csrf_token": csrf}).status_code == 303
    cell = next(r for r in httpx.get(f"{url}/api/leaderboard").json()["rows"] if r["team"] == t.username)["exercises"]["01"]
    assert cell == {"score": 1.0, "submitted": True}
    rows = [(r["action"], r["target"]) for r in arena.audit_entries(limit=3)]
    assert rows == [("rescore", f"submission:{sub['submission_id']} (labels)"),
                    ("restore", f"submission:{sub['submission_id']} (labels)"),
                    ("disqualify", f"submission:{sub['submission_id']} (labels)")]


def test_organisers_and_organiser_jobs_from_the_console(served):
    arena, url = served
    c = organiser_client(url)
    page = c.get("/organiser/organisers")
    assert page.status_code == 200 and "olga" in page.text
    csrf = csrf_of(page.text)
    made = c.post("/organiser/organisers", data={"csrf_token": csrf, "name": "otto", "password": ORG_PASSWORD, "totp": "1"})
    assert made.status_code == 201 and "otpauth://totp/" in made.text
    uri = re.search(r'id="totp-uri">([^<]+)<', made.text).group(1).replace("&amp;", "&")
    assert organiser_client(url, "otto", ORG_PASSWORD, pyotp.parse_uri(uri).now()).get("/organiser").status_code == 200
    bad = c.post("/organiser/jobs/submit", data={"csrf_token": csrf, "kind": "no_such_kind", "payload": "{}"})
    assert bad.status_code == 422 and "unknown job kind" in bad.json()["detail"]
    bad = c.post("/organiser/jobs/submit", data={"csrf_token": csrf, "kind": "sleep", "payload": "[1"})
    assert bad.status_code == 422 and "not JSON" in bad.json()["detail"]
    r = c.post("/organiser/jobs/submit", data={"csrf_token": csrf, "kind": "noop", "payload": "{}"})
    assert r.status_code == 303
    rows = arena.audit_entries(limit=2)
    assert rows[0]["action"] == "submit_job" and rows[1]["action"] == "create_organiser"
    assert rows[1]["actor"] == "organiser:olga" and rows[1]["target"] == "organiser:otto"
    assert '<meta http-equiv="refresh"' in c.get("/organiser/jobs").text  # the queue page follows itself
