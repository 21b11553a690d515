"""Helpers that tests and benchmarks share (no pytest import): hostile uploads, fd and disk probes."""
