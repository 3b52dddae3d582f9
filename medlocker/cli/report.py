"""``medlocker report``: the protection report on synthetic data, with its headline table.

Runs :func:`medlocker.report.pipeline.run_from_sources` (the from-sources options of
``medlocker evaluate``) and prints the headline table next to the paper's and the
project's targets, plus stage timings. All numbers are on synthetic data.

Examples:
    medlocker report --quick --out runs/report-quick     # a few minutes on CPU
    medlocker report --cpu --out runs/full-cpu           # acceptance run on a 2-core CPU (~1 h)
    medlocker report --gpu --out runs/gpu-report         # acceptance run on one GPU (~6 min, H100)
    medlocker report --summarize runs/full-cpu/report.json   # the table of a finished run
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medlocker.cli.evaluate import build_parser as evaluate_parser
from medlocker.cli.evaluate import config_from_args
from medlocker.report.evaluate import PAPER, TARGETS

__all__ = ["build_parser", "main", "summary"]


def _pct(v: float | None) -> str:
    return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f} %"


def _verdict(value: float | None, target: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "meets" if value <= target else f"misses by {100 * (value - target):.2f} pts"


def summary(report: Mapping[str, Any]) -> str:
    """The headline table of a (primary) report dict, as plain text."""
    lines: list[str] = []
    h, data, models = report["headline"], report["data"], report["models"]
    run = report.get("meta", {}).get("run", {})
    label = "SYNTHETIC data" if report.get("synthetic", True) else "real data"
    size = data["image_size"]
    lines.append(f"MedLocker report ({label}): {data['n_images']} images at {size[0]}x{size[1]} px"
                 + (f", classifiers at {run['model_size']} px input" if run.get("model_size") else "")
                 + f", chance (majority class) {_pct(data['chance_acc'])}, device {report['cost']['device']}")
    if report.get("comparison"):
        cw = max(14, *(len(r["config"]) + 2 for r in report["comparison"]))
        lines.append(f"\n{'config':<{cw}}{'surrogates':<22}{'white-box':>11}{'black-box':>11}{'robust':>11}"
                     f"{'queries':>9}{'s/img':>8}{'lesion px':>10}")
        for r in report["comparison"]:
            per = r["wall_time_per_image_s"]
            lines.append(f"{r['config']:<{cw}}{'+'.join(r['surrogates']):<22}{_pct(r['white_box_acc']):>11}"
                         f"{_pct(r['black_box_acc']):>11}{_pct(r['robust_acc']):>11}{r['queries_median']:>9.1f}"
                         f"{(per if per is not None else math.nan):>8.3f}{r['lesion_pixels_changed']:>10}")
        lines.append(f"{'paper':<{cw}}{'MIAD-MARK (real data)':<22}{_pct(PAPER['white_box_acc']):>11}"
                     f"{_pct(PAPER['black_box_acc']):>11}{'n/a':>11}")
        lines.append(f"{'target':<{cw}}{'':<22}{'<=' + _pct(TARGETS['white_box_acc']):>11}"
                     f"{'<=' + _pct(TARGETS['black_box_acc']):>11}{'<=' + _pct(TARGETS['robust_acc']):>11}"
                     f"{'<=' + str(TARGETS['queries_median']):>9}{'':>8}{'0':>10}")

    lines.append(f"\nprimary config ({report.get('meta', {}).get('config', '?')}), per model: clean -> protected")
    for name, m in models.items():
        flag = "  NEAR CHANCE: its protected accuracy says little" if m.get("near_chance") else ""
        lines.append(f"  {name:<20}{m['role']:<10}{_pct(m['clean_acc'])} -> {_pct(m['protected_acc'])}"
                     f"  (ASR {_pct(m['asr'])}){flag}")
    lines.append(f"  white-box mean {_pct(h['white_box_acc'])}   (paper {_pct(PAPER['white_box_acc'])}, "
                 f"target <= {_pct(TARGETS['white_box_acc'])}: {_verdict(h['white_box_acc'], TARGETS['white_box_acc'])})")
    lines.append(f"  black-box mean {_pct(h['black_box_acc'])}   over {len(h['black_box_models'])} held-out "
                 f"(paper {_pct(PAPER['black_box_acc'])}, target <= {_pct(TARGETS['black_box_acc'])}: "
                 f"{_verdict(h['black_box_acc'], TARGETS['black_box_acc'])})")

    rob = report["robustness"]
    lines.append("\nrobustness: accuracy on protected images after each transform (mean over models; "
                 "held-out mean; clean images after the same transform)")
    for t in rob["transforms"]:
        mean_all = sum(rob["protected"][m][t] for m in models) / len(models)
        black = [rob["protected"][m][t] for m in h["black_box_models"]]
        clean = sum(rob["clean"][m][t] for m in models) / len(models)
        lines.append(f"  {t:<12}{_pct(mean_all)}   held-out {_pct(sum(black) / len(black) if black else None)}"
                     f"   clean {_pct(clean)}")
    lines.append(f"  headline (jpeg75/resize0.5/median3, all models) {_pct(h['robust_acc'])}: target <= "
                 f"{_pct(TARGETS['robust_acc'])}: {_verdict(h['robust_acc'], TARGETS['robust_acc'])}")

    removal = report["removal"]
    if removal["attacks"]:
        lines.append("\nremoval: attacker's PSNR inside the true logo box (median) / accuracy (all models; held-out)")
        lines.append(f"  {'(published)':<22}{removal['protected_psnr_in_box']['median']:7.1f} dB")
        for a in [*removal["attacks"], "licensed"]:
            accs = [removal["accuracy"][m][a] for m in models]
            black = [removal["accuracy"][m][a] for m in h["black_box_models"]]
            psnr = removal["attacker_psnr"].get(a, {}).get("median") if a != "licensed" else math.inf
            lines.append(f"  {a:<22}{psnr:7.1f} dB   {_pct(sum(accs) / len(accs))}   held-out "
                         f"{_pct(sum(black) / len(black) if black else None)}")
        if removal.get("estimate"):
            e = removal["estimate"]
            lines.append(f"  blind estimate: logo box exact for {_pct(e['box_exact_fraction'])}, "
                         f"median IoU {e['box_iou']['median']:.2f}")
    lic = removal["licensed"]
    lines.append(f"  licensed restoration exact for {_pct(lic['exact_fraction'])}"
                 + (" (assumed, not measured)" if lic["assumed_exact"] else ""))

    q = report["quality"]
    lines.append(f"\nquality: PSNR {q['psnr']['median']:.1f} dB (lesion-free region {q['psnr_lesion_free']['median']:.1f})"
                 f", SSIM {q['ssim']['median']:.3f}, logo area {q['logo_area_pct']['median']:.2f} % of the image, "
                 f"opacity {q['opacity']['median']:.2f}, lesion pixels changed {q['lesion_pixels_changed']['total']}, "
                 f"images without a logo {q['n_without_logo']}")
    c = report["cost"]["queries"]
    lines.append(f"queries per image: median {c['median']:.0f}, mean {c['mean']:.1f}, max {c['max']:.0f}")
    if report.get("timings_s"):
        lines.append("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings_s"].items()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = evaluate_parser(prog="medlocker report", packed=False)
    p.description = (__doc__ or "").split("\n\n")[1].replace("\n", " ")
    p.epilog = (__doc__ or "").split("\n\n", 2)[2]
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--summarize", metavar="REPORT_JSON",
                   help="print the headline table of a finished run's report.json and exit (no --out needed)")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    if "--summarize" in argv:  # --out is not needed to print a finished report
        i = argv.index("--summarize")
        if i + 1 >= len(argv):
            raise ValueError("--summarize needs the path of a report.json")
        print(summary(json.loads(Path(argv[i + 1]).read_text())))
        return 0
    args = build_parser().parse_args(argv)
    from medlocker.report.pipeline import run_from_sources

    config = config_from_args(args)
    t0 = time.perf_counter()
    result = run_from_sources(config, args.out, progress=not args.no_progress)
    total = time.perf_counter() - t0
    print()
    print(summary(result["primary"]))
    print(f"total wall time {total:.0f} s")
    print(f"report: {result['report']}")
    return 0
