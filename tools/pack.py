"""Thin entry point for ``medlocker pack`` (the code is medlocker/cli/pack.py); keeps ``python tools/pack.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.pack import *  # scripts and tests import its names from here
from medlocker.cli.pack import main

if __name__ == "__main__":
    run_cli(main)
