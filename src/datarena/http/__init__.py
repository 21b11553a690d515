"""The HTTP edge: the FastAPI app, request helpers and pages, one routes module per track kind.
It maps `datarena.errors` to status codes in one place (`app.py`)."""
