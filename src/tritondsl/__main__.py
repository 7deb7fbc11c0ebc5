"""``python -m tritondsl``."""

from tritondsl.cli import main

main()
