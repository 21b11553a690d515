"""ArenaClient: a participant's Python client for a datarena challenge server."""

from __future__ import annotations

import io
import os
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

    def login(self) -> str:
        """A fresh token (tokens expire after the challenge's session lifetime, 30 days by default)."""
        self._token = None
        return self.token

    def logout(self) -> None:
        """Revoke this client's token on the server."""
        if self._token is not None:
            self._check(self.http.delete("/api/token", headers=self._auth()))
            self._token = None

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


    # ---------------------------------------------------------------- dataset tracks

    def submit_dataset(self, track: str, path: str | Path, seed: str | int | None = None, checksum: str | None = None,
                       method: str | None = None, progress=None) -> dict:
        """Pack a dataset (a VOC directory is zipped; an .npz/.zip/.tar is sent as is) and upload it.

        `progress(sent_bytes, total_bytes)` is called while uploading. Returns the submission id
        and the id of its scoring job (the answer comes at once; the score comes later).
        """
        import tempfile

        path = Path(path)
        tmp = None
        if path.is_dir():
            tmp = tempfile.NamedTemporaryFile(suffix=".zip", delete=False)
            tmp.close()
            with zipfile.ZipFile(tmp.name, "w", zipfile.ZIP_STORED) as zf:  # images are compressed already
                for f in sorted(path.rglob("*")):
                    if f.is_file():
                        zf.write(f, f"{path.name}/{f.relative_to(path)}")
            archive, name = Path(tmp.name), f"{path.name}.zip"
        else:
            archive, name = path, path.name
        try:
            total = archive.stat().st_size

            def chunks():
                sent = 0
                with open(archive, "rb") as fh:
                    while block := fh.read(1 << 20):
                        sent += len(block)
                        if progress:
                            progress(sent, total)
                        yield block

            fields = {k: str(v) for k, v in (("seed", seed), ("checksum", checksum), ("method", method)) if v is not None}
            boundary = f"datarena{os.urandom(8).hex()}"
            body = _multipart_stream(boundary, fields, "file", name, chunks())
            resp = self.http.post(f"/api/tracks/{track}/submissions", content=body, timeout=None,
                                  headers={**self._auth(), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        finally:
            if tmp is not None:
                os.unlink(tmp.name)
        return self._check(resp).json()

    def dataset_submissions(self, track: str) -> list[dict]:
        return self._check(self.http.get(f"/api/tracks/{track}/submissions", headers=self._auth())).json()["submissions"]

    def job(self, job_id: int) -> dict:
        return self._check(self.http.get(f"/api/jobs/{job_id}", headers=self._auth())).json()

    def wait_for_job(self, job_id: int, timeout: float = 3600.0, poll_s: float = 1.0, on_update=None) -> dict:
        """Poll a job until it is finished, failed or cancelled; `on_update(job)` sees every answer."""
        import time

        deadline = time.time() + timeout
        while True:
            job = self.job(job_id)
            if on_update:
                on_update(job)
            if job["state"] in ("finished", "failed", "cancelled"):
                return job
            if time.time() > deadline:
                raise ArenaError(408, f"job {job_id} still {job['state']} after {timeout:g} s")
            time.sleep(poll_s)

    def track_leaderboard(self, track: str) -> dict:
        return self._check(self.http.get(f"/api/tracks/{track}/leaderboard")).json()


def _multipart_stream(boundary: str, fields: dict[str, str], file_field: str, filename: str, chunks):
    """A multipart/form-data body generated piece by piece (the file is never held in memory)."""
    for key, value in fields.items():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n\r\n{value}\r\n").encode()
    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{filename}\"\r\n"
           f"Content-Type: application/octet-stream\r\n\r\n").encode()
    yield from chunks
    yield f"\r\n--{boundary}--\r\n".encode()


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
