"""Thin entry point for ``medlocker synth`` (the code is medlocker/cli/synth.py); keeps ``python tools/synth.py`` working."""
from medlocker.cli.common import run_cli
from medlocker.cli.synth import *  # scripts and tests import its names from here
from medlocker.cli.synth import main

if __name__ == "__main__":
    run_cli(main)
