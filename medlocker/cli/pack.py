"""Protect an image dataset and publish it as signed WebDataset shards.

Examples:
  medlocker pack --demo                      # everything, on synthetic data (a few minutes on CPU)
  medlocker pack --input aptos/ --out s3://bucket/aptos-protected \\
      --owner owner.key --secrets owner-secrets/aptos --model resnet50.pt
  torchrun --nproc_per_node 8 -m medlocker pack ...  # one rank per GPU, one signed manifest
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from medlocker.cli.common import add_storage_option, run_cli, storage_options, view_list

EOT_VIEWS = "jpeg75,resize0.5,median3,blur,crop"
FLAGS = ("optimizer", "budget", "logo_scale", "min_logo_scale", "logo_shrink", "lesion_margin", "eot", "logo_mode",
         "colour_steps", "colour_cell", "colour_eot")


def build_parser() -> argparse.ArgumentParser:
    from medlocker.watermark.config import DEFAULT_PRESET, PRESETS

    p = argparse.ArgumentParser(
        prog="medlocker pack",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--demo", nargs="?", const="medlocker-demo", metavar="DIR",
                   help="run the whole flow on synthetic data into DIR (default ./medlocker-demo) and exit")
    io = p.add_argument_group("input and output")
    io.add_argument("--input", metavar="SRC", help="source: CSV layout (image,label or APTOS id_code,diagnosis), ImageFolder")
    io.add_argument("--masks", metavar="DIR", help="IDRiD-style lesion masks (masks/<type>/<id>.png); default: SRC/masks if present (an image without a mask file is lesion-free), else Grad-CAM")
    io.add_argument("--out", metavar="DEST", help="published location: a folder or an fsspec URL (s3://bucket/prefix)")
    io.add_argument("--secrets", metavar="DIR", help="local folder for the owner's secrets (never published)")
    io.add_argument("--owner", metavar="KEY", help="owner identity file NAME.key (medlocker keygen)")
    io.add_argument("--passphrase-env", metavar="VAR", default="MEDLOCKER_PASSPHRASE",
                    help="environment variable holding the owner key's passphrase (default %(default)s)")
    io.add_argument("--shard-size", type=int, default=256, metavar="N", help="samples per shard (default %(default)s)")
    io.add_argument("--resize", type=int, metavar="PX", help="resize every image to PX x PX first (the licensee gets the resized image)")
    io.add_argument("--resume", action="store_true", help="continue an interrupted run (same --secrets and options)")
    io.add_argument("--replace", action="store_true",
                    help="publish over the files at --out: new shards, then the manifest, then removal of every file it does not list")
    io.add_argument("--allow-rejects", action="store_true", help="exit 0 even if some inputs were rejected")
    io.add_argument("--summary", metavar="FILE", help="also write the summary as JSON to FILE")
    add_storage_option(io)
    s = p.add_argument_group("protection", "a preset (--protection) and, optionally, its knobs overridden one by one")
    s.add_argument("--model", action="append", default=[], metavar="CKPT",
                   help="surrogate checkpoint (medlocker train); repeat for an ensemble")
    s.add_argument("--logo", metavar="PNG", help="your logo (RGBA PNG); default: the MedLocker mark")
    s.add_argument("--protection", default=DEFAULT_PRESET, choices=tuple(PRESETS), metavar="NAME",
                   help=f"protection preset: {', '.join(PRESETS)} (default %(default)s). paper: the seed's method "
                        "(fixed logo, position and transparency searched); standard: learned logo, a bounded "
                        "per-image texture and a low-amplitude adversarial layer outside the logo and the "
                        "lesions (at most 194 queries per image with two surrogates); strong: standard with 100 "
                        "steps under JPEG/resize/median views")
    s.add_argument("--logo-mode", choices=("fixed", "learned"),
                   help="fixed: your logo as is; learned: its colours optimised once for the dataset")
    s.add_argument("--optimizer", choices=("gradient", "blackbox", "bhe"),
                   help="gradient (white-box, fewest queries), blackbox (scores only), bhe (the Adv-watermark baseline)")
    s.add_argument("--budget", type=int, metavar="Q",
                   help="max model queries per image for the placement search (the texture's come on top)")
    s.add_argument("--colour-steps", type=int, metavar="N",
                   help="then optimise each image's logo colours at its placement for up to N steps (an adversarial "
                        "texture inside the logo's shape; N forward+backward queries per image, surrogate and view, "
                        "on top of --budget; each sample commits to its own logo). 0 = off")
    s.add_argument("--logo-scale", type=float, metavar="F", help="logo area as a fraction of the image (<= 0.0625)")
    s.add_argument("--min-logo-scale", type=float, metavar="F",
                   help="where the logo does not fit off the lesions, shrink its area (see --logo-shrink) down to "
                   "F before rejecting the image (0 = never shrink)")
    s.add_argument("--colour-cell", type=int, metavar="PX",
                   help="the colour steps optimise one colour offset per PX x PX block (a smooth texture that "
                        "survives resizing/JPEG and transfers better)")
    s.add_argument("--logo-shrink", type=float, metavar="R",
                   help="each shrink multiplies the logo area by R, 0 < R < 1")
    s.add_argument("--lesion-margin", type=int, metavar="PX",
                   help="pixels kept between the logo and any lesion box")
    s.add_argument("--eot", type=view_list, metavar="VIEWS",
                   help=f"transform views in the placement search's objective, comma-separated from: {EOT_VIEWS}")
    s.add_argument("--colour-eot", type=view_list, metavar="VIEWS",
                   help="transform views for the colour steps alone (default: the --eot views; 'none' = none), "
                        "at 1 + len(VIEWS) queries per step")
    s.add_argument("--batch-size", type=int, default=0, metavar="B",
                   help="images searched together, across shard boundaries (default 0 = 2048 on a GPU, "
                        "where big batches keep it busy while the last hard images finish; 32 on CPU); "
                        "lower it if a GPU runs out of memory on large images")
    s.add_argument("--device", default="auto", help="auto (CUDA if present), cuda, cpu")
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="threads that decode, render, encode and seal beside the search "
                        "(default 0 = min(8, CPU cores))")
    s.add_argument("--read-processes", type=int, default=-1, metavar="N",
                   help="processes that decode the source images and masks (-1 = auto: one per CPU core but one, "
                        "up to 16, on a GPU, where reading would otherwise hold the search back; 0 on CPU: "
                        "the worker threads read)")
    s.add_argument("--insecure-test-seed", type=int, metavar="N",
                   help="INSECURE: derive dataset id and keys from N (reproducibility tests only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.demo:
        from medlocker.demo import run_demo

        return run_demo(Path(args.demo))
    missing = [f"--{n}" for n in ("input", "out", "secrets", "owner") if not getattr(args, n)]
    if missing:
        build_parser().error(f"missing {', '.join(missing)} (or use --demo)")
    if not args.model:
        build_parser().error("no surrogate: pass --model CKPT (train one with medlocker train)")

    import os

    from tqdm import tqdm

    from medlocker.crypto import Identity
    from medlocker.data import open_source
    from medlocker.distributed import from_environment
    from medlocker.models import load_checkpoint
    from medlocker.pack import PackConfig, default_read_processes, pack
    from medlocker.watermark import default_logo, load_logo

    comm = from_environment(args.device)
    try:
        device = comm.device(args.device)
        passphrase = os.environ.get(args.passphrase_env)
        owner = Identity.load(args.owner, passphrase=passphrase.encode() if passphrase else None)
        source = open_source(args.input, masks=args.masks)
        surrogates = [load_checkpoint(m, map_location=device) for m in args.model]
        logo = load_logo(args.logo) if args.logo else default_logo()
        config = PackConfig(
            protection=protection_from_args(args),
            shard_size=args.shard_size,
            batch_size=args.batch_size or (2048 if device.type == "cuda" else 32),
            resize=args.resize,
            workers=args.workers or min(8, os.cpu_count() or 1),
            read_processes=default_read_processes(device) if args.read_processes < 0 else args.read_processes,
        )
        bar = tqdm(total=len(source.records), unit="img", disable=comm.rank != 0, desc="protecting")
        fooled = [0, 0]
        t0 = time.perf_counter()

        def progress(done: int, ok: int) -> None:
            fooled[0] += ok
            fooled[1] += done
            bar.update(done)
            rate = fooled[1] / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(success=f"{fooled[0] / max(fooled[1], 1):.1%}", img_s=f"{rate:.1f}")

        summary = pack(
            source, args.out, owner=owner, secrets=args.secrets, surrogates=surrogates, logo=logo,
            config=config, resume=args.resume, storage_options=storage_options(args.storage_option),
            device=device, test_seed=args.insecure_test_seed, progress=progress, comm=comm, replace=args.replace,
        )
        bar.close()
    finally:
        comm.close()
    if comm.rank != 0:
        return 0
    result = {"protection": args.protection, **summary.to_dict()}
    if args.summary:
        Path(args.summary).write_text(json.dumps(result, indent=2))
    print_summary(result)
    if result["rejected"] and not args.allow_rejects:
        print(f"{result['rejected']} input(s) rejected (listed above and in {args.secrets}/rejects.jsonl); "
              "fix them or pass --allow-rejects", file=sys.stderr)
        return 1
    return 0


def protection_from_args(args: argparse.Namespace):
    """The ``--protection`` preset with every knob flag that was given put in its place."""
    from medlocker.watermark import protection_preset

    return protection_preset(args.protection).override(**{k: getattr(args, k) for k in FLAGS})


def print_summary(r: dict) -> None:
    print(f"\nPublished {r['protected']} protected images in {r['shards']} shard(s) to {r['dest']}")
    print(f"  dataset id          {r['dataset_id']}")
    print(f"  manifest digest     {r['manifest_digest']}")
    print(f"  owner secrets       {r['secrets']}  (keep private; never publish)")
    print(f"  protection          {r['protection']}")
    print(f"  surrogate accuracy  clean {r['surrogate_clean_accuracy']:.1%} -> protected {r['surrogate_protected_accuracy']:.1%}")
    print(f"  attack success      {r['attack_success_rate']:.1%}")
    print(f"  queries per image   median {r['median_queries']:.0f}, mean {r['mean_queries']:.1f}")
    print(f"  time                {r['seconds']:.1f} s ({r['images_per_second']} images/s)")
    print(f"  rejected            {r['rejected']}")
    for rej in r["rejects"]:
        print(f"    {rej['path']}: {rej['reason']}")


if __name__ == "__main__":
    run_cli(main)
