"""Evaluate MedLocker end to end and write an HTML + JSON report.

Two paths:

* **from sources** (default): synthesize fundus images, train (or reuse cached)
  classifiers, protect a disjoint set under each search configuration, measure
  everything and write ``OUT/report.html`` (plus one report per configuration
  in ``OUT/<config>/``);
* **packed dataset** (``--dataset``): evaluate what was actually published --
  protected images from the public shards (manifest verified with the owner's
  key), placements and queries from the owner's secrets, originals restored
  through the licensed reader (restoration measured), lesion boxes from
  ``--source`` masks (else Grad-CAM of the first surrogate), against the
  ``--model`` checkpoints.

Examples:
    medlocker evaluate --quick --out runs/eval-quick
    medlocker evaluate --out runs/eval --archs resnet18,smallcnn,vgg16,densenet121 --size 128 --epochs 6
    medlocker evaluate --dataset out/ds --secrets out/secrets --owner owner.key \
        --model resnet18.pt --model densenet121.pt --source data/src --out runs/eval-packed
"""

from __future__ import annotations

import argparse
import logging
import sys

from medlocker.cli.common import add_storage_option, storage_options, view_list
from medlocker.report.pipeline import run_from_sources
from medlocker.report.presets import (
    CONFIG_NAMES,
    CPU,
    FULL,
    GPU,
    QUICK,
    REPORT_PROTECTION,
    with_overrides,
    with_protection,
)

log = logging.getLogger("evaluate")
_P = REPORT_PROTECTION.placement


def _names(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_parser(prog: str = "medlocker evaluate", packed: bool = True) -> argparse.ArgumentParser:
    """The options; ``packed=False`` leaves out the ``--dataset`` group (``medlocker report``)."""
    p = argparse.ArgumentParser(prog=prog, description="Protect synthetic fundus images and report how well the models are fooled.")
    p.add_argument("--out", required=True, help="output folder (from sources: also caches training data and checkpoints)")
    p.add_argument("--quick", action="store_true",
                   help="small preset: 60 images at 64 px, 3 small archs, CPU (a few minutes)")
    p.add_argument("--cpu", action="store_true",
                   help="acceptance preset for a 2-core CPU (~1 h): 500 images at 224 px, 5 archs (3 held out), "
                        "classifiers at 64 px input")
    p.add_argument("--gpu", action="store_true",
                   help="acceptance preset for one GPU (~6 min on an H100): the --cpu images and archs, classifiers "
                        "at 224 px input, colour steps under JPEG/resize/median views")
    p.add_argument("--n", type=int, help=f"images to protect and evaluate (default {FULL.n_images})")
    p.add_argument("--n-train", type=int, help=f"training images per model (default {FULL.n_train})")
    p.add_argument("--size", type=int, help=f"image side and model input size in px (default {FULL.size})")
    p.add_argument("--model-size", type=int,
                   help="classifier input side in px (default: --size); images stay at --size, each model resizes")
    p.add_argument("--archs", type=_names, help=f"comma-separated architectures (default {','.join(FULL.archs)})")
    p.add_argument("--surrogates", type=_names,
                   help="comma-separated surrogates; the first is 'single', all are 'ensemble' "
                        f"(default {','.join(FULL.surrogates)})")
    p.add_argument("--epochs", type=int, help=f"training epochs (default {FULL.epochs})")
    p.add_argument("--configs", type=_names,
                   help=f"protection configurations, from {','.join(CONFIG_NAMES)} (default {','.join(c.name for c in FULL.configs)})")
    p.add_argument("--optimizer", help=f"placement search optimizer (default {_P.optimizer})")
    p.add_argument("--budget", type=int, help=f"placement search queries per image; texture steps come on top (default {_P.budget})")
    p.add_argument("--logo-scale", type=float, help=f"logo area as a fraction of the image (default {_P.logo_scale})")
    p.add_argument("--max-opacity", type=int,
                   help=f"highest opacity the search may use, 1..255 (default {_P.opacity[1]}: solid logo pixels)")
    p.add_argument("--learn-steps", type=int,
                   help=f"logo-learning steps of the *_learned configurations (default {REPORT_PROTECTION.universal.steps})")
    p.add_argument("--colour-steps", type=int,
                   help=f"per-image colour steps of the *_colours configurations (default {REPORT_PROTECTION.texture.steps})")
    p.add_argument("--colour-eot", type=view_list,
                   help="comma-separated EOT views of the colour steps alone, e.g. jpeg75,resize0.5,median3 "
                        "(default: the configuration's own views; 'none' = identity only)")
    p.add_argument("--colour-cell", type=int,
                   help=f"px per colour cell of the colour steps: a low-frequency texture (default {REPORT_PROTECTION.texture.cell})")
    p.add_argument("--logo-shrink", type=float,
                   help=f"where the logo does not fit off the lesions, multiply its area by this until it does "
                        f"(default {_P.logo_shrink})")
    p.add_argument("--transfer-sources", type=_names,
                   help="architectures to protect with alone, for a full transfer heat map")
    p.add_argument("--seed", type=int, help="data, training and search seed (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (default auto; --quick: cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    if not packed:
        return p
    g = p.add_argument_group("packed dataset (--dataset)")
    g.add_argument("--dataset", help="published dataset folder or fsspec URL: evaluate it instead of synthesizing")
    g.add_argument("--secrets", help="the packing run's owner-secrets folder")
    g.add_argument("--owner", help="the owner's private identity (.key)")
    g.add_argument("--passphrase-env", metavar="VAR", help="environment variable holding the .key passphrase")
    g.add_argument("--model", action="append", default=[], metavar="CKPT",
                   help="classifier checkpoint to evaluate (repeat); surrogates are matched by architecture "
                        "against run.json settings")
    g.add_argument("--surrogate-names", type=_names,
                   help="comma-separated model names (architecture, or file stem when two share one) that were "
                        "the search surrogates, overriding the run.json match")
    g.add_argument("--source", help="the source dataset that was packed: originals to compare restoration with, "
                                    "lesion boxes from its masks (else Grad-CAM of the first surrogate)")
    add_storage_option(g)
    g.add_argument("--synthetic", action=argparse.BooleanOptionalAction, default=None,
                   help="label the numbers as synthetic-data results (default: guessed from the sample ids)")
    return p


def config_from_args(args: argparse.Namespace):
    if args.quick + args.cpu + args.gpu > 1:
        raise ValueError("--quick, --cpu and --gpu are presets: pick one")
    base = QUICK if args.quick else CPU if args.cpu else GPU if args.gpu else FULL
    run = with_overrides(
        base, n_images=args.n, n_train=args.n_train, size=args.size, model_size=args.model_size, archs=args.archs,
        surrogates=args.surrogates, epochs=args.epochs, transfer_sources=args.transfer_sources, seed=args.seed,
        device=args.device,
    )
    lo = min(p.protection.placement.opacity[0] for p in run.configs)
    return with_protection(
        run, args.configs, optimizer=args.optimizer, budget=args.budget, logo_scale=args.logo_scale,
        opacity=None if args.max_opacity is None else (min(lo, args.max_opacity), args.max_opacity),
        learn_steps=args.learn_steps, colour_steps=args.colour_steps, colour_eot=args.colour_eot,
        logo_shrink=args.logo_shrink, colour_cell=args.colour_cell,
    )


def run_packed(args: argparse.Namespace) -> str:
    """The ``--dataset`` path; returns the report path."""
    import os

    from medlocker.crypto import Identity
    from medlocker.data import open_source
    from medlocker.models import load_checkpoint, resolve_device
    from medlocker.report.html import write_report
    from medlocker.report.packed import evaluate_packed, model_names

    missing = [f for f in ("secrets", "owner") if not getattr(args, f)]
    if missing or not args.model:
        raise ValueError("--dataset needs --secrets, --owner and at least one --model")
    passphrase = None
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if value is None:
            raise ValueError(f"environment variable {args.passphrase_env} is not set")
        passphrase = value.encode()
    owner = Identity.load(args.owner, passphrase=passphrase)
    device = resolve_device(args.device or "auto")
    loaded = [load_checkpoint(m, map_location=device) for m in args.model]
    models = dict(zip(model_names(args.model, [c.arch for c in loaded]), loaded))
    source = open_source(args.source) if args.source else None
    report, figures, data = evaluate_packed(
        args.dataset, args.secrets, owner, models, source=source, surrogate_names=args.surrogate_names,
        synthetic=args.synthetic, device=device, storage_options=storage_options(args.storage_option),
    )
    path = write_report(args.out, report, figures)
    h = report["headline"]
    log.info("%d samples; white-box %s, black-box %s; restoration exact for %.1f %%", len(data.keys),
             h["white_box_acc"], h["black_box_acc"], 100 * report["removal"]["licensed"]["exact_fraction"])
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.dataset:  # errors: one line from medlocker.cli.common.guarded, exit 2
        print(f"report: {run_packed(args)}")
        return 0
    config = config_from_args(args)
    result = run_from_sources(config, args.out, progress=not args.no_progress)
    print(f"report: {result['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
