"""HTTP routes, one module per track kind (`mount(track, app, pages)`); `http/app.py` mounts them."""

from __future__ import annotations

from importlib import import_module

ROUTES = {"labels": "datarena.http.routes.labels", "dataset": "datarena.http.routes.dataset"}


def mount_track(track, app, pages) -> None:
    """Add a track's API routes and pages (its kind's routes module)."""
    import_module(ROUTES[track.kind]).mount(track, app, pages)
