"""Errors that carry a message a user can act on; the CLI prints them without a traceback."""


class DatarenaError(Exception):
    """Base class: the message says what was wrong and what to do."""


class SourceNotFoundError(DatarenaError):
    """A real data source (MNIST, CIFAR-10, faces) is missing or incomplete."""


class ConfigError(DatarenaError):
    """A configuration file or parameter is invalid."""


class OutputExistsError(DatarenaError):
    """An output directory already holds files and --force was not given."""


class SubmissionError(DatarenaError):
    """Submitted labels cannot be scored (wrong length, labels outside the class set)."""


class BudgetError(DatarenaError):
    """A reveal budget or submission allowance is used up."""


# ---------------------------------------------------------------- what a request asked that cannot be done
# Domain code raises these; the HTTP layer maps each to its status code in one place
# (datarena.http.app), the CLI prints the message. None of them knows about HTTP.


class RefusedError(DatarenaError):
    """A request refused for a reason its sender can fix; nothing was consumed."""

    def __init__(self, message: str, *, retry_after: int | float | str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = None if retry_after is None else max(1, int(float(retry_after)))
        self.extra = extra or {}  # more fields for the client (e.g. every offending file)


class Invalid(RefusedError):
    """Malformed or rule-breaking input."""


class Unauthorized(RefusedError):
    """Missing, wrong, expired or revoked credentials."""


class Forbidden(RefusedError):
    """Known caller, not allowed (not validated, phase closed, deadline passed, bad CSRF token)."""


class NotFound(RefusedError):
    """No such thing (or not the caller's)."""


class Conflict(RefusedError):
    """The request collides with what exists (a name taken, a budget or slot used up)."""


class RateLimited(RefusedError):
    """Too many requests; `retry_after` seconds say when to try again."""


class TooLarge(RefusedError):
    """A body or file over its cap."""


class Unsupported(RefusedError):
    """A body in a form the endpoint does not take."""


class Busy(RefusedError):
    """The server could not do it now (contention); retry."""
