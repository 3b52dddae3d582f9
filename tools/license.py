"""Thin entry point for ``medlocker license`` (the code is medlocker/cli/license.py); keeps ``python tools/license.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.license import *  # scripts and tests import its names from here
from medlocker.cli.license import main

if __name__ == "__main__":
    run_cli(main)
