"""Thin entry point for ``medlocker evaluate`` (the code is medlocker/cli/evaluate.py); keeps ``python tools/evaluate.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.evaluate import *  # scripts and tests import its names from here
from medlocker.cli.evaluate import main

if __name__ == "__main__":
    run_cli(main)
