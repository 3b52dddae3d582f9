#!/usr/bin/env python
"""Benchmark: the reproducible end-to-end evaluation behind the headline numbers.

Now ``medlocker report`` (medlocker/cli/report.py, same flags as ``medlocker evaluate``);
this script stays so the documented commands keep working. All numbers are on synthetic data.

    python benchmarks/report.py --quick --out runs/bench-report-quick   # a few minutes on CPU
    python benchmarks/report.py --cpu --out runs/full-cpu                # acceptance run on a 2-core CPU (~1 h)
    python benchmarks/report.py --gpu --out runs/gpu-report              # acceptance run on one GPU (~6 min, H100)
    python benchmarks/report.py --out runs/bench-report                  # 500 images, 224 px, 9 archs (GPU)
    python benchmarks/report.py --summarize runs/full-cpu/report.json    # print the table of a finished run
"""

from __future__ import annotations

from medlocker.cli import run_cli
from medlocker.cli.report import main

if __name__ == "__main__":
    run_cli(main)
