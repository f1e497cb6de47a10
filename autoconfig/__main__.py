"""``python -m autoconfig``: the admin command line."""

from .cli import main

main()
