"""The shape of the code: no import circles in src/, lower layers never reach up to the server
or the CLI, domain modules raise domain errors (no HTTP status codes)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PKG = SRC / "datarena"
EDGES = ("datarena.http", "datarena.cli", "datarena.demo")  # the layers that serve users
LOWER = ("data", "scenes", "evaluate", "metasim", "underspec", "jobs", "diffusion", "errors", "db", "seeding",
         "progress", "commitments", "client", "challenge")


def _is_edge(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EDGES)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the datarena modules it imports, anywhere in it (lazy imports in functions
    included; `if TYPE_CHECKING:` blocks left out, they never run)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("datarena"):
                targets = [resolve(f"{node.module}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names if a.name.startswith("datarena")]
            else:
                continue
            deps |= {t for t in targets if t and t != name}
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = import_graph()
    assert len(graph) > 50
    assert cycles(graph) == []


def test_the_detector_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_never_import_the_server_or_the_cli():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if _is_edge(d)) for m, deps in graph.items()
                 if m.split(".")[1:2] and m.split(".")[1] in LOWER}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_participant_side_needs_no_server():
    """`datarena.client` (what a participant runs) imports nothing of the server side (the HTTP
    app, the challenge services) or the CLI."""
    graph = import_graph()
    reach = {m: sorted(d for d in deps if _is_edge(d) or d.startswith("datarena.challenge"))
             for m, deps in graph.items()
             if m.startswith("datarena.client")}
    assert reach and all(not d for d in reach.values()), reach


def test_domain_modules_carry_no_http_status_codes():
    """Domain code raises Invalid / NotFound / ...; only the app maps them to status codes."""
    allowed = {PKG / "http" / "app.py"}
    found = []
    for path in PKG.rglob("*.py"):
        if path in allowed:
            continue
        text = path.read_text()
        if re.search(r"\bApiError\b|HTTPException|status_code=4\d\d", text):
            found.append(str(path.relative_to(SRC)))
    assert found == []


def test_the_tests_tree_mirrors_the_package():
    """tests/<part>/ holds the tests of datarena/<part>/; only cross-cutting checks sit at the top."""
    tests = Path(__file__).resolve().parent
    parts = [d for d in tests.iterdir() if d.is_dir() and (d / "__init__.py").is_file()]
    assert parts and all((PKG / d.name).is_dir() for d in parts), [d.name for d in parts if not (PKG / d.name).is_dir()]
    top = sorted(p.name for p in tests.glob("test_*.py"))
    assert top == ["test_architecture.py"], top


def test_track_domain_modules_import_no_web_code():
    """The challenge services (challenge/, its tracks included) are apart from the HTTP edge
    (http/): no FastAPI, Starlette, request helpers or typer in them."""
    web = ("fastapi", "starlette", "typer", "datarena.http", "datarena.cli")
    for path in (PKG / "challenge").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        names += [f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
        bad = [m for m in names if any(m == w or m.startswith(w + ".") for w in web)]
        assert not bad, (path.name, bad)


def test_a_track_kind_is_one_domain_module_one_routes_module_and_one_spec():
    """The TrackSpec union names the kinds; each has challenge/tracks/<kind>.py (TRACK) and
    http/routes/<kind>.py (mount); no other registry of kinds exists."""
    import importlib

    from datarena.challenge.tracks import Track, kinds, track_class

    assert set(kinds()) == {"labels", "dataset"}
    for kind in kinds():
        assert issubclass(track_class(kind), Track)
        assert callable(importlib.import_module(f"datarena.http.routes.{kind}").mount)
    registries = [p for p in PKG.rglob("*.py") if re.search(r'"datarena\.(challenge\.tracks|http\.routes)\.(labels|dataset)', p.read_text())]
    assert registries == []
