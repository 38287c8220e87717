"""``python -m fimaudit`` runs the command line."""

from fimaudit.cli import main

main()
