"""datarena: make datasets, score them, and host data-centric ML challenges."""

__version__ = "0.1.0"
