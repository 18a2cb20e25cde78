"""``python -m vaecodec`` runs the CLI."""

from .cli import main

main()
