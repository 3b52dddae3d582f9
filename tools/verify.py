"""Thin entry point for ``medlocker verify`` (the code is medlocker/cli/verify.py); keeps ``python tools/verify.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.verify import *  # scripts and tests import its names from here
from medlocker.cli.verify import main

if __name__ == "__main__":
    run_cli(main)
