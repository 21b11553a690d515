"""HTTP routes, one module per track kind (`mount(track, app, pages)`); `http/app.py` mounts them."""

from __future__ import annotations

from importlib import import_module


def mount_track(track, app, pages) -> None:
    """Add a track's API routes and pages: `mount` of `http/routes/<kind>.py`."""
    import_module(f"{__name__}.{track.kind}").mount(track, app, pages)
