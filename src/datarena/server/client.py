"""ArenaClient: a participant's Python client for a datarena challenge server."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import numpy as np

from datarena.errors import DatarenaError


class ArenaError(DatarenaError):
    """The server refused a request; `status` is the HTTP code, the message says what to fix."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status


class ArenaClient:
    """Talk to a challenge server as one team: download, reveal, submit, leaderboard."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.username, self.password = username, password
        self.http = httpx.Client(base_url=self.url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ArenaClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _check(resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise ArenaError(resp.status_code, str(detail))
        return resp

    def register(self) -> dict:
        return self._check(self.http.post("/api/teams", json={"name": self.username, "password": self.password})).json()

    @property
    def token(self) -> str:
        if self._token is None:
            resp = self._check(self.http.post("/api/token", json={"name": self.username, "password": self.password}))
            self._token = resp.json()["token"]
        return self._token

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}

    def exercises(self) -> list[dict]:
        return self._check(self.http.get("/api/exercises")).json()["exercises"]

    def download(self, exercise_id: str | int, dest: str | Path) -> Path:
        """Fetch an exercise's public files (one zip) and unpack them into dest/<id>_<name>/."""
        resp = self._check(self.http.get(f"/api/exercises/{exercise_id}/download.zip"))
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
            names = zf.namelist()
            for n in names:
                if n.startswith("/") or ".." in Path(n).parts:
                    raise ArenaError(500, f"refusing unsafe path {n!r} in the archive")
            zf.extractall(dest)
        return dest / Path(names[0]).parts[0]

    def reveal(self, exercise_id: str | int, datum_id: int) -> dict:
        resp = self.http.post(f"/api/exercises/{exercise_id}/reveal", json={"datum_id": int(datum_id)}, headers=self._auth())
        return self._check(resp).json()

    def reveals(self, exercise_id: str | int) -> list[dict]:
        return self._check(self.http.get(f"/api/exercises/{exercise_id}/reveals", headers=self._auth())).json()["reveals"]

    def submit(self, exercise_id: str | int, labels) -> dict:
        body = "\n".join(str(int(v)) for v in np.asarray(labels).ravel()) + "\n"
        resp = self.http.post(
            f"/api/exercises/{exercise_id}/submission",
            files={"file": ("submission.csv", body.encode(), "text/csv")},
            headers=self._auth(),
        )
        return self._check(resp).json()

    def leaderboard(self, phase: int | None = None) -> dict:
        params = {"phase": phase} if phase else None
        return self._check(self.http.get("/api/leaderboard", params=params)).json()


class ServerOracle:
    """Reveals target labels through a challenge server's API (the solver's 5-label budget)."""

    def __init__(self, client: ArenaClient, exercise_id: str | int, budget: int = 5):
        self.client, self.exercise_id, self.budget = client, exercise_id, budget
        self.revealed: dict[int, int] = {}

    def reveal(self, datum_id: int) -> int:
        from datarena.errors import BudgetError

        try:
            answer = self.client.reveal(self.exercise_id, int(datum_id))
        except ArenaError as err:
            if err.status == 409:
                raise BudgetError(str(err)) from None
            raise
        self.revealed[int(datum_id)] = int(answer["label"])
        return int(answer["label"])
