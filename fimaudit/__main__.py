"""``python -m fimaudit`` runs the command line (in its own process: ``cli.entry``)."""

from fimaudit.cli import entry

entry()
