"""The challenge server over real HTTP, on SQLite and on PostgreSQL."""

from __future__ import annotations

import concurrent.futures as cf
import csv
import io
import uuid
import zipfile

import httpx
import numpy as np
import pytest

from datarena.client import ArenaClient, ArenaError

PASSWORD = "correct horse battery"


def new_team(arena, url, validated=True) -> ArenaClient:
    name = f"t{uuid.uuid4().hex[:10]}"
    client = ArenaClient(url, name, PASSWORD)
    client.register()
    if validated:
        arena.validate_team(name)
    return client


def hidden(arena, ex):
    with arena.Session() as s:
        phase = arena.current_phase(s)
    return arena.labels.exercise(phase, ex).hidden()


def as_csv(labels) -> bytes:
    return ("\n".join(str(int(v)) for v in labels) + "\n").encode()


# ---------------------------------------------------------------- teams and tokens


def test_register_validate_and_errors(backend):
    arena, url = backend
    name = f"t{uuid.uuid4().hex[:8]}"
    r = httpx.post(f"{url}/api/teams", json={"name": name, "password": PASSWORD})
    assert r.status_code == 201 and r.json()["validated"] is False
    again = httpx.post(f"{url}/api/teams", json={"name": name, "password": PASSWORD})
    assert again.status_code == 409 and "taken" in again.json()["detail"]
    assert httpx.post(f"{url}/api/teams", json={"name": "x y!", "password": PASSWORD}).status_code == 422
    short = httpx.post(f"{url}/api/teams", json={"name": "okname", "password": "short"})
    assert short.status_code == 422 and "8-256" in short.json()["detail"]
    assert httpx.post(f"{url}/api/teams", content=b"not json").status_code == 422
    # password is stored as an argon2 hash, never in clear
    with arena.Session() as s:
        from sqlalchemy import select

        from datarena.challenge.models import Team

        stored = s.scalars(select(Team.password_hash).where(Team.name == name)).one()
    assert stored.startswith("$argon2") and PASSWORD not in stored


def test_wrong_credentials_401(backend):
    arena, url = backend
    c = new_team(arena, url)
    bad = httpx.post(f"{url}/api/token", json={"name": c.username, "password": "wrong password"})
    assert bad.status_code == 401 and "wrong team name or password" in bad.json()["detail"]
    nobody = httpx.post(f"{url}/api/token", json={"name": "nobody_here", "password": PASSWORD})
    assert nobody.status_code == 401
    r = httpx.post(f"{url}/api/exercises/01/reveal", json={"datum_id": 0}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert httpx.post(f"{url}/api/exercises/01/reveal", json={"datum_id": 0}).status_code == 401
    form = httpx.post(f"{url}/reveal/", data={"username": c.username, "password": "bad password", "exercise_id": 1, "datum_id": 3})
    assert form.status_code == 401


# ---------------------------------------------------------------- reveals


def test_reveal_budget_semantics(backend):
    arena, url = backend
    c = new_team(arena, url, validated=False)
    with pytest.raises(ArenaError) as e:
        c.reveal("01", 0)
    assert e.value.status == 403 and "not validated" in str(e.value)
    arena.validate_team(c.username)
    y, _ = hidden(arena, "01")
    first = c.reveal("01", 4)
    assert first == {"exercise_id": 1, "datum_id": 4, "label": int(y[4]), "previously revealed": []}
    second = c.reveal(1, 12)  # integer id as in the seed document
    assert second["previously revealed"] == [4] and second["label"] == int(y[12])
    again = c.reveal("01", 4)  # free
    assert again["previously revealed"] == [12]
    for d in (20, 21, 22):
        c.reveal("01", d)
    with pytest.raises(ArenaError) as e:
        c.reveal("01", 30)
    assert e.value.status == 409 and "budget used up" in str(e.value)
    assert c.reveal("01", 22)["label"] == int(y[22])  # re-reveal still works after the budget is spent
    assert [r["datum_id"] for r in c.reveals("01")] == [4, 12, 20, 21, 22]
    # a different exercise has its own budget
    assert c.reveal("04", 0)["previously revealed"] == []


def test_reveal_rejections_use_no_budget(backend):
    arena, url = backend
    c = new_team(arena, url)
    n = arena.labels.exercise(arena.phases()[-1], "01").n_target
    for ex, datum, status in (("77", 0, 404), ("01", n, 404), ("01", -1, 404), ("01", "abc", 422)):
        r = httpx.post(f"{url}/api/exercises/{ex}/reveal", json={"datum_id": datum}, headers={"Authorization": f"Bearer {c.token}"})
        assert r.status_code == status, (ex, datum, r.text)
        assert r.json()["detail"]
    r = httpx.post(f"{url}/api/exercises/01/reveal", json={}, headers={"Authorization": f"Bearer {c.token}"})
    assert r.status_code == 422 and "datum_id" in r.json()["detail"]
    assert c.reveals("01") == []
    for d in range(5):
        c.reveal("01", d)


def test_form_reveal_endpoint_as_in_seed_document(backend):
    arena, url = backend
    c = new_team(arena, url)
    y, _ = hidden(arena, "00")
    r = httpx.post(f"{url}/reveal/", data={"username": c.username, "password": PASSWORD, "exercise_id": 0, "datum_id": 4})
    assert r.status_code == 200
    assert r.json() == {"exercise_id": 0, "datum_id": 4, "label": int(y[4]), "previously revealed": []}
    # curl -F sends multipart
    r = httpx.post(f"{url}/reveal/", files={k: (None, str(v)) for k, v in
                   {"username": c.username, "password": PASSWORD, "exercise_id": 0, "datum_id": 12}.items()})
    assert r.json()["previously revealed"] == [4]
    missing = httpx.post(f"{url}/reveal/", data={"username": c.username})
    assert missing.status_code == 422 and "password" in missing.json()["detail"]


def test_50_concurrent_reveals_yield_exactly_5(backend):
    arena, url = backend
    c = new_team(arena, url)
    token = c.token

    def one(d):
        return httpx.post(f"{url}/api/exercises/01/reveal", json={"datum_id": d},
                          headers={"Authorization": f"Bearer {token}"}, timeout=60).status_code

    with cf.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(one, range(50)))
    assert codes.count(200) == 5 and codes.count(409) == 45, codes
    assert len(c.reveals("01")) == 5


# ---------------------------------------------------------------- submissions


def test_submission_errors_then_one_accepted(backend):
    arena, url = backend
    c = new_team(arena, url)
    y, groups = hidden(arena, "01")
    n = len(y)
    headers = {"Authorization": f"Bearer {c.token}"}

    def post(body: bytes):
        return httpx.post(f"{url}/api/exercises/01/submission", files={"file": ("s.csv", body, "text/csv")}, headers=headers)

    cases = [
        (as_csv(y[:-1]), 422, f"expected {n} labels"),
        (b"label\n" + as_csv(y[1:]), 422, "header"),
        (b"0\n" * (n - 1) + b"0.5\n", 422, "labels must be integers"),
        ("".join(f"{float(v)}\n" for v in y).encode(), 422, "labels must be integers: line 1 holds"),
        (as_csv(np.full(n, 7)), 422, "not classes"),
        (b"", 422, "empty"),
        (b"".join(f"{i},{v}\n".encode() for i, v in enumerate(y)), 422, "index"),
        (b"0\n" * (2 << 20), 413, "larger"),
    ]
    for body, status, needle in cases:
        r = post(body)
        assert r.status_code == status, (needle, r.text[:200])
        assert needle in r.json()["detail"], r.json()
    pred = y.copy()
    pred[:10] = 1 - pred[:10]
    ok = post(as_csv(pred))
    assert ok.status_code == 201, ok.text
    assert ok.json()["accuracy"] == pytest.approx(1 - 10 / n)
    second = post(as_csv(y))
    assert second.status_code == 409 and "already submitted" in second.json()["detail"]


def test_unvalidated_team_cannot_submit(backend):
    arena, url = backend
    c = new_team(arena, url, validated=False)
    with pytest.raises(ArenaError) as e:
        c.submit("00", np.zeros(500, int))
    assert e.value.status == 403


def test_10_concurrent_submissions_one_accepted(backend):
    arena, url = backend
    c = new_team(arena, url)
    y, _ = hidden(arena, "04")
    token = c.token

    def one(_):
        return httpx.post(f"{url}/api/exercises/04/submission", content=as_csv(y),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"}, timeout=60).status_code

    with cf.ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(one, range(10)))
    assert codes.count(201) == 1 and codes.count(409) == 9, codes


# ---------------------------------------------------------------- leaderboard, files, privacy


def test_leaderboard_totals_with_default_scores(backend):
    arena, url = backend
    c = new_team(arena, url)
    y, _ = hidden(arena, "00")
    pred = y.copy()
    pred[: len(y) // 4] = 1 - pred[: len(y) // 4]
    c.submit("00", pred)
    board = c.leaderboard()
    row = next(r for r in board["rows"] if r["team"] == c.username)
    pts = {e["id"]: e for e in board["exercises"]}
    expected = pts["00"]["points"] * 0.75 + sum(e["points"] * e["default_score"] for k, e in pts.items() if k != "00")
    assert row["total"] == pytest.approx(expected)
    assert row["exercises"]["00"] == {"score": 0.75, "submitted": True}
    assert row["exercises"]["01"] == {"score": 0.8, "submitted": False}
    totals = [r["total"] for r in board["rows"]]
    assert totals == sorted(totals, reverse=True) and [r["rank"] for r in board["rows"]] == list(range(1, len(totals) + 1))
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and c.username in page.text


def test_downloads_are_public_only(backend, tmp_path):
    arena, url = backend
    c = new_team(arena, url)
    listing = httpx.get(f"{url}/api/exercises/01").json()
    assert set(listing["files"]) == {"X_labeled.npy", "y_labeled.npy", "X_unlabeled.npy", "X_val.npy", "meta.json", "preview.png"}
    r = httpx.get(f"{url}/api/exercises/01/files/X_val.npy")
    arr = np.load(io.BytesIO(r.content))
    assert arr.shape == (167, 1, 28, 56)
    for bad in ("y_val.npy", "groups_val.npy", "..%2F..%2Fprivate%2F01_mnist_cc%2Fy_val.npy"):
        assert httpx.get(f"{url}/api/exercises/01/files/{bad}").status_code == 404
    path = c.download("01", tmp_path)
    assert sorted(p.name for p in path.iterdir()) == sorted(listing["files"])
    z = zipfile.ZipFile(io.BytesIO(httpx.get(f"{url}/api/exercises/01/download.zip").content))
    assert not any("y_val" in n or "groups" in n for n in z.namelist())


def test_hidden_labels_and_other_reveals_never_leak(backend):
    arena, url = backend
    a, b = new_team(arena, url), new_team(arena, url)
    a.reveal("01", 7)
    assert b.reveals("01") == []
    y, _ = hidden(arena, "01")
    bodies = [httpx.get(f"{url}{p}").text for p in ("/api/exercises", "/api/exercises/01", "/api/leaderboard", "/", "/exercises/01")]
    label_string = ",".join(map(str, y.tolist()))
    assert not any(label_string in body or "y_val" in body for body in bodies)


def test_exercise_page_and_unknown_exercise(backend):
    arena, url = backend
    page = httpx.get(f"{url}/exercises/01", headers={"accept": "text/html"})
    assert page.status_code == 200 and "two features: left and right" in page.text and "X_val.npy" in page.text
    assert httpx.get(f"{url}/api/exercises/99").status_code == 404


def test_register_form_requires_csrf(backend):
    arena, url = backend
    r = httpx.post(f"{url}/register", data={"name": "csrfless", "password": PASSWORD}, headers={"accept": "text/html"})
    assert r.status_code == 403 and "CSRF" in r.text
    with httpx.Client(base_url=url) as browser:
        page = browser.get("/register")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        ok = browser.post("/register", data={"name": f"f{uuid.uuid4().hex[:6]}", "password": PASSWORD, "csrf_token": token})
        assert ok.status_code == 201


# ---------------------------------------------------------------- phases and organiser


def test_new_phase_keeps_old_results(backend):
    arena, url = backend
    c = new_team(arena, url)
    y, _ = hidden(arena, "00")
    c.submit("00", y)
    c.reveal("01", 1)
    old_phase = arena.phases()[-1]
    arena.open_phase(seed=7, name=f"phase-{uuid.uuid4().hex[:4]}", progress=False)
    board = c.leaderboard()
    new_phase = arena.phases()[-1]
    assert board["phase"]["id"] == new_phase.id and "seed" not in board["phase"]
    assert board["phase"]["commitment"] == new_phase.commitment != old_phase.commitment
    row = next(r for r in board["rows"] if r["team"] == c.username)
    assert row["exercises"]["00"]["submitted"] is False
    # new data, fresh budget, same team may submit again
    y7, _ = hidden(arena, "00")
    assert not np.array_equal(y7, y)
    assert c.reveals("01") == []
    assert c.submit("00", y7)["accuracy"] == 1.0
    old = c.leaderboard(phase=old_phase.id)
    assert next(r for r in old["rows"] if r["team"] == c.username)["exercises"]["00"]["score"] == 1.0
    rows = list(csv.DictReader(io.StringIO(arena.export_results())))
    mine = [r for r in rows if r["team"] == c.username]
    assert {r["phase"] for r in mine} == {old_phase.name, arena.phases()[-1].name}


def test_rate_limited_failed_logins(tmp_path, phase_data_cache):
    from datarena.challenge.arena import Arena
    from datarena.http.runner import BackgroundServer
    from tests.conftest import fast_challenge, install_phase_cache

    install_phase_cache(phase_data_cache, tmp_path)
    arena = Arena(fast_challenge(tmp_path, login_failures_allowed=3))
    arena.start(progress=False)
    with BackgroundServer(arena) as url:
        c = ArenaClient(url, "victim", PASSWORD)
        c.register()
        codes = [httpx.post(f"{url}/api/token", json={"name": "victim", "password": f"guess{i}xxxx"}).status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]
        locked = httpx.post(f"{url}/api/token", json={"name": "victim", "password": PASSWORD})
        assert locked.status_code == 429 and "Retry-After" in locked.headers
        form = httpx.post(f"{url}/reveal/", data={"username": "victim", "password": PASSWORD, "exercise_id": 1, "datum_id": 1})
        assert form.status_code == 429


def test_web_login_logout_and_phases(backend):
    arena, url = backend
    c = new_team(arena, url)
    first = httpx.get(f"{url}/api/phases").json()[0]
    assert "seed" not in first and len(first["commitment"]) == 64
    assert httpx.get(f"{url}/api/health").json()["status"] == "ok"
    with httpx.Client(base_url=url, headers={"accept": "text/html"}) as browser:
        token = browser.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
        bad = browser.post("/login", data={"name": c.username, "password": "wrong password", "csrf_token": token})
        assert bad.status_code == 401
        ok = browser.post("/login", data={"name": c.username, "password": PASSWORD, "csrf_token": token})
        assert ok.status_code == 303 and "datarena_session" in ok.cookies
        c.reveal("01", 3)
        page = browser.get("/exercises/01")
        assert 'id="reveals"' in page.text and 'id="submit-form"' in page.text
        stale = browser.post("/logout", data={"csrf_token": token})  # the token of the anonymous page
        assert stale.status_code == 403  # CSRF tokens are bound to the session they were issued in
        session = ok.cookies["datarena_session"]
        fresh = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        out = browser.post("/logout", data={"csrf_token": fresh})
        assert out.status_code == 303
        assert 'id="submit-form"' not in browser.get("/exercises/01").text
    # logout ended the session: its value no longer works as a bearer token either
    r = httpx.get(f"{url}/api/exercises/01/reveals", headers={"authorization": f"Bearer {session}"})
    assert r.status_code == 401


def test_hidden_labels_load_once_under_concurrent_first_calls(phase_data_cache):
    """Regression: a half-filled cache raised KeyError under load (500, then a reset connection)."""
    import threading

    from datarena.challenge.catalogue import Catalogue

    for _ in range(20):
        info = Catalogue(None).find(str(phase_data_cache), "01")
        barrier, errors, seen = threading.Barrier(16), [], []

        def first_call(info=info, barrier=barrier, errors=errors, seen=seen):
            barrier.wait()
            try:
                seen.append(info.hidden())
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=first_call) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(seen) == 16
        assert all(y is seen[0][0] for y, _ in seen)  # one load, shared
