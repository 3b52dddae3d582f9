#!/usr/bin/env python
"""End-to-end packing throughput: synthetic PNG dataset -> tools/pack.py's library call -> signed shards.

What `benchmarks/attack.py` measures is the search alone, on images already in
memory. This script times the whole owner job the way a user runs it: read the
source PNGs and lesion masks, search, render, encode, seal, write the shards
and sign the manifest -- with the surrogate checkpoint given (e.g. the one
`attack.py --save-checkpoint` trained), on GPU or CPU. All numbers are on
**synthetic** data.

Examples:
    python benchmarks/pack_speed.py --checkpoint runs/r50.pt --n 1024 --batch-size 512 --out runs/pack.json
    python benchmarks/pack_speed.py --checkpoint /tmp/medlocker-bench/surrogate_cpu_smallcnn_64.pt --n 64
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from medlocker.crypto import Identity
from medlocker.data import open_source, write_synthetic_dataset
from medlocker.models import load_checkpoint
from medlocker.pack import PackConfig, default_read_processes, pack
from medlocker.watermark import default_logo, protection_preset

log = logging.getLogger("bench.pack")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="surrogate checkpoint (tools/train.py or attack.py --save-checkpoint)")
    p.add_argument("--n", type=int, default=256, help="synthetic images to pack")
    p.add_argument("--size", type=int, default=0, help="image side, px (default: the checkpoint's input size)")
    p.add_argument("--seed", type=int, default=303, help="synthetic dataset seed (disjoint from attack.py's 101/202)")
    p.add_argument("--batch-size", type=int, default=256, help="images searched together (pack --batch-size)")
    p.add_argument("--budget", type=int, default=1000, help="max queries per image")
    p.add_argument("--optimizer", default="gradient", help="gradient | blackbox | bhe")
    p.add_argument("--colour-steps", type=int, default=0, help="per-image colour steps (pack --colour-steps)")
    p.add_argument("--shard-size", type=int, default=512, help="samples per shard")
    p.add_argument("--workers", type=int, default=0, help="pack worker threads (0: min(8, CPU cores))")
    p.add_argument("--read-processes", type=int, default=-1,
                   help="reader processes (-1: as tools/pack.py: CPU cores - 1, up to 16, on a GPU; 0 on CPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    p.add_argument("--out", default=None, help="JSON results file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers or min(8, cores)
    surrogate = load_checkpoint(args.checkpoint, map_location=dev)
    size = args.size or int(surrogate.input_size)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medlocker-pack-bench-"))
    report: dict[str, Any] = {"format": "medlocker.bench.pack", "version": 1, "synthetic_data": True,
                              "args": vars(args), "env": {
                                  "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                  else (platform.processor() or platform.machine()),
                                  "torch": torch.__version__, "cpu_cores": cores, "workers": workers}}
    try:
        src = work / "source"
        t = time.perf_counter()
        if not (src / "labels.csv").exists():
            write_synthetic_dataset(src, n=args.n, size=size, seed=args.seed, progress=False, workers=cores)
        report["synth_seconds"] = round(time.perf_counter() - t, 2)
        source_bytes = sum(f.stat().st_size for f in (src / "images").iterdir())
        owner = Identity.generate(name="bench-owner")
        dest, secrets = work / "dataset", work / "secrets"
        shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(secrets, ignore_errors=True)
        config = PackConfig(
            protection=protection_preset("paper").override(optimizer=args.optimizer, budget=args.budget,
                                                           colour_steps=args.colour_steps),
            shard_size=args.shard_size, batch_size=args.batch_size, workers=workers,
            read_processes=default_read_processes(dev) if args.read_processes < 0 else args.read_processes)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        summary = pack(open_source(str(src)), str(dest), owner=owner, secrets=secrets, surrogates=[surrogate],
                       logo=default_logo(), config=config, device=dev)
        wall = time.perf_counter() - t
        shard_bytes = sum(f.stat().st_size for f in dest.iterdir() if f.name.endswith(".tar"))
        s = summary.to_dict()
        report.update(
            pack_seconds=round(wall, 3),
            images_per_s=round(s["protected"] / wall, 2),
            summary={k: v for k, v in s.items() if k not in ("dest", "secrets")},
            shard_bytes_vs_source_png=round(shard_bytes / source_bytes, 4),
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    print(f"pack: {report['summary']['protected']} images in {report['pack_seconds']} s = "
          f"{report['images_per_s']} images/s on {report['env']['device_name']} "
          f"(attack success {report['summary']['attack_success_rate']:.1%}, "
          f"median queries {report['summary'].get('median_queries')}) [synthetic data]\n"
          f"main thread: {report['summary'].get('timings')}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
