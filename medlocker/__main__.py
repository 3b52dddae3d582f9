"""``python -m medlocker``: the ``medlocker`` command."""

from medlocker.cli.main import run

run()
