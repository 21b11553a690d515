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
