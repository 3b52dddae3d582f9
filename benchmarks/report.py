#!/usr/bin/env python
"""Benchmark: the reproducible end-to-end evaluation behind the headline numbers.

Runs :func:`medlocker.report.pipeline.run_from_sources` (same flags as
``tools/evaluate.py``) and prints the headline table next to the paper's and the
project's targets, plus stage timings. All numbers are on synthetic data.

    python benchmarks/report.py --quick --out runs/bench-report-quick   # a few minutes on CPU
    python benchmarks/report.py --out runs/bench-report                 # 500 images, 224 px, 9 archs (GPU)
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from evaluate import build_parser, config_from_args  # noqa: E402  (tools/evaluate.py)

from medlocker.report.evaluate import PAPER, TARGETS  # noqa: E402
from medlocker.report.pipeline import run_from_sources  # noqa: E402


def _pct(v: float | None) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f} %"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    t0 = time.perf_counter()
    result = run_from_sources(config, args.out, progress=not args.no_progress)
    total = time.perf_counter() - t0

    print(f"\nMedLocker report benchmark (SYNTHETIC data): {config.n_images} images at {config.size} px, "
          f"archs {', '.join(config.archs)}, device {result['primary']['cost']['device']}")
    print(f"{'config':<14}{'surrogates':<26}{'white-box':>11}{'black-box':>11}{'robust':>11}"
          f"{'queries':>9}{'s/img':>8}{'lesion px':>10}")
    for r in result["comparison"]:
        per = r["wall_time_per_image_s"]
        print(f"{r['config']:<14}{'+'.join(r['surrogates']):<26}{_pct(r['white_box_acc']):>11}"
              f"{_pct(r['black_box_acc']):>11}{_pct(r['robust_acc']):>11}{r['queries_median']:>9.1f}"
              f"{per:>8.3f}{r['lesion_pixels_changed']:>10}")
    print(f"{'paper':<14}{'MIAD-MARK':<26}{_pct(PAPER['white_box_acc']):>11}{_pct(PAPER['black_box_acc']):>11}"
          f"{'n/a':>11}")
    print(f"{'target':<14}{'':<26}{'<=' + _pct(TARGETS['white_box_acc']):>11}{'<=' + _pct(TARGETS['black_box_acc']):>11}"
          f"{'<=' + _pct(TARGETS['robust_acc']):>11}{'<=' + str(TARGETS['queries_median']):>9}{'':>8}{'0':>10}")
    models = result["primary"]["models"]
    print("\nprimary config, per model:  clean -> protected (ASR)")
    for name, m in models.items():
        print(f"  {name:<22}{m['role']:<10}{_pct(m['clean_acc'])} -> {_pct(m['protected_acc'])}  (ASR {_pct(m['asr'])})")
    removal = result["primary"]["removal"]
    print("\nremoval (primary config): attacker PSNR in box (median dB) / mean accuracy over models")
    for a in removal["attacks"]:
        accs = [removal["accuracy"][m][a] for m in models]
        print(f"  {a:<22}{removal['attacker_psnr'][a]['median']:7.1f} dB   {_pct(sum(accs) / len(accs))}")
    print("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items())
          + f", total {total:.1f}")
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
