"""`python -m datarena.cli`."""

from datarena.cli import main

main()
