"""The ``medlocker`` command: one module per subcommand, shared option helpers in ``common``.

Every subcommand module has ``build_parser()`` and ``main(argv) -> int`` (tests call
them directly); ``medlocker.cli.main`` dispatches ``medlocker NAME ...`` to them and
``tools/NAME.py`` are thin entry points over the same functions.
"""

from __future__ import annotations

from .common import add_storage_option, run_cli, storage_options, view_list

__all__ = ["add_storage_option", "run_cli", "storage_options", "view_list"]
