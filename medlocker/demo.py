"""The embedded default: the whole MedLocker flow on synthetic data, end to end.

``medlocker demo [DIR]`` (or ``medlocker pack --demo [DIR]``) runs, on a CPU in a few minutes:

1. synthesise diabetic-retinopathy fundus images with lesion masks;
2. train a small surrogate classifier on them;
3. make an owner and a licensee identity;
4. pack: adversarial logo search, shards, sealed payloads, signed manifest;
5. issue a licence to the licensee;
6. read the dataset back as the licensee (exact originals) and as the public
   (plain webdataset: watermarked images only), and report what each saw.

Every number it prints is measured on synthetic data.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["DemoConfig", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    n: int = 120
    size: int = 128
    train_n: int = 400
    epochs: int = 10
    batch_size: int = 16
    lr: float = 3e-3
    arch: str = "smallcnn"
    seed: int = 0
    budget: int = 40


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(root: Path, config: DemoConfig = DemoConfig()) -> int:
    """Run the demo into ``root``; returns a process exit code (0 = every check held)."""
    import webdataset as wds

    from .crypto import Identity, issue_license
    from .data import open_source, write_synthetic_dataset
    from .dataset import LicensedDataset
    from .models import evaluate_accuracy, load_checkpoint, save_checkpoint, train_classifier
    from .owner import OwnerSecrets
    from .pack import PackConfig, pack
    from .shards import read_manifest
    from .watermark import SearchConfig, default_logo

    t_start = time.perf_counter()
    root = Path(root)
    if (root / "owner-secrets" / "run.json").exists():
        raise FileExistsError(f"{root} already holds a demo run: remove it or give the demo another folder")
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)  # only for third-party code that reads the global RNG

    _say(f"[1/6] synthesising {config.n} + {config.train_n} fundus images ({config.size}px, synthetic DR grades 0-4)")
    src = write_synthetic_dataset(root / "source", n=config.n, size=config.size, seed=config.seed, progress=False)
    train_src = write_synthetic_dataset(
        root / "train", n=config.train_n, size=config.size, seed=config.seed + 1, progress=False
    )

    ckpt = root / "surrogate.pt"
    _say(f"[2/6] training the surrogate ({config.arch}, {config.epochs} epochs on CPU/GPU)")
    if not ckpt.exists():
        model, history = train_classifier(
            open_source(train_src), arch=config.arch, epochs=config.epochs, input_size=config.size,
            batch_size=config.batch_size, lr=config.lr, seed=config.seed, progress=False,
        )
        save_checkpoint(model, ckpt)
    surrogate = load_checkpoint(ckpt)

    _say("[3/6] creating identities: owner (signs, licenses) and alice (licensee)")
    owner, alice = Identity.generate(name="owner"), Identity.generate(name="alice")
    keys = root / "keys"
    keys.mkdir(exist_ok=True)
    owner.save(keys / "owner")
    alice.save(keys / "alice")

    dest, secrets = root / "dataset", root / "owner-secrets"
    _say(f"[4/6] packing: lesion-safe adversarial logo search -> shards in {dest}")
    source = open_source(src)
    summary = pack(
        source, str(dest), owner=owner, secrets=secrets, surrogates=[surrogate], logo=default_logo(),
        config=PackConfig(
            search=SearchConfig(optimizer="gradient", budget=config.budget, min_logo_scale=0.01), shard_size=64
        ),
    )
    s = summary.to_dict()

    _say("[5/6] issuing a licence to alice (expires in 30 days)")
    manifest = read_manifest(str(dest), owner.public)
    run = OwnerSecrets.load(secrets, owner)
    lic = issue_license(
        owner, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest, licensee=alice.public,
        content_key=run.content_key, expires=datetime.now(timezone.utc) + timedelta(days=30),
    )
    (root / "alice.license").write_bytes(lic)

    _say("[6/6] reading back: as alice through LicensedDataset, and as the public through plain webdataset")
    originals = {r.key: np.asarray(Image.open(r.path).convert("RGB")) for r in source.records}
    licensed = LicensedDataset(str(dest), license=root / "alice.license", identity=alice, owner=owner.public)
    exact = sum(np.array_equal(np.asarray(x["image"]), originals[x["__key__"]]) for x in licensed)
    published = manifest.num_samples
    public, changed_frac, wm_images = 0, [], {}
    urls = [str(dest / sh.name) for sh in manifest.shards]
    for x in wds.WebDataset(urls, shardshuffle=False).decode("pil", only=["png"]):  # images only, never pickle
        img = np.asarray(x["png"].convert("RGB"))
        public += 1
        changed_frac.append(float((img != originals[x["__key__"]]).any(-1).mean()))
        wm_images[x["__key__"]] = img
    keys_sorted = sorted(wm_images)  # the published samples (rejects, if any, are not among them)
    label_of = {r.key: r.label for r in source.records}
    labels = [label_of[k] for k in keys_sorted]
    acc_clean = evaluate_accuracy(surrogate, np.stack([originals[k] for k in keys_sorted]), labels)
    acc_prot = evaluate_accuracy(surrogate, np.stack([wm_images[k] for k in keys_sorted]), labels)
    figure = _figure(root / "demo.png", keys_sorted[:5], originals, wm_images)

    report = {
        "synthetic_data": True,
        "images": len(originals),
        "published": published,
        "rejected": len(s["rejects"]),
        "surrogate": config.arch,
        "surrogate_clean_accuracy": acc_clean,
        "surrogate_accuracy_on_public_images": acc_prot,
        "attack_success_rate": s["attack_success_rate"],
        "median_queries": s["median_queries"],
        "licensee_exact_originals": exact,
        "public_images_seen": public,
        "public_images_equal_to_original": int(sum(f == 0 for f in changed_frac)),
        "mean_fraction_of_pixels_changed": float(np.mean(changed_frac)),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    (root / "demo.json").write_text(json.dumps(report, indent=2))
    _say("")
    _say("MedLocker demo (synthetic data)")
    _say(f"  surrogate accuracy        clean {acc_clean:.1%}  ->  on published images {acc_prot:.1%}")
    _say(f"  queries per image         median {s['median_queries']:.0f}")
    if s["rejects"]:
        _say(f"  rejected                  {len(s['rejects'])} image(s) with no lesion-free room for the logo")
    _say(f"  licensee (alice) saw      {exact}/{published} published images bit-exact to the originals")
    _say(f"  public webdataset saw     {public} watermarked images "
         f"({report['public_images_equal_to_original']} identical to an original; "
         f"{report['mean_fraction_of_pixels_changed']:.1%} of pixels changed on average, inside the logo box only)")
    _say(f"  files                     dataset {dest}, licence {root / 'alice.license'}, keys {keys}")
    _say(f"  figure                    {figure}  (original | published | restored)")
    _say(f"  report                    {root / 'demo.json'}  ({report['seconds']} s)")
    ok = exact == published and public == published and report["public_images_equal_to_original"] == 0
    return 0 if ok else 1


def _figure(path: Path, keys: list[str], originals: dict, published: dict) -> Path:
    """A plain PIL contact sheet: original | published | restored (= original) per row."""
    h, w = originals[keys[0]].shape[:2]
    sheet = Image.new("RGB", (3 * w + 8, len(keys) * (h + 4)), "white")
    for r, k in enumerate(keys):
        for c, img in enumerate((originals[k], published[k], originals[k])):
            sheet.paste(Image.fromarray(img), (c * (w + 4), r * (h + 4)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path
