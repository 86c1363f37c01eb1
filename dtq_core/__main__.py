"""``python -m dtq_core`` runs the ``dtq`` command."""

from dtq_core.cli import main

main()
