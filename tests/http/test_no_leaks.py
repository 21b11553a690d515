"""A participant attacks a served challenge with only what the server serves.

The attacker registers, downloads every public file, reads every API answer and HTML page,
then tries three ways to recover hidden target labels:

1. every integer (and long hex string) it finds, as a seed for `generate_exercise`;
2. looking each target half (image halves, embedding blocks) up among the public arrays,
   exact or near-duplicate after the noise;
3. reading descriptions and metadata: a description that names the label's feature is
   applied; no private value (generator internals, seeds, secrets, notes) may appear.

On the leak-free server every attack must do no better than chance. Each of the three leaks
the issue found is put back in turn (`leak` parameter): the same attacker must then win,
which shows that the test would fail if the leak came back.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import zipfile
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import yaml

from datarena.challenge.arena import Arena
from datarena.http.runner import BackgroundServer
from datarena.underspec import exercises as ex_mod
from datarena.underspec.exercises import generate_exercise
from datarena.underspec.suite import load_suite
from tests.conftest import fast_challenge

PASSWORD = "correct horse battery"
SERVED = ["00", "01", "02", "03", "04", "06", "07", "12", "13", "23", "999"]
LEAK_EXERCISES = ["00", "01", "13"]
CHANCE_BOUND = 0.60  # 2 classes, ~170-500 target rows: an attack must stay at or below this
MIN_CLAIMS = 5  # a lookup attack "recovers" labels when it claims at least this many rows ...
OLD_DESCRIPTIONS = {  # the texts that used to be served (issue 17)
    "00": "2-D points; y = (x1 < 0). In the labeled set x2 > 0 exactly when y = 1.",
    "01": "Two digits side by side; the label is the left one.",
    "13": "Mysterious, too.",
}


# ---------------------------------------------------------------- what the participant sees


@dataclass
class Harvest:
    texts: list[str] = field(default_factory=list)  # every JSON/HTML/text body
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # exercise id -> file -> bytes

    def array(self, ex: str, name: str) -> np.ndarray:
        return np.load(io.BytesIO(self.files[ex][f"{name}.npy"]), allow_pickle=False)


def harvest(url: str) -> Harvest:
    h = Harvest()
    team = f"spy{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=url, timeout=60) as http:

        def get(path: str, **kw) -> httpx.Response:
            res = http.get(path, **kw)
            h.texts.append(res.text)
            return res

        http.post("/api/teams", json={"name": team, "password": PASSWORD})
        token = http.post("/api/token", json={"name": team, "password": PASSWORD}).json()["token"]
        auth = {"authorization": f"Bearer {token}"}
        for path in ("/api/health", "/api/leaderboard", "/openapi.json", "/", "/leaderboard", "/register",
                     "/login"):
            get(path, headers={"accept": "text/html"} if not path.startswith(("/api", "/openapi")) else {})
        for p in get("/api/phases").json():
            get(f"/api/phases/{p['id']}")
            get(f"/api/phases/{p['id']}/verification")
            get(f"/api/leaderboard?phase={p['id']}")
        listing = get("/api/exercises").json()
        for e in listing["exercises"]:
            ex = e["id"]
            get(f"/api/exercises/{ex}")
            get(f"/exercises/{ex}", headers={"accept": "text/html"})
            get(f"/api/exercises/{ex}/reveals", headers=auth)
            files = {}
            with zipfile.ZipFile(io.BytesIO(http.get(f"/api/exercises/{ex}/download.zip").content)) as zf:
                for name in zf.namelist():
                    files[name.split("/")[-1]] = zf.read(name)
            for name in e["files"]:
                files[name] = http.get(f"/api/exercises/{ex}/files/{name}").content
            h.texts.append(files["meta.json"].decode())
            h.files[ex] = files
    return h


# ---------------------------------------------------------------- attacks: each returns {exercise: (claims, correct)}


def candidate_seeds(texts: list[str]) -> set[int]:
    seeds = set()
    for t in texts:
        seeds |= {int(x) for x in re.findall(r"(?<![\d.])\d{1,25}(?![\d.])", t)}
        seeds |= {int(x, 16) for x in re.findall(r"\b[0-9a-fA-F]{16,64}\b", t)}
    return seeds


def seed_attack(h: Harvest, truth: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Regenerate the toy exercise with every integer found; a seed that gives the served X_val
    regenerates every exercise's hidden labels."""
    suite = load_suite()
    served_toy = h.array("00", "X_val")
    found = None
    for seed in sorted(candidate_seeds(h.texts)):
        if np.array_equal(generate_exercise(suite.get("00"), seed).X_target, served_toy):
            found = seed
            break
    out = {}
    for ex, y in truth.items():
        if found is None:
            out[ex] = (0, 0)
            continue
        pred = generate_exercise(suite.get(ex), found).y_target
        out[ex] = (len(y), int(np.sum(pred == y)))
    return out


def _blocks(h: Harvest, ex: str, name: str) -> np.ndarray | None:
    """(n, 2, d): the two halves of each row (image halves or the embedding's column blocks)."""
    X = h.array(ex, name)
    if X.ndim == 4 and X.shape[-1] == 2 * X.shape[-2]:  # (n, 1, 28, 56) side by side
        w = X.shape[-1] // 2
        return np.stack([X[..., :w].reshape(len(X), -1), X[..., w:].reshape(len(X), -1)], 1)
    if X.ndim == 2 and X.shape[1] == 198:  # 11 filters x 3 x 6: columns 0-2 left, 3-5 right
        F = X.reshape(len(X), 11, 3, 6)
        return np.stack([F[..., :3].reshape(len(X), -1), F[..., 3:].reshape(len(X), -1)], 1)
    return None


def lookup_attack(h: Harvest, truth: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Find each target half among the labeled rows' halves; a near-duplicate gives its class."""
    out = {}
    for ex, y in truth.items():
        tgt, lab = _blocks(h, ex, "X_val"), _blocks(h, ex, "X_labeled")
        if tgt is None:
            out[ex] = (0, 0)
            continue
        y_lab = h.array(ex, "y_labeled")
        refs = lab.reshape(-1, lab.shape[-1])  # every labeled half; its class is the row's label
        ref_y = np.repeat(y_lab, 2)
        r2 = (refs**2).sum(1)
        claims, correct = 0, 0
        for i in range(len(tgt)):
            for half in (0, 1):  # the left half first
                q = tgt[i, half]
                d = (q**2).sum() + r2 - 2 * refs @ q
                if d.min() < 0.01 * np.median(d):  # a noisy copy (~0.004), not a look-alike (>= 0.1)
                    claims += 1
                    correct += int(ref_y[d.argmin()] == y[i])
                    break
        out[ex] = (claims, correct)
    return out


def description_attack(h: Harvest, truth: dict[str, np.ndarray]) -> dict[str, tuple[int, int]]:
    """Apply any rule the served text states about the label."""
    listing = next(json.loads(t) for t in h.texts if t.startswith("{") and '"exercises"' in t and '"reveal_budget"' in t)
    out = {}
    for e in listing["exercises"]:
        ex, text, y = e["id"], e["description"], truth[e["id"]]
        pred = None
        if re.search(r"y\s*=\s*\(x1\s*<\s*0\)", text):
            pred = (h.array(ex, "X_val")[:, 0] < 0).astype(int)
        side = re.search(r"label is the (left|right)", text)
        if side:
            blocks_lab, blocks_tgt = _blocks(h, ex, "X_labeled"), _blocks(h, ex, "X_val")
            k = 0 if side.group(1) == "left" else 1
            y_lab = h.array(ex, "y_labeled")
            classes = np.unique(y_lab)
            cents = np.stack([blocks_lab[y_lab == c, k].mean(0) for c in classes])
            pred = classes[((blocks_tgt[:, k, None] - cents[None]) ** 2).sum(-1).argmin(1)]
        out[ex] = (0, 0) if pred is None else (len(y), int(np.sum(pred == y)))
    return out


def private_strings(arena: Arena) -> set[str]:
    """Values that describe how the answers were made; none may appear in anything served."""
    phase = arena.phases()[-1]
    found = set()
    for e in arena.labels.exercises(phase):
        meta = json.loads((e.private_dir / "meta.json").read_text())
        if meta["generator"] not in e.name:  # "mnist_cc" or "sum" are also the public names
            found.add(meta["generator"])
        found.add(str(meta["seed"]))
        if meta.get("notes"):
            found.add(meta["notes"])
        src = meta.get("source", {})
        found |= {w for w in src.get("caption_words", [])}
        if "trojan_rows" in src:
            found.add("trojan")
        if "embedding" in src:
            found.add(src["embedding"])
    secret = arena.server_secret().hex()
    found.add(secret)
    from datarena.challenge.phases import phase_secret

    found.add(phase_secret(arena.server_secret(), phase.number, phase.seed))
    return found


def disclosed(h: Harvest, private: set[str]) -> set[str]:
    everything = "\n".join(h.texts)
    return {p for p in private if re.search(rf"(?<![\w]){re.escape(p)}(?![\w])", everything)}


# ---------------------------------------------------------------- the leaks of issue 17, put back on demand


def _old_plan_images(source_labels, pool, classes, mix_rate, rng, *, shift=True, n_partners=0,
                     n_independent=0, partner_pool=None, class_map=None):
    """The old row plan: every pool image is a core, partners drawn from the whole pool."""
    plan = ex_mod.plan_rows(pool, source_labels[pool], classes, mix_rate, rng, shift=shift)
    partners = np.empty((len(plan.core), n_partners), dtype=np.int64)
    for j in range(n_partners):
        for c in np.unique(plan.spurious):
            rows = np.flatnonzero(plan.spurious == c)
            cands = pool[source_labels[pool] == c]
            partners[rows, j] = cands[rng.integers(len(cands), size=len(rows))]
    plan.partners = partners
    return plan


def serve(tmp_path, monkeypatch, leak: str | None, exercises: list[str]):
    over = {}
    if leak == "seed":  # data from the public phase seed, and the seed shown
        from datarena.challenge import phases

        monkeypatch.setattr(phases, "phase_secret", lambda server, number, seed: f"{seed:064x}")
        real_json = Arena.phase_json
        monkeypatch.setattr(Arena, "phase_json", lambda self, p: {**real_json(self, p), "seed": p.seed})
    elif leak == "reuse":
        monkeypatch.setattr(ex_mod, "plan_images", _old_plan_images)
    elif leak == "text":
        from importlib import resources

        suite = yaml.safe_load(resources.files("datarena.underspec").joinpath("suite.yaml").read_text())
        for e in suite["exercises"]:
            e["description"] = OLD_DESCRIPTIONS.get(e["id"], e["description"])
        (tmp_path / "old_suite.yaml").write_text(yaml.safe_dump(suite))
        over["suite"] = str(tmp_path / "old_suite.yaml")
    arena = Arena(fast_challenge(tmp_path / "data", exercises=[{"id": e} for e in exercises], **over))
    arena.start(progress=False)
    return arena


def truth_of(arena: Arena) -> dict[str, np.ndarray]:
    phase = arena.phases()[-1]
    return {e.id: e.hidden()[0] for e in arena.labels.exercises(phase)}


def run_attacks(arena: Arena) -> tuple[dict[str, dict[str, tuple[int, int]]], set[str]]:
    with BackgroundServer(arena) as url:
        h = harvest(url)
    truth = truth_of(arena)
    results = {"seed": seed_attack(h, truth), "lookup": lookup_attack(h, truth),
               "description": description_attack(h, truth)}
    return results, disclosed(h, private_strings(arena))


def recovered(claims: int, correct: int) -> bool:
    """An attack recovers labels when it claims enough rows and beats chance on them."""
    return claims >= MIN_CLAIMS and correct / claims > CHANCE_BOUND


# ---------------------------------------------------------------- the tests


def test_served_challenge_leaks_nothing(tmp_path, monkeypatch):
    arena = serve(tmp_path, monkeypatch, None, SERVED)
    results, leaked_text = run_attacks(arena)
    assert leaked_text == set(), f"private values served: {leaked_text}"
    for attack, per_ex in results.items():
        for ex, (claims, correct) in per_ex.items():
            assert not recovered(claims, correct), (
                f"the {attack} attack recovered {correct} of {claims} claimed labels on exercise {ex}")
    # the attacker did try: many integers, every exercise, every half
    assert set(results["lookup"]) == set(SERVED)
    arena.engine.dispose()


@pytest.mark.parametrize("leak", ["seed", "reuse", "text"])
def test_each_old_leak_is_caught(tmp_path, monkeypatch, leak):
    arena = serve(tmp_path, monkeypatch, leak, LEAK_EXERCISES)
    results, leaked_text = run_attacks(arena)
    won = {(attack, ex) for attack, per_ex in results.items() for ex, r in per_ex.items() if recovered(*r)}
    if leak == "seed":
        assert {("seed", ex) for ex in LEAK_EXERCISES} <= won  # every hidden label, 100 %
        assert all(results["seed"][ex][0] == results["seed"][ex][1] for ex in LEAK_EXERCISES)
    elif leak == "reuse":
        # about half the target rows have a half that reappears among the labeled rows
        assert {("lookup", "01"), ("lookup", "13")} <= won, results["lookup"]
        assert results["lookup"]["13"][0] > 50
    else:
        assert {("description", "00"), ("description", "01")} <= won, results["description"]
    arena.engine.dispose()
