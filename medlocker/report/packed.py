"""Evaluate a packed (published) dataset: shards + owner secrets + models -> report.

This is the owner's audit of what was actually published, as opposed to
:mod:`medlocker.report.pipeline`, which protects images in memory:

* **protected images** come from the public shards, read the way anyone would
  read them: the manifest is verified against the owner's public key first,
  then each shard is streamed by :func:`medlocker.shards.reader.iter_samples`
  (strict USTAR, no pickle or other object decoders; PNG members decoded by
  Pillow), each member checked against the signed index and the shard's size and
  SHA-256 against the signed manifest;
* **placements, labels, query counts** come from the owner's secrets folder
  (``params.jsonl``; its labels must agree with the public ``.cls`` members);
* **restored images** come from the real licensed path: the owner issues
  itself a short licence in memory and reads the dataset with
  :class:`~medlocker.dataset.LicensedDataset`, so restoration is *measured*;
* **originals**: the source images (``source=``, resized as the packer did)
  when given -- restoration is then compared pixel for pixel with them --
  otherwise the restored images, which the licensed reader has checked
  against the per-sample digests the owner signed;
* **lesion boxes**: from the source's mask files when ``source=`` is given,
  else Grad-CAM of the first surrogate on the restored originals (what the
  packer itself does for a source without masks); the report says which;
* **white-box vs black-box**: a model is a surrogate if its architecture is in
  the run's ``settings["surrogates"]`` (``run.json``), unless the caller names
  the surrogates explicitly.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from medlocker.crypto import Identity, issue_license
from medlocker.errors import IntegrityError
from medlocker.report.evaluate import EvalOptions, evaluate
from medlocker.shards import layout
from medlocker.shards.manifest import Manifest, read_manifest
from medlocker.shards.payload import sha256_digest
from medlocker.shards.reader import iter_samples

__all__ = ["PackedData", "load_packed", "evaluate_packed", "model_names", "surrogates_from_settings"]

log = logging.getLogger(__name__)

_LICENSE_LIFETIME = timedelta(hours=1)


@dataclass
class PackedData:
    """Everything :func:`~medlocker.report.evaluate.evaluate` needs, read from a packed dataset.

    Arrays are in manifest (shard, member) order; ``keys[i]`` names sample ``i``.
    """

    keys: list[str]
    originals: np.ndarray
    protected: np.ndarray
    restored: np.ndarray
    labels: np.ndarray
    lesion_boxes: list[list[tuple[int, int, int, int]]]
    placements: list[Any]
    queries: list[int]
    logo: np.ndarray
    manifest: Manifest
    settings: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)


def read_public(
    dest: str,
    manifest: Manifest,
    *,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, tuple[np.ndarray, int]]:
    """``key -> (watermarked uint8 [H, W, 3], label)`` from the public shards.

    Read with :func:`~medlocker.shards.reader.iter_samples`: every member is
    checked against the signed index and each shard against the size and
    SHA-256 of the (already verified) manifest; only the ``.png`` is decoded,
    the label is the signed one.

    Raises:
        IntegrityError: a shard is missing, differs from the manifest, or a
            sample lacks its image or label.
    """
    out: dict[str, tuple[np.ndarray, int]] = {}
    for sample in iter_samples(dest, manifest, storage_options=storage_options):
        key = sample["__key__"]
        if key in out:
            raise IntegrityError(f"{sample['__url__']}: sample {key!r} appears in two shards")
        with Image.open(io.BytesIO(sample[layout.EXT_IMAGE])) as im:
            if im.format != "PNG":
                raise IntegrityError(f"{sample['__url__']}: sample {key!r}: image is not a PNG")
            out[key] = (np.asarray(im.convert("RGB")).copy(), sample["__entry__"].label)
    return out


def read_restored(
    dest: str,
    *,
    owner: Identity,
    content_key: bytes,
    manifest: Manifest,
    storage_options: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """``key -> restored original`` through the licensed path.

    The owner issues itself a licence valid for an hour (kept in memory, never
    written) and reads with :class:`~medlocker.dataset.LicensedDataset`, which
    checks every restored image against the owner-signed digest of the original.
    """
    from medlocker.dataset import LicensedDataset

    now = datetime.now(timezone.utc)
    lic = issue_license(
        owner, dataset_id=manifest.dataset_id, manifest_digest=manifest.digest, licensee=owner.public,
        content_key=content_key, expires=now + _LICENSE_LIFETIME,
    )
    ds = LicensedDataset(dest, license=lic, identity=owner, owner=owner.public, storage_options=storage_options)
    return {s["__key__"]: np.asarray(s["image"].convert("RGB")).copy() for s in ds}


def surrogates_from_settings(
    models: Mapping[str, nn.Module], settings: Mapping[str, Any], names: Sequence[str] | None = None
) -> set[str]:
    """The names of the models that were surrogates in the packing run.

    ``names`` (model names) wins when given. Otherwise a model is a surrogate if
    its architecture is listed in ``settings["surrogates"]``; if several loaded
    models share such an architecture the match is ambiguous and a warning
    says to pass the names explicitly.
    """
    if names:
        unknown = sorted(set(names) - set(models))
        if unknown:
            raise ValueError(f"surrogate names {unknown} are not among the models {sorted(models)}")
        return set(names)
    archs = list(settings.get("surrogates") or [])
    chosen = {m for m, clf in models.items() if str(getattr(clf, "arch", m)) in archs}
    for a in set(archs):
        same = [m for m, clf in models.items() if str(getattr(clf, "arch", m)) == a]
        if len(same) > 1:
            log.warning("several models have the surrogate architecture %s (%s): all are counted as white-box; "
                        "pass --surrogate-names to say which one was in the search", a, ", ".join(same))
    missing = [a for a in archs if not any(str(getattr(clf, "arch", "")) == a for clf in models.values())]
    if missing:
        log.warning("the run's surrogate architecture(s) %s are not among the models given", ", ".join(missing))
    return chosen


def model_names(paths: Sequence[str | os.PathLike[str]], archs: Sequence[str]) -> list[str]:
    """A report name per checkpoint: its architecture if unique, else the file stem."""
    names = []
    for p, a in zip(paths, archs):
        name = a if archs.count(a) == 1 else Path(p).stem
        while name in names:
            name += "'"
        names.append(name)
    return names


def _source_images(
    source: Any, keys: Sequence[str], resize: int | None
) -> tuple[dict[str, np.ndarray], dict[str, list[tuple[int, int, int, int]] | None]]:
    """Source pixels and mask boxes per key, loaded exactly as the packer loads them."""
    from medlocker.pack import _load  # the packer's own loader: same resize, same mask boxes

    by_key = {r.key: r for r in source.records}
    missing = [k for k in keys if k not in by_key]
    if missing:
        raise ValueError(f"the source lacks {len(missing)} packed sample(s), e.g. {missing[:3]}: wrong --source?")
    images, boxes = {}, {}
    for k in keys:
        img, b = _load(by_key[k], resize, source.masks is not None)
        images[k] = img
        boxes[k] = None if b is None else [tuple(int(v) for v in box) for box in b]
    return images, boxes


def _gradcam(
    clf: nn.Module, images: np.ndarray, labels: np.ndarray, device: torch.device, batch: int = 16
) -> list[list[tuple[int, int, int, int]]]:
    from medlocker.watermark import gradcam_boxes

    clf = clf.to(device).eval()
    out: list[list[tuple[int, int, int, int]]] = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float().div(255).to(device)
        y = torch.from_numpy(labels[i : i + batch]).to(device)
        out += [[tuple(int(v) for v in b) for b in boxes] for boxes in gradcam_boxes(clf, x, y)]
    return out


def load_packed(
    dest: str,
    secrets: str | os.PathLike[str],
    owner: Identity,
    *,
    source: Any = None,
    gradcam_model: nn.Module | None = None,
    storage_options: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> PackedData:
    """Read a packed dataset, its owner secrets and (optionally) its source.

    Args:
        dest: the published dataset (folder or fsspec URL).
        secrets: the packing run's owner-secrets folder.
        owner: the owner's private identity (opens the secrets, signs the licence).
        source: the :class:`~medlocker.data.Source` that was packed (optional):
            originals and lesion boxes from it.
        gradcam_model: the model whose Grad-CAM gives lesion boxes where the
            source has no masks (or no source is given).
        storage_options: fsspec options for ``dest``.
        device: where Grad-CAM runs.

    Raises:
        SignatureError / FormatError / IntegrityError / LicenseError: a bad
            manifest, shard, secrets folder or licence (nothing is evaluated).
        ValueError: the secrets belong to another dataset, keys disagree, or
            lesion boxes are needed but no model was given.
    """
    from medlocker.owner import OwnerSecrets
    from medlocker.watermark import Placement

    dest = os.fspath(dest)
    manifest = read_manifest(dest, owner.public, storage_options=storage_options)  # verify before anything else
    run = OwnerSecrets.load(secrets, owner)
    if run.dataset_id != manifest.dataset_id:
        raise ValueError(f"{secrets} is the secrets folder of {run.dataset_id}, not of {manifest.dataset_id}")
    logo_sha = sha256_digest(Path(run.logo_path).read_bytes())
    if logo_sha != manifest.logo_sha256:
        raise IntegrityError(f"{run.logo_path} is not the logo the manifest signs ({manifest.logo_sha256})")
    params = run.params()
    settings = dict(run.info.get("settings") or {})

    public = read_public(dest, manifest, storage_options=storage_options)
    restored_by_key = read_restored(dest, owner=owner, content_key=run.content_key, manifest=manifest,
                                    storage_options=storage_options)
    keys = list(public)
    if set(keys) != set(params) or set(keys) != set(restored_by_key):
        raise ValueError(f"keys disagree: {len(keys)} public samples, {len(params)} parameter records, "
                         f"{len(restored_by_key)} restored samples")
    bad = [k for k in keys if public[k][1] != params[k].label]
    if bad:
        raise IntegrityError(f"public labels differ from the owner's parameter list for {bad[:3]}")

    protected = np.stack([public[k][0] for k in keys])
    restored = np.stack([restored_by_key[k] for k in keys])
    labels = np.asarray([public[k][1] for k in keys], dtype=np.int64)
    provenance: dict[str, str] = {}
    mask_boxes: dict[str, list[tuple[int, int, int, int]] | None] = {k: None for k in keys}
    if source is not None:
        src_images, mask_boxes = _source_images(source, keys, settings.get("resize"))
        originals = np.stack([src_images[k] for k in keys])
        provenance["originals"] = f"source images ({source.root}), loaded as the packer loads them"
        provenance["restoration"] = "measured: licensed restoration compared pixel for pixel with the source"
    else:
        originals = restored
        provenance["originals"] = "licensed restoration (no --source)"
        provenance["restoration"] = ("measured: each restored image checked by the licensed reader against the "
                                     "owner-signed digest of its original (no source to compare with)")
    need_cam = [i for i, k in enumerate(keys) if mask_boxes[k] is None]
    cam: dict[int, list[tuple[int, int, int, int]]] = {}
    if need_cam:
        if gradcam_model is None:
            raise ValueError("lesion boxes are needed (no source masks) but no model was given for Grad-CAM")
        idx = np.asarray(need_cam)
        cam = dict(zip(need_cam, _gradcam(gradcam_model, originals[idx], labels[idx], torch.device(device))))
    lesion_boxes = [mask_boxes[k] if mask_boxes[k] is not None else cam[i] for i, k in enumerate(keys)]
    arch = getattr(gradcam_model, "arch", "the first surrogate")
    if not need_cam:
        provenance["lesion_boxes"] = "source lesion masks (every lesion pixel boxed)"
    elif len(need_cam) == len(keys):
        provenance["lesion_boxes"] = (f"Grad-CAM of {arch} on the originals (threshold 0.5), not ground truth: "
                                      "pass --source for mask-based lesion boxes")
    else:
        provenance["lesion_boxes"] = (f"source lesion masks; Grad-CAM of {arch} for the {len(need_cam)} "
                                      "image(s) without masks")
    placements = [None if params[k].placement is None else Placement.from_dict(params[k].placement) for k in keys]
    return PackedData(
        keys=keys, originals=originals, protected=protected, restored=restored, labels=labels,
        lesion_boxes=lesion_boxes, placements=placements, queries=[int(params[k].queries) for k in keys],
        logo=run.load_logo(), manifest=manifest, settings=settings, provenance=provenance,
    )


def evaluate_packed(
    dest: str,
    secrets: str | os.PathLike[str],
    owner: Identity,
    models: Mapping[str, nn.Module],
    *,
    source: Any = None,
    surrogate_names: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
    synthetic: bool | None = None,
    device: str | torch.device = "cpu",
    options: EvalOptions | None = None,
) -> tuple[dict[str, Any], dict[str, bytes], PackedData]:
    """Read a packed dataset (:func:`load_packed`) and :func:`evaluate` it against ``models``.

    ``synthetic`` defaults to whether every sample key is a synthetic-generator
    id (``synth_NNNNNN``, :func:`medlocker.data.synth.synthetic_id`); pass it
    explicitly when that guess is wrong.

    Returns:
        ``(report, figures, data)``; write with :func:`medlocker.report.write_report`.
    """
    if not models:
        raise ValueError("evaluate_packed needs at least one model")
    from medlocker.owner import OwnerSecrets

    run = OwnerSecrets.load(secrets, owner)
    settings = dict(run.info.get("settings") or {})
    surrogates = surrogates_from_settings(models, settings, surrogate_names)
    first = next((m for m in models if m in surrogates), None)
    t = time.perf_counter()
    data = load_packed(dest, secrets, owner, source=source, storage_options=storage_options, device=device,
                       gradcam_model=models[first] if first is not None else next(iter(models.values())))
    read_s = time.perf_counter() - t
    if synthetic is None:
        synthetic = all(re.fullmatch(r"synth_\d{6,}", k) for k in data.keys)
    search = settings.get("search") or (settings.get("protection") or {}).get("placement") or {}
    base = options or EvalOptions()
    meta = {
        **dict(base.meta),
        "path": "packed dataset",
        "dataset": dest,
        "dataset_id": data.manifest.dataset_id,
        "manifest_digest": data.manifest.digest,
        "shards": len(data.manifest.shards),
        "surrogates": sorted(surrogates),
        "surrogate_archs_in_run": list(settings.get("surrogates") or []),
        "search": {k: search.get(k) for k in ("optimizer", "budget", "logo_scale", "opacity", "eot", "lesion_margin")
                   if k in search},
        "provenance": dict(data.provenance),
        "read_seconds": round(read_s, 3),
    }
    if first is None:
        log.warning("no model matches the run's surrogates %s: every model is reported as black-box",
                    settings.get("surrogates"))
    title = base.title if base.title != EvalOptions().title else f"MedLocker evaluation -- {data.manifest.dataset_id}"
    opts = EvalOptions(transforms=base.transforms, attacks=base.attacks, batch_size=base.batch_size,
                       grid_per_grade=base.grid_per_grade, title=title, meta=meta)
    report, figures = evaluate(
        originals=data.originals, protected=data.protected, labels=data.labels, lesion_boxes=data.lesion_boxes,
        placements=data.placements, queries=data.queries, models=models, surrogates=surrogates, logo=data.logo,
        synthetic=synthetic, restored=data.restored, device=device, options=opts,
    )
    return report, figures, data
