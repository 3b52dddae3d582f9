"""Training and caching what a report run is measured on.

:func:`evaluation_images` synthesizes the images a run protects and evaluates;
:func:`trained_models` trains one classifier per architecture of the run on the
synthetic training set; :func:`attacker_models` trains the attacker's copy of each
held-out architecture on the training images preprocessed by each preprocessing
attack of the suite; :func:`trained_attacker` trains the attacker's learned remover on
clean training images with the public logo pasted on them. Everything is cached in
the run's output folder (``train-data-*``, ``eval-data-*.npz``, ``models/``), so a
second run only repeats the search and the evaluation
(:func:`medlocker.report.pipeline.run_from_sources`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from medlocker.data import (
    generate_fundus,
    load_image,
    open_source,
    write_synthetic_dataset,
)
from medlocker.models import (
    load_checkpoint,
    recalibrate_batchnorm,
    save_checkpoint,
    train_classifier,
)
from medlocker.report.attacks import Attacker
from medlocker.report.attacks.learned import Remover, remover_psnr, train_remover
from medlocker.report.attacks.preprocess import PREPROCESSORS
from medlocker.report.presets import RunConfig
from medlocker.watermark import boxes_from_masks

__all__ = ["attacker_models", "evaluation_images", "trained_attacker", "trained_models"]


def _train_dir(config: RunConfig, out: Path) -> Path:
    """The run's synthetic training set (also the source of the attacker's preprocessed copies)."""
    return out / f"train-data-seed{config.seed}-n{config.n_train}-{config.size}px"


def evaluation_images(
    config: RunConfig, out: Path | None = None
) -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, int, int]]]]:
    """The evaluation images (indices after the training ones), cached in ``out`` as ``.npz``."""
    first, last = config.n_train, config.n_train + config.n_images  # disjoint from the training indices
    cache = None if out is None else out / f"eval-data-seed{config.seed}-{first}-{last}-{config.size}px.npz"
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            flat, counts = z["boxes"], z["box_counts"]
            offsets = np.concatenate([[0], np.cumsum(counts)])
            boxes = [[tuple(int(v) for v in b) for b in flat[offsets[i]:offsets[i + 1]]] for i in range(len(counts))]
            return z["images"], z["labels"], boxes
    images, labels, boxes = [], [], []
    for i in range(first, last):
        s = generate_fundus(config.seed, i, config.size)
        images.append(s.image)
        labels.append(s.label)
        # min_area=1 as in the packer: every lesion pixel is inside a box the logo must avoid
        boxes.append([tuple(int(v) for v in b) for b in boxes_from_masks(list(s.masks.values()), min_area=1)])
    result = np.stack(images), np.asarray(labels, dtype=np.int64), boxes
    if cache is not None:
        flat = np.asarray([b for bs in boxes for b in bs], dtype=np.int64).reshape(-1, 4)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, images=result[0], labels=result[1], boxes=flat,
                 box_counts=np.asarray([len(b) for b in boxes], dtype=np.int64))
        tmp.replace(cache)
    return result


def trained_models(
    config: RunConfig, out: Path, device: torch.device, progress: bool, stage: Callable[[str], None]
) -> dict[str, nn.Module]:
    """One classifier per architecture of the run, trained on the synthetic training set (cached in ``out``)."""
    data_dir = _train_dir(config, out)
    models: dict[str, nn.Module] = {}
    source = None
    input_size = config.model_size or config.size
    tag = f"{config.size}px" if input_size == config.size else f"{config.size}px-in{input_size}"
    for arch in config.archs:
        ckpt = out / "models" / f"{arch}-{tag}-{config.epochs}ep-n{config.n_train}-seed{config.seed}.pt"
        if ckpt.exists():
            stage(f"loading cached {arch} ({ckpt.name})")
            models[arch] = load_checkpoint(ckpt, map_location=device)
            continue
        if source is None:
            if not (data_dir / "labels.csv").exists():  # written last: marks a complete dataset
                stage(f"synthesizing {config.n_train} training images")
                write_synthetic_dataset(data_dir, n=config.n_train, size=config.size, seed=config.seed,
                                        progress=progress)
            source = open_source(data_dir)
        stage(f"training {arch} for {config.epochs} epochs at {input_size} px input")
        clf, history = train_classifier(source, arch=arch, epochs=config.epochs, input_size=input_size,
                                        seed=config.seed, device=device, progress=progress)
        meta = {"val_accuracy": history["val_accuracy"], "epoch_seconds": history["epoch_seconds"]}
        recal = recalibrate_batchnorm(clf, source, val_keys=history["val_keys"], input_size=input_size,
                                      device=device)
        if recal is not None:
            stage(f"{arch}: BatchNorm statistics recalibrated, val accuracy {history['val_accuracy'][-1]:.3f} -> "
                  f"{recal:.3f}")
            meta["val_accuracy_bn_recalibrated"] = recal
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(clf, ckpt, meta=meta)
        models[arch] = clf
    return models


def _held_out_archs(config: RunConfig) -> list[str]:
    """Architectures never used as a surrogate by any configuration of the run."""
    return [a for a in config.archs if a not in config.surrogates]


def attacker_models(
    config: RunConfig, out: Path, device: torch.device, progress: bool, stage: Callable[[str], None]
) -> dict[str, dict[str, nn.Module]]:
    """Per preprocessing attack of the suite, the attacker's copy of each held-out architecture.

    Each copy is trained (same recipe and seed as the plain model) on the run's
    clean training images preprocessed by that attack, written once as their
    own source folder, and cached in ``out/models``.
    """
    pre = [a for a in config.suite if a in PREPROCESSORS]
    held = [a for a in _held_out_archs(config) if config.attacker_archs is None or a in config.attacker_archs]
    if not pre or not held:
        return {}
    plain_dir = _train_dir(config, out)
    input_size = config.model_size or config.size
    epochs = config.attacker_epochs or config.epochs
    result: dict[str, dict[str, nn.Module]] = {}
    for p in pre:
        data_dir = plain_dir.with_name(plain_dir.name + f"-{p}")
        result[p] = {}
        for arch in held:
            ckpt = out / "models" / f"{arch}-{p}-{config.size}px-in{input_size}-{epochs}ep-n{config.n_train}-seed{config.seed}.pt"
            if ckpt.exists():
                stage(f"loading cached attacker model {arch} on {p} images ({ckpt.name})")
                result[p][arch] = load_checkpoint(ckpt, map_location=device)
                continue
            if not (data_dir / "labels.csv").exists():
                stage(f"writing the training images preprocessed by {p}")
                plain = open_source(plain_dir)
                (data_dir / "images").mkdir(parents=True, exist_ok=True)
                for r in plain.records:
                    Image.fromarray(PREPROCESSORS[p](load_image(r.path))).save(data_dir / "images" / Path(r.path).name)
                (data_dir / "labels.csv").write_text((plain_dir / "labels.csv").read_text())  # last: marks it complete
            stage(f"training the attacker's {arch} on {p}-preprocessed images ({epochs} epochs)")
            clf, history = train_classifier(open_source(data_dir), arch=arch, epochs=epochs, input_size=input_size,
                                            seed=config.seed, device=device, progress=progress)
            meta = {"val_accuracy": history["val_accuracy"], "preprocessing": p}
            recal = recalibrate_batchnorm(clf, open_source(data_dir), val_keys=history["val_keys"],
                                          input_size=input_size, device=device)
            if recal is not None:
                meta["val_accuracy_bn_recalibrated"] = recal
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(clf, ckpt, meta=meta)
            result[p][arch] = clf
    return result


def trained_attacker(config: RunConfig, out: Path, logo: np.ndarray, device: torch.device,
                     stage: Callable[[str], None]) -> Attacker:
    """The attacker's public logo and learned remover (trained on clean training images, cached)."""
    if "learned_remover" not in config.suite:
        return Attacker(logo=logo)
    rc = config.remover
    n_fit = max(1, min(config.remover_images, config.n_train - 16))
    ckpt = out / "models" / (f"remover-{config.size}px-w{rc.width}-c{rc.crop}-{rc.steps}st-b{rc.batch_size}-"
                             f"n{n_fit}-seed{rc.seed}-{config.seed}.pt")
    # the attacker's own clean images: training indices, never evaluated; the last 16 check the remover
    clean = np.stack([generate_fundus(config.seed, i, config.size).image for i in range(n_fit)])
    check = [generate_fundus(config.seed, i, config.size).image for i in range(n_fit, min(n_fit + 16, config.n_train))]
    t = time.perf_counter()
    if ckpt.exists():
        stage(f"loading the cached learned remover ({ckpt.name})")
        model = Remover(rc.width)
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))
        model.eval()
        losses: list[float] = []
    else:
        stage(f"training the attacker's learned remover ({rc.steps} steps on {n_fit} clean images + pasted logos)")
        model, losses = train_remover(clean, logo, config=rc, device=device)
        model = model.cpu()
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), ckpt)
    info = {"config": asdict(rc), "n_train_images": n_fit, "train_seconds": time.perf_counter() - t,
            "loss_first": float(np.mean(losses[:10])) if losses else None,
            "loss_last": float(np.mean(losses[-10:])) if losses else None,
            "held_out_pasted": remover_psnr(model, check, logo, seed=rc.seed + 1) if check else None}
    return Attacker(logo=logo, remover=model, remover_info=info)
