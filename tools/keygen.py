"""Thin entry point for ``medlocker keygen`` (the code is medlocker/cli/keygen.py); keeps ``python tools/keygen.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.keygen import *  # scripts and tests import its names from here
from medlocker.cli.keygen import main

if __name__ == "__main__":
    run_cli(main)
