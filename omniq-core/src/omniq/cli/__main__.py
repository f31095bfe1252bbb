"""``python -m omniq.cli`` (a recycled worker re-executes itself this way)."""

from . import main

main()
