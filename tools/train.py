"""Thin entry point for ``medlocker train`` (the code is medlocker/cli/train.py); keeps ``python tools/train.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.train import *  # scripts and tests import its names from here
from medlocker.cli.train import main

if __name__ == "__main__":
    run_cli(main)
